"""The feature classifiers of the classifier-feature metrics, kept in the user cache.

``dgm-train experiment=classifier_mnist`` (or ``classifier_fashion``) trains a
:class:`~dgm_runner.models.classifier.FeatureCNN`; its ``exports`` hook
(:func:`export_feature_classifier`) stores the weights with the test accuracy under
``<cache>/classifiers/<dataset>.pt`` (``$DGM_CACHE_DIR``, default
``~/.cache/dgm_runner``), where :func:`load_feature_classifier` finds them for every
later run on that dataset.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from dgm_runner.config import UnitInterval
from dgm_runner.data.base import DataSplits
from dgm_runner.data.vision import cache_dir
from dgm_runner.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dgm_runner.models.classifier import FeatureCNN

log = logging.getLogger("dgm_runner")

#: The experiment that trains the classifier of each dataset (named in error messages).
EXPERIMENTS = {"mnist": "classifier_mnist", "fashion_mnist": "classifier_fashion"}


class FeatureClassifierMissing(CheckpointError):
    """No feature classifier has been trained for this dataset yet."""


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
    log.info("feature classifier for %s (test accuracy %.4f) -> %s", data.name, accuracy, path)
    return path


def load_feature_classifier(
    dataset: str, device: torch.device | str = "cpu"
) -> tuple[FeatureCNN, dict[str, Any]]:
    """The stored classifier of ``dataset`` in eval mode, and its record (accuracy, run).

    Raises:
        FeatureClassifierMissing: none was trained; the message names the command.
        CheckpointError: the stored file is unreadable or does not fit the architecture.
    """
    path = classifier_path(dataset)
    if not path.is_file():
        experiment = EXPERIMENTS.get(dataset, f"classifier_<{dataset}>")
        raise FeatureClassifierMissing(
            f"no feature classifier for {dataset} at {path}: "
            f"run `dgm-train experiment={experiment}` first"
        )
    record = load_checkpoint(path, map_location=device)
    try:
        model = FeatureCNN(tuple(record["image_shape"]), int(record["n_classes"]), **record["arch"])
        model.load_state_dict(record["model"])
    except (KeyError, RuntimeError, TypeError) as err:
        raise CheckpointError(
            f"{path} is not a feature classifier ({str(err).splitlines()[0]})"
        ) from None
    info = {k: record[k] for k in ("dataset", "test_accuracy", "n_test", "run_dir")}
    info["file"] = (
        str(path),
        path.stat().st_mtime_ns,
    )  # identifies this classifier (feature caches)
    return model.to(device).eval(), info
