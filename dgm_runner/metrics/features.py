"""The feature classifiers of the classifier-feature metrics (FID, KID, precision/recall).

**Shipped** (the default, ``sample_metrics.fid.classifier=shipped``): the project trained one
:class:`~dgm_runner.models.classifier.FeatureCNN` per dataset once, with the recipe of
``experiment=classifier_mnist`` / ``classifier_fashion`` (seed 2025), and ships its weights
in ``dgm_runner/assets/``. Each file is pinned by the sha256 in :data:`SHIPPED` and loaded
with ``torch.load(weights_only=True)``, so the same samples get the same FID on every machine
and a modified file is refused. ``python scripts/ship_classifiers.py`` makes the files and
prints the pins.

**Retrained** (only when asked for by name, ``sample_metrics.fid.classifier=<file>``):
``dgm-train experiment=classifier_mnist`` still trains the recipe; its ``exports`` hook
(:func:`export_feature_classifier`) stores the weights with the test accuracy under
``<cache>/classifiers/<dataset>.pt`` (``$DGM_CACHE_DIR``, default ``~/.cache/dgm_runner``).

**CIFAR-10** has no shipped classifier: the project's machines have no copy of CIFAR-10 and
no internet, so the recipe (``experiment=classifier_cifar10``, the same network on 3x32x32
images) was never trained on the real data here. Train it where CIFAR-10 is available and
pass its file (:func:`shipped_path`'s message says how), or use the Inception-v3 FID of
:mod:`dgm_runner.metrics.inception`, the standard one for colour data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from dgm_runner.config import UnitInterval
from dgm_runner.data.base import DataSplits
from dgm_runner.data.vision import cache_dir
from dgm_runner.io.checkpoint import (
    CheckpointError,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
)
from dgm_runner.io.run_config import check_config
from dgm_runner.models.classifier import FeatureCNN

log = logging.getLogger("dgm_runner")

#: The experiment that trains the classifier of each dataset (named in error messages).
EXPERIMENTS = {
    "mnist": "classifier_mnist",
    "fashion_mnist": "classifier_fashion",
    "cifar10": "classifier_cifar10",
}

#: Why no classifier is shipped for a dataset that has a recipe (said in the error line).
NOT_SHIPPED_WHY = {
    "cifar10": "none was trained: the project's machines have no copy of CIFAR-10",
}

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@dataclass(frozen=True)
class ShippedClassifier:
    """One shipped feature classifier: its file in ``dgm_runner/assets/``, the sha256 of
    that file (the pin) and its test accuracy on the full test split (10 000 images)."""

    file: str
    sha256: str
    test_accuracy: float


#: The shipped classifiers, by ``DataSplits.name`` (made by scripts/ship_classifiers.py).
SHIPPED: dict[str, ShippedClassifier] = {
    "mnist": ShippedClassifier(
        "feature_cnn_mnist.pt",
        "f31cff96b2e458eb62809fe9a67d660f500ac5abb41cfd07efed8382db503af3",
        0.9903,
    ),
    "fashion_mnist": ShippedClassifier(
        "feature_cnn_fashion_mnist.pt",
        "f8c6979becb80281f356aa89fefce69abcc96c8629965c1990e6e9cfc097a8a7",
        0.9139,
    ),
}


class FeatureClassifierMissing(CheckpointError):
    """No feature classifier has been trained for this dataset yet."""


def classifier_experiment(dataset: str) -> str:
    """The ``dgm-train`` arguments that train a feature classifier of ``dataset``: its own
    experiment, or the MNIST recipe on the user's dataset (no ``classifier_<name>``
    experiment exists for a dataset of one's own)."""
    return EXPERIMENTS.get(dataset, f"classifier_mnist dataset=<the config of {dataset}>")


def classifier_path(dataset: str) -> Path:
    """``<cache>/classifiers/<dataset>.pt`` (``dataset`` as in ``DataSplits.name``)."""
    return cache_dir() / "classifiers" / f"{dataset}.pt"


def export_feature_classifier(
    model: nn.Module,
    data: DataSplits,
    run_dir: Path,
    metrics: dict[str, float],
    overwrite: Literal["better", "always"] = "better",
    min_accuracy: UnitInterval = 0.0,
) -> Path | None:
    """Store a trained classifier (weights, architecture, test accuracy) in the cache.

    Args:
        model: the trained :class:`FeatureCNN`; data: its dataset (the key is ``data.name``);
        run_dir: the run that trained it (recorded); metrics: the final test metrics
            (``test/accuracy`` is stored beside the weights and reported with every FID).
        overwrite: ``better``: replace a stored classifier only if this one's test
            accuracy is at least as high (a quick run on a subset never replaces a good
            one); ``always``: replace it.
        min_accuracy: log a warning when the test accuracy is below this target
            (the seeds ask for 0.99 on MNIST, 0.90 on Fashion-MNIST).

    Returns:
        The path written, or None when a better classifier was kept.

    Raises:
        TypeError: ``model`` is not a FeatureCNN.
    """
    if not isinstance(model, FeatureCNN):
        raise TypeError(f"export_feature_classifier needs a FeatureCNN, got {type(model).__name__}")
    accuracy = float(metrics["test/accuracy"])
    path = classifier_path(data.name)
    if accuracy < min_accuracy:
        log.warning(
            "classifier test accuracy %.4f is below the target %.4f", accuracy, min_accuracy
        )
    if overwrite == "better" and path.is_file():
        try:
            stored = float(load_checkpoint(path)["test_accuracy"])
        except (CheckpointError, KeyError):
            stored = -1.0
        if stored > accuracy:
            log.warning(
                "kept the stored %s classifier (test accuracy %.4f > %.4f): %s",
                data.name,
                stored,
                accuracy,
                path,
            )
            return None
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        path,
        {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "arch": dict(model.arch),
            "image_shape": list(model.image_shape),
            "n_classes": model.n_classes,
            "dataset": data.name,
            "test_accuracy": accuracy,
            "n_test": int(data.test_x.shape[0]),
            "run_dir": str(run_dir),
        },
    )
    log.info(
        "feature classifier for %s (test accuracy %.4f) -> %s; FID uses the shipped one "
        "unless asked for this file: sample_metrics.fid.classifier=%s",
        data.name,
        accuracy,
        path,
        path,
    )
    return path


