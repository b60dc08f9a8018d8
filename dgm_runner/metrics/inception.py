"""Inception-v3 FID (opt-in, ``sample_metrics.inception_fid``): the FID of the literature, for
colour data (CIFAR-10 and the like), beside the classifier-feature FID of
:mod:`dgm_runner.metrics.fid`.

The network, its weights and its resize are torch-fidelity's, reached through torchmetrics'
``FrechetInceptionDistance(feature=2048, antialias=False, feature_extractor_weights_path=...)``:
the TensorFlow Inception of Heusel et al.'s TTUR code (``2015-12-05``), converted to PyTorch
(:data:`WEIGHTS`; the same file pytorch-fid publishes as ``pt_inception-2015-12-05-6726825d.pth``),
2048-d pool3 features, and torch-fidelity's TensorFlow-1.x-compatible bilinear resize of every
image to 299x299 (``antialias=False``; torchmetrics' default ``antialias=True`` is a different
resize). Images go in as uint8: samples and test images in [0, 1] are rounded to
``round(255 x)`` (the levels a PNG of them holds, as :func:`torchvision.utils.save_image`
writes them; the test images' levels ``k / 255`` come back exactly; torchmetrics'
``normalize=True`` truncates instead, half a level down on average for a model's continuous
samples), grey images are repeated to 3 channels. The Frechet distance is
:func:`dgm_runner.metrics.fid.frechet_distance` (torchmetrics' formula, float64).

The weights (95.6 MB) are fetched on first use into ``<cache>/inception/``
(:func:`dgm_runner.data.cache.cache_dir`) and checked against their sha256 (pinned; its first 8
hex digits are the ``-6726825d`` of the file name, torch.hub's convention). Without internet
the error line names the file, its URL and where to put it.

The reference is the test split (grey levels for binarized data: ``DataSplits.grey_test``), so
with ``n_samples=test`` a CIFAR-10 run compares 10 000 samples with the 10 000 test images
(papers more often use 50 000 samples against the 50 000 training images: the numbers are
close but not the same protocol). On a CPU the network takes about 0.4 s per image and thread.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import torch
from torch import nn
from torch.hub import download_url_to_file

from dgm_runner.config import PositiveInt
from dgm_runner.data.base import DataSplits
from dgm_runner.data.cache import cache_dir
from dgm_runner.io.atomic import fsync_dir
from dgm_runner.io.checkpoint import CheckpointError, file_sha256
from dgm_runner.metrics.fid import (
    PROCESS_LOCAL,
    describe_sample_fid,
    fid_sample_count,
    frechet_distance,
)
from dgm_runner.progress import Bar
from dgm_runner.samplers.base import Sampler, draw_samples

log = logging.getLogger("dgm_runner")


@dataclass(frozen=True)
class InceptionWeights:
    """A weights file of the FID Inception: its name in the cache, where it is published and
    the sha256 of its bytes (the pin; its first 8 hex digits end the file name)."""

    file: str
    url: str
    sha256: str


#: torch-fidelity's Inception-v3 (its ``feature_extractor_inceptionv3.URL_INCEPTION_V3``),
#: byte-identical to pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``.
WEIGHTS = InceptionWeights(
    file="weights-inception-2015-12-05-6726825d.pth",
    url=(
        "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
        "weights-inception-2015-12-05-6726825d.pth"
    ),
    sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
)

#: The resize, as recorded: torch-fidelity's ``interpolate_bilinear_2d_like_tensorflow1x``.
RESIZER = "torch-fidelity tf1.x bilinear to 299x299"

#: The feature layers torchmetrics offers (2048: the standard FID; the others for quick tests).
FeatureDim = Literal[64, 192, 768, 2048]


class InceptionWeightsMissing(CheckpointError):
    """The Inception weights are not in the cache and could not be downloaded (one line)."""


def weights_path(weights: InceptionWeights | None = None) -> Path:
    """``<cache>/inception/<file>`` of ``weights`` (default :data:`WEIGHTS`): where they are
    looked for and downloaded to."""
    return cache_dir() / "inception" / (weights or WEIGHTS).file


_VERIFIED: dict[Path, tuple[int, int]] = {}  # path -> (size, mtime_ns) whose sha256 matched


def _verify(path: Path, weights: InceptionWeights) -> None:
    """Check ``path``'s sha256 against the pin (once per process and file version).

    Raises:
        CheckpointError: the bytes differ (the message says to delete the file).
    """
    stat = path.stat()
    if _VERIFIED.get(path) == (stat.st_size, stat.st_mtime_ns):
        return
    digest = file_sha256(path)
    if digest != weights.sha256:
        raise CheckpointError(
            f"{path} is not the Inception weights file {weights.file} (sha256 {digest[:12]}... "
            f"!= {weights.sha256[:12]}...): delete it to download it again from {weights.url}"
        )
    _VERIFIED[path] = (stat.st_size, stat.st_mtime_ns)


def _download(weights: InceptionWeights, path: Path) -> None:
    """Download ``weights`` to a temp file beside ``path``, check its sha256, rename it onto
    ``path``; on any failure the temp file is removed and ``path`` untouched.

    Raises:
        InceptionWeightsMissing: no connection, an HTTP error, a write error or wrong bytes.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as err:
        raise InceptionWeightsMissing(
            f"cannot write the Inception weights to {path.parent} ({err.strerror or err})"
        ) from None
    try:
        log.info("downloading the FID Inception weights %s -> %s", weights.url, path)
        download_url_to_file(weights.url, tmp, progress=True)
        digest = file_sha256(tmp)
        if digest != weights.sha256:
            raise RuntimeError(f"downloaded bytes have sha256 {digest[:12]}...")
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except (OSError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InceptionWeightsMissing(
            f"the Inception-v3 weights of the FID, {weights.file}, are not in the cache and "
            f"could not be downloaded ({first}): download {weights.url} and put it at {path}"
        ) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch_weights(weights: InceptionWeights | None = None) -> Path:
    """The verified file of ``weights`` (default :data:`WEIGHTS`), downloaded on first use
    (:func:`weights_path`).

    Returns:
        Its path.

    Raises:
        InceptionWeightsMissing: not in the cache and not downloadable (the one line names
            the file, its URL and the path to put it at).
        CheckpointError: the cached file does not match the pinned sha256.
    """
    weights = weights or WEIGHTS
    path = weights_path(weights)
    if not path.is_file():
        _download(weights, path)
    _verify(path, weights)
    return path


_EXTRACTORS: dict[tuple[str, int, str], nn.Module] = {}  # one network per (file, dim, device)


def load_inception(
    device: torch.device | str = "cpu", features: FeatureDim = 2048
) -> tuple[nn.Module, Path]:
    """torchmetrics' FID Inception (torch-fidelity's network with :data:`WEIGHTS`, resize
    without antialiasing), in eval mode on ``device``, built once per process.

    Its call maps ``(B, 3, H, W)`` uint8 images to ``(B, features)`` float32 features.

    Returns:
        ``(network, weights file)``.

    Raises:
        InceptionWeightsMissing, CheckpointError: as :func:`fetch_weights`.
        CheckpointError: torch-fidelity is not installed (the line says what to install).
    """
    path = fetch_weights()
    key = (str(path), int(features), str(device))
    if key not in _EXTRACTORS:
        try:
            from torchmetrics.image.fid import FrechetInceptionDistance

            metric = FrechetInceptionDistance(
                feature=int(features),
                antialias=False,  # torch-fidelity's TF1.x bilinear resize, as the original FID
                feature_extractor_weights_path=str(path),
                **PROCESS_LOCAL,
            )
        except ModuleNotFoundError as err:
            raise CheckpointError(
                f"the Inception FID needs the torch-fidelity package ({err}): "
                "pip install 'torch-fidelity>=0.3'"
            ) from None
        _EXTRACTORS.clear()  # one network (90 MB) at a time
        _EXTRACTORS[key] = metric.inception.to(device).eval()
    return _EXTRACTORS[key], path


def to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` floats in [0, 1] (``C`` 1 or 3) -> ``(B, 3, H, W)`` uint8
    ``round(255 x)`` (clamped first), grey repeated to 3 channels.

    Raises:
        ValueError: ``C`` is neither 1 nor 3.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"the Inception FID needs (B, 1 or 3, H, W) images, got {tuple(images.shape)}"
        )
    out = (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return out.expand(-1, 3, -1, -1) if out.shape[1] == 1 else out


@torch.no_grad()
def inception_features(
    network: nn.Module, images: torch.Tensor, batch_size: int = 100, desc: str | None = None
) -> torch.Tensor:
    """``(N, C, H, W)`` images in [0, 1] -> ``(N, D)`` float32 Inception features on the CPU,
    ``batch_size`` images at a time (:func:`to_uint8_rgb` first), with a progress bar when
    ``desc`` is given."""
    device = next(network.parameters()).device
    parts = []
    with Bar(images.shape[0], desc or "Inception features", "image", show=desc is not None) as bar:
        for start in range(0, images.shape[0], batch_size):
            batch = to_uint8_rgb(images[start : start + batch_size].to(device))
            parts.append(network(batch).float().cpu())
            bar.update(batch.shape[0])
    return torch.cat(parts)


# The test split's features for the last (weights, dim, images) of this process: the jobs of
# a serial sweep score against the same ones (minutes of CPU for 10 000 images).
_REAL: dict[str, Any] = {}


def _real_features(
    network: nn.Module, key: tuple, images: torch.Tensor, batch_size: int
) -> torch.Tensor:
    flat = images.reshape(-1)
    key = (
        *key,
        tuple(images.shape),
        float(flat.sum(dtype=torch.float64)),
        float(
            (flat[::7919] * torch.arange(1, flat[::7919].numel() + 1, device=flat.device)).sum(
                dtype=torch.float64
            )
        ),
    )
    if _REAL.get("key") != key:
        features = inception_features(network, images, batch_size, "Inception features (test)")
        _REAL.clear()
        _REAL.update(key=key, features=features)
    return _REAL["features"]


def inception_fid(
    model: nn.Module,
    sampler: Sampler,
    data: DataSplits,
    seed: int,
    final: bool,
    n_samples: Union[Literal["test"], PositiveInt] = "test",
    batch_size: PositiveInt = 100,
    sample_batch_size: PositiveInt = 1000,
    features: FeatureDim = 2048,
    when: Literal["final", "every_eval"] = "final",
) -> dict[str, float]:
    """Inception-v3 FID of ``n_samples`` model samples against the test split
    (``sample_metrics.inception_fid``; protocol in the module docstring).

    Skipped (returns ``{}``) for non-image data, for models without a sampler, at
    intermediate evaluations unless ``when=every_eval``, and (with a warning) for images
    with neither 1 nor 3 channels. The samples are the classifier-feature FID's (the same
    seed, and the same draws while ``n_samples`` and ``sample_batch_size`` equal
    ``sample_metrics.fid``'s ``n_samples`` and ``batch_size``).

    Args:
        n_samples: ``test`` (the test split's image count) or a number (50000 for the
            usual 50k FID); batch_size: images per Inception call (memory);
        sample_batch_size: samples drawn per sampler call;
        features: the Inception layer (2048, pool3, is the FID; 64/192/768 for tests);
        when: ``final`` or ``every_eval``.

    Returns:
        ``inception_fid`` (squared feature units; NaN, and nothing else, when a sample is
        not finite: the caller refuses it), ``inception_fid_n_samples``,
        ``inception_fid_n_real`` (test images), ``inception_fid_features`` (the layer's
        width). The weights file, its sha256, the resize and the reference are in the
        logged line.

    Raises:
        InceptionWeightsMissing, CheckpointError: as :func:`load_inception`.
    """
    if not (final or when == "every_eval") or not data.is_image or not sampler.draws:
        return {}
    reference = data.grey_test
    if reference.shape[1] not in (1, 3):
        log.warning(
            "Inception FID skipped: it takes grey or RGB images, %s has %d channels",
            data.name,
            reference.shape[1],
        )
        return {}
    n_samples = fid_sample_count(n_samples, data)
    device = data.test_x.device
    network, path = load_inception(device, features)
    real = _real_features(network, (str(path), int(features), str(device)), reference, batch_size)
    samples = draw_samples(
        model, sampler, n_samples, seed, device, sample_batch_size, "Inception FID samples"
    )
    finite = torch.isfinite(samples.reshape(samples.shape[0], -1)).all(dim=1)
    if not bool(finite.all()):
        log.warning(
            "Inception FID not computed: %d of %d samples are not finite",
            int((~finite).sum()),
            n_samples,
        )
        return {"inception_fid": float("nan"), "inception_fid_n_samples": float(n_samples)}
    fake = inception_features(network, samples, batch_size, "Inception features (samples)")
    fid = frechet_distance(real, fake)
    log.info(
        "Inception FID %.3f: %d samples vs %d test images of %s (%s), %d-d features of %s "
        "(sha256 %s), resize: %s, uint8 round(255 x)",
        fid,
        n_samples,
        real.shape[0],
        data.name,
        "grey levels" if reference.shape[1] == 1 else "RGB",
        real.shape[1],
        WEIGHTS.file,
        WEIGHTS.sha256,
        RESIZER,
    )
    return {
        "inception_fid": fid,
        "inception_fid_n_samples": float(n_samples),
        "inception_fid_n_real": float(real.shape[0]),
        "inception_fid_features": float(real.shape[1]),
    }


def check_inception_fid(model_config: dict[str, Any], **args: Any) -> None:
    """Before any work (:func:`dgm_runner.config.validate` calls it): ``n_samples`` of at
    least 2, and the weights in the cache (downloaded now when missing), so a machine
    without them fails before training, not after.

    Raises:
        ValueError: ``n_samples`` below 2.
        InceptionWeightsMissing, CheckpointError: as :func:`fetch_weights`.
    """
    n = args.get("n_samples", "test")
    if n != "test" and int(n) < 2:
        raise ValueError(f"n_samples={n} is too few: the FID covariances need 2 samples")
    fetch_weights()


def describe_inception_fid(
    sampler: Sampler, data: DataSplits, n_samples: int | str = "test", **_: Any
) -> str | None:
    """The final-evaluation plan's entry of :func:`inception_fid` (``None``: it will skip)."""
    return describe_sample_fid("Inception FID", sampler, data, n_samples)


inception_fid.check = check_inception_fid  # type: ignore[attr-defined]
inception_fid.describe = describe_inception_fid  # type: ignore[attr-defined]
