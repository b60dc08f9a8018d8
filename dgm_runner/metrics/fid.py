"""Classifier-feature FID, KID and precision/recall of image samples against the test split.

Features are the penultimate layer of a small CNN trained on the dataset itself
(:mod:`dgm_runner.metrics.features`), not Inception-v3: Inception features are a
poor fit for 28x28 grey digits (advice of the pytorch-fid and TTUR maintainers). The
Frechet distance and the kernel distance come from torchmetrics (its FID keeps
float64 sums and takes the trace of the matrix square root from the eigenvalues of
``Sigma_1 Sigma_2``); precision/recall is ours (Kynkaanniemi et al. 2019, Sec. 3).

Values depend on the feature extractor: they compare models on the same dataset with
the same classifier, never with Inception-FIDs from papers. By default it is the classifier
shipped with the package (pinned by sha256), so the same samples get the same FID
everywhere.

**Reference set** (``reference``): ``grey`` (default) scores every run against the test
images in grey levels, also the runs on binarized data: the samples scored are grey
(decoder means, p(v|h)), the classifier was trained on grey images, and one reference
makes the rows of one dataset comparable. ``data`` scores against the run's own test split
(binarized for binarized runs). The record says which: ``fid_reference_binarized``.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Literal, Union

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from dgm_runner.config import PositiveInt
from dgm_runner.data.base import DataSplits
from dgm_runner.metrics.features import FeatureClassifierMissing, load_feature_classifier
from dgm_runner.progress import Bar
from dgm_runner.samplers.base import Sampler, draw_samples, sample_labels

log = logging.getLogger("dgm_runner")


def _process_local() -> bool:
    """``distributed_available_fn`` of our torchmetrics metrics: never distributed."""
    return False


#: Keywords that keep a torchmetrics metric inside this process. Our sample metrics are
#: computed by process 0 alone while the others wait in a broadcast
#: (:func:`dgm_runner.distributed.on_main`); a metric that synced its states over the
#: process group would wait in a collective the others never enter (issue 25: every
#: default DDP run deadlocked in KID's ``compute``).
PROCESS_LOCAL: dict[str, Any] = {
    "sync_on_compute": False,
    "dist_sync_on_step": False,
    "distributed_available_fn": _process_local,
}


class _Precomputed(nn.Module):
    """Identity "extractor": lets torchmetrics' FID/KID consume features we computed."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between two feature sets: ``||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^{1/2})``
    with unbiased covariances (Heusel et al. 2017, Eq. 6), via torchmetrics in float64.

    Args:
        real: ``(N, D)`` features; fake: ``(M, D)`` features; N, M >= 2.

    Returns:
        The distance, in squared feature units.
    """
    metric = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]), **PROCESS_LOCAL)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kernel_distance(
    real: torch.Tensor,
    fake: torch.Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
    ``(x.y / D + 1)^3``, averaged over ``subsets`` random subsets of ``subset_size``
    (clamped to the smaller set), via torchmetrics.

    Returns:
        ``(mean, standard deviation over subsets)``; the subsets are drawn from a torch
        RNG seeded with ``seed`` (the global RNG is left untouched).
    """
    size = min(subset_size, real.shape[0], fake.shape[0])
    with warnings.catch_warnings():  # "will save all extracted features": that is the point here
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(
            feature=_Precomputed(real.shape[1]),
            subsets=subsets,
            subset_size=size,
            **PROCESS_LOCAL,
        )
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def _knn_radius(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance of each row of ``x`` to its k-th nearest other row, ``(N,)``."""
    out = []
    for start in range(0, x.shape[0], chunk):
        d = torch.cdist(x[start : start + chunk], x)
        out.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself at distance 0
    return torch.cat(out)


def _coverage(
    queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, chunk: int
) -> float:
    """Fraction of ``queries`` inside at least one ball ``B(support_j, radii_j)``."""
    inside = []
    for start in range(0, queries.shape[0], chunk):
        d = torch.cdist(queries[start : start + chunk], support)
        inside.append((d <= radii.unsqueeze(0)).any(dim=1))
    return float(torch.cat(inside).float().mean())


def precision_recall(
    real: torch.Tensor, fake: torch.Tensor, k: int = 3, chunk: int = 1000
) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019, Eq. 1-2): the data
    manifold is the union of balls around each real feature with radius its k-th
    nearest-neighbour distance; precision is the fraction of fake features inside it,
    recall the fraction of real features inside the fake manifold.

    Args:
        real: ``(N, D)``; fake: ``(M, D)`` features; k: neighbourhood size (paper: 3).

    Returns:
        ``(precision, recall)``, fractions in [0, 1].

    Raises:
        ValueError: a set has no more than ``k`` points.
    """
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ValueError(f"precision_recall needs more than k={k} points per set")
    real, fake = real.float(), fake.float()
    precision = _coverage(fake, real, _knn_radius(real, k, chunk), chunk)
    recall = _coverage(real, fake, _knn_radius(fake, k, chunk), chunk)
    return precision, recall


@torch.no_grad()
def extract_features(
    classifier: nn.Module, images: torch.Tensor, batch_size: int = 1000
) -> torch.Tensor:
    """``(N, C, H, W)`` images in [0, 1] -> ``(N, D)`` float32 classifier features on the CPU."""
    device = next(classifier.parameters()).device
    return torch.cat(
        [
            classifier.features(images[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, images.shape[0], batch_size)
        ]
    )


# The test split's features for the last (test images, classifier file) of this process:
# every job of a serial sweep scores against the same ones (3 s per job on CPU otherwise).
_REAL_FEATURES: dict[str, Any] = {}


def real_features(
    classifier: nn.Module, info: dict[str, Any], images: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """:func:`extract_features` of the test split, reused while the images (shape and two
    float64 checksums: each job builds its own tensor) and the classifier file (its sha256,
    ``info["sha256"]``) are unchanged."""
    flat = images.reshape(-1)
    key = (
        info.get("sha256"),
        tuple(images.shape),
        str(images.device),
        float(flat.sum(dtype=torch.float64)),
        float(
            (flat[::7919] * torch.arange(1, flat[::7919].numel() + 1, device=flat.device)).sum(
                dtype=torch.float64
            )
        ),
    )
    if _REAL_FEATURES.get("key") == key:
        return _REAL_FEATURES["features"]
    features = extract_features(classifier, images, batch_size)
    _REAL_FEATURES.clear()
    _REAL_FEATURES.update(key=key, features=features)
    return features


def class_accuracy(classifier: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of samples that the feature classifier assigns to the class they were
    drawn for ("class accuracy" of a class-conditional model; issue 31): ``features``
    ``(N, D)`` from :func:`extract_features` (the classifier's penultimate layer), passed
    through its ``head`` to logits; ``labels`` ``(N,)`` the requested classes
    (:func:`~dgm_runner.samplers.base.sample_labels`). In [0, 1]; the classifier's own test
    accuracy (``fid_classifier_accuracy``) bounds what real images of the class reach."""
    device = next(classifier.parameters()).device
    with torch.no_grad():
        predicted = classifier.head(features.to(device)).argmax(1).cpu()
    return float((predicted == labels.cpu()).double().mean())


def classifier_fid(
    model: nn.Module,
    sampler: Sampler,
    data: DataSplits,
    seed: int,
    final: bool,
    n_samples: Union[Literal["test"], PositiveInt] = "test",
    batch_size: PositiveInt = 1000,
    kid_subsets: PositiveInt = 100,
    kid_subset_size: PositiveInt = 1000,
    pr_k: PositiveInt = 3,
    when: Literal["final", "every_eval"] = "final",
    classifier: str = "shipped",
    reference: Literal["grey", "data"] = "grey",
) -> dict[str, float]:
    """FID, KID and precision/recall of ``n_samples`` model samples against the whole
    test split, in the feature space of the dataset's classifier (``sample_metrics.fid``).

    Skipped (returns ``{}``) for non-image data, for models without a sampler, at
    intermediate evaluations unless ``when=every_eval``, and (with a warning naming the
    command to run) when no classifier exists for the dataset.

    Args:
        n_samples: model samples; ``test`` (the default): as many as the test split has
            images (10 000 for MNIST, the standard protocol; fewer for a run on
            ``dataset.test_subset``, so a small run's FID compares equal numbers of each).
        classifier: ``shipped`` (the pinned classifier of the package) or the path of a
            classifier file (``experiment=classifier_<dataset>`` writes one).
        reference: ``grey`` test images (default) or the run's own test split ``data``
            (see the module docstring).

    Returns:
        ``fid`` (squared feature units; NaN, and nothing else, when a sample is not
        finite: the caller refuses it), ``kid`` and ``kid_std``, ``precision``,
        ``recall``, and what they were computed from: ``fid_n_samples``, ``fid_n_real``
        (test images), ``fid_reference_binarized`` (1.0 when the reference images are
        binarized, 0.0 for grey ones), ``fid_classifier_shipped`` (1.0 for the shipped
        classifier) and ``fid_classifier_accuracy`` (the extractor's test accuracy);
        ``fid_reference_channels`` (3) for colour test images, absent for grey ones; for
        binarized data also the FID of the same samples against the other reference,
        ``fid_vs_binarized`` (reference ``grey``) or ``fid_vs_grey`` (reference ``data``);
        for a class-conditional model (classes cycled, or the sampler's ``labels``),
        ``class_accuracy`` (:func:`class_accuracy`) and the sampler's ``guidance`` weight.

    Raises:
        CheckpointError: the classifier file is modified (shipped: sha256 mismatch),
            unreadable or of another dataset.
    """
    if not (final or when == "every_eval") or not data.is_image or not sampler.draws:
        return {}
    n_samples = fid_sample_count(n_samples, data)
    device = data.test_x.device
    try:
        extractor, info = load_feature_classifier(data.name, device, classifier)
    except FeatureClassifierMissing as err:
        colour = data.test_x.shape[1] == 3  # the standard FID of colour data needs no classifier
        hint = "; or the Inception FID: +sample_metrics@sample_metrics.inception_fid=inception_fid"
        log.warning("FID/KID skipped: %s%s", err, hint if colour else "")
        return {}
    images = data.grey_test if reference == "grey" else data.test_x
    # binarized data without grey levels (Larochelle's files): both references are binary
    has_grey = not data.binarized or data.grey_test_x is not None
    binarized = data.binarized and (reference == "data" or not has_grey)
    real = real_features(extractor, info, images, batch_size)
    samples = draw_samples(model, sampler, n_samples, seed, device, batch_size, "FID samples")
    finite = torch.isfinite(samples.reshape(samples.shape[0], -1)).all(dim=1)
    if not bool(finite.all()):  # a diverged model: NaN features crash LAPACK's eigvals
        log.warning(
            "FID/KID not computed: %d of %d samples are not finite (test/fid is NaN)",
            int((~finite).sum()),
            n_samples,
        )
        return {"fid": float("nan"), "fid_n_samples": float(n_samples)}
    # the scores after sampling take 10 s and more on a CPU (k-NN of 10 000 x 10 000): a step
    stages = 5 if data.binarized and has_grey else 4
    with Bar(stages, "FID/KID/precision-recall of the samples", "stage") as bar:
        fake = extract_features(extractor, samples.float().clamp(0, 1), batch_size)
        bar.update()
        fid = frechet_distance(real, fake)
        bar.update()
        kid, kid_std = kernel_distance(real, fake, kid_subsets, kid_subset_size, seed)
        bar.update()
        precision, recall = precision_recall(real, fake, pr_k)
        bar.update()
        other = None
        if data.binarized and has_grey:  # the same samples against the other reference
            other_images = data.test_x if reference == "grey" else data.grey_test
            other = frechet_distance(extract_features(extractor, other_images, batch_size), fake)
            bar.update()
    out = {
        "fid": fid,
        "kid": kid,
        "kid_std": kid_std,
        "precision": precision,
        "recall": recall,
        "fid_n_samples": float(n_samples),
        "fid_n_real": float(real.shape[0]),
        "fid_reference_binarized": float(binarized),
        "fid_classifier_shipped": float(info["shipped"]),
        "fid_classifier_accuracy": float(info["test_accuracy"]),
    }
    if images.shape[1] > 1:  # colour data: its own test split (grey data: no key, as before)
        out["fid_reference_channels"] = float(images.shape[1])
    if other is not None:
        out[f"fid_vs_{'binarized' if reference == 'grey' else 'grey'}"] = other
    labels = sample_labels(model, sampler, 0, n_samples, fake.device)
    if labels is not None:  # a class-conditional model: are the samples of the asked class?
        out["class_accuracy"] = class_accuracy(extractor, fake, labels)
        out["guidance"] = float(sampler.guidance)
    log.info(
        "FID %.3f, KID %.5f +- %.5f, precision %.3f, recall %.3f: "
        "%d samples vs %d %s test images of %s, "
        "features of the %s %d-d classifier sha256:%s (test accuracy %.4f)",
        out["fid"],
        kid,
        kid_std,
        precision,
        recall,
        n_samples,
        real.shape[0],
        "binarized" if binarized else "colour" if images.shape[1] == 3 else "grey",
        data.name,
        "shipped" if info["shipped"] else info["file"],
        real.shape[1],
        info["sha256"][:12],
        info["test_accuracy"],
    )
    return out


def check_fid(model_config: dict[str, Any], **args: Any) -> None:
    """``sample_metrics.fid``'s values that are valid one by one but not together, checked
    before any work (:func:`dgm_runner.config.validate` calls it): the covariances of the
    Frechet distance need 2 samples, precision/recall more than ``pr_k``.

    Raises:
        ValueError: ``n_samples`` too small for the estimators.
    """
    n, k = args.get("n_samples", "test"), int(args.get("pr_k", 3))
    if n == "test":  # the test split's size: data.py refuses a split of fewer than 2 images
        return
    if int(n) < max(2, k + 1):
        raise ValueError(
            f"n_samples={n} is too few: FID needs 2 samples and precision/recall more than "
            f"pr_k={k} (use n_samples>={max(2, k + 1)}; 10000 is the standard)"
        )


classifier_fid.check = check_fid  # type: ignore[attr-defined]


def fid_sample_count(n_samples: int | str, data: DataSplits) -> int:
    """``n_samples`` of :func:`classifier_fid` as a number: ``test`` is the test split's
    image count (``data.test_x.shape[0]``)."""
    return int(data.test_x.shape[0]) if n_samples == "test" else int(n_samples)


def describe_sample_fid(
    label: str, sampler: Sampler, data: DataSplits, n_samples: int | str
) -> str | None:
    """A final-evaluation plan's entry of a FID of samples, ``"<label> (<n> samples,
    <sampler>)"``; ``None`` (it will skip) for data that are not images or a sampler that
    draws nothing. Shared by the classifier-feature and the Inception FID."""
    if not data.is_image or not sampler.draws:
        return None
    return f"{label} ({fid_sample_count(n_samples, data)} samples, {sampler.describe()})"


def describe_fid(
    sampler: Sampler, data: DataSplits, n_samples: int | str = "test", **_: Any
) -> str | None:
    """The final-evaluation plan's entry of :func:`classifier_fid` (``None``: it will skip)."""
    return describe_sample_fid("FID", sampler, data, n_samples)


classifier_fid.describe = describe_fid  # type: ignore[attr-defined]