def shipped_path(dataset: str) -> Path:
    """The shipped classifier file of ``dataset``.

    Raises:
        FeatureClassifierMissing: none is shipped for this dataset (the message says how to
            train one and pass it by name).
    """
    if dataset not in SHIPPED:
        experiment = classifier_experiment(dataset)
        why = f", {NOT_SHIPPED_WHY[dataset]}" if dataset in NOT_SHIPPED_WHY else ""
        raise FeatureClassifierMissing(
            f"no feature classifier is shipped for {dataset} (shipped: {', '.join(SHIPPED)}"
            f"{why}): train one with `dgm-train experiment={experiment}` (its export writes "
            f"{classifier_path(dataset)}) and pass sample_metrics.fid.classifier=<that file>"
        )
    return ASSETS / SHIPPED[dataset].file


def classifier_file(dataset: str, classifier: str = "shipped") -> Path:
    """The file of ``sample_metrics.fid.classifier``: the shipped one of ``dataset``
    (:func:`shipped_path`) or the path given (``~`` expanded).

    Raises:
        FeatureClassifierMissing: ``shipped`` for a dataset with no shipped classifier.
    """
    return shipped_path(dataset) if classifier == "shipped" else Path(classifier).expanduser()


def _read_classifier(path: Path, dataset: str, device: torch.device | str) -> dict[str, Any]:
    """The record of a classifier file, loaded without executing code; checks it is one
    and that it was trained on ``dataset``."""
    try:
        record = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # unpickling, zip and I/O errors of a damaged file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is not a readable safe classifier file: {first}") from None
    if not isinstance(record, dict) or not {"model", "arch", "image_shape"} <= set(record):
        raise CheckpointError(f"{path} is not a feature classifier (keys missing)")
    check_config(record.get("arch"), path)  # keyword arguments of FeatureCNN: data only
    if record.get("dataset") != dataset:
        raise CheckpointError(
            f"{path} is the feature classifier of {record.get('dataset')!r}, not of {dataset!r}"
        )
    return record


def load_feature_classifier(
    dataset: str, device: torch.device | str = "cpu", classifier: str = "shipped"
) -> tuple[FeatureCNN, dict[str, Any]]:
    """The feature classifier of ``dataset`` in eval mode, and its record.

    Args:
        dataset: ``DataSplits.name``; device: where the model goes.
        classifier: ``shipped`` (the pinned file of :data:`SHIPPED`) or the path of a
            classifier file written by ``experiment=classifier_<dataset>`` (its ``exports``).

    Returns:
        ``(model, info)``; ``info`` holds ``dataset``, ``test_accuracy``, ``n_test``,
        ``sha256`` (of the file), ``shipped`` (bool) and ``file`` (the path).

    Raises:
        FeatureClassifierMissing: nothing is shipped for ``dataset``, or the named file does
            not exist; the message names the command that makes one.
        CheckpointError: the shipped file does not match its pinned sha256 (modified or
            damaged), or a file is unreadable, of another dataset, or does not fit the
            architecture.
    """
    shipped = classifier == "shipped"
    path = classifier_file(dataset, classifier)
    if not path.is_file():
        experiment = classifier_experiment(dataset)
        where = "the shipped file" if shipped else "sample_metrics.fid.classifier"
        raise FeatureClassifierMissing(
            f"no feature classifier for {dataset} at {path} ({where}): "
            f"`dgm-train experiment={experiment}` makes one"
        )
    digest = file_sha256(path)
    if shipped and digest != SHIPPED[dataset].sha256:
        raise CheckpointError(
            f"{path} does not match its pinned sha256 ({digest[:12]}... != "
            f"{SHIPPED[dataset].sha256[:12]}...): the shipped classifier was modified; "
            "reinstall dgm-runner"
        )
    record = _read_classifier(path, dataset, device)
    try:
        model = FeatureCNN(tuple(record["image_shape"]), int(record["n_classes"]), **record["arch"])
        model.load_state_dict(record["model"])
    except (KeyError, RuntimeError, TypeError) as err:
        raise CheckpointError(
            f"{path} is not a feature classifier ({str(err).splitlines()[0]})"
        ) from None
    info = {
        "dataset": dataset,
        "test_accuracy": float(record["test_accuracy"]),
        "n_test": int(record.get("n_test", 0)),
        "sha256": digest,
        "shipped": shipped,
        "file": str(path),
    }
    return model.to(device).eval(), info
