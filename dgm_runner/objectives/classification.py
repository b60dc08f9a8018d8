"""Cross-entropy training of the feature classifier (``experiment=classifier_mnist``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dgm_runner.config import UnitInterval
from dgm_runner.models.checks import require_attrs
from dgm_runner.objectives.base import Batch, Objective


class CrossEntropy(Objective):
    """Mean cross-entropy of the labels under the model's logits (nats per example).

    Logged terms: ``loss``, ``accuracy``. Test metrics (per example, averaged by the
    loop): ``nll`` (nats), ``accuracy`` and ``error`` (fractions); ``best.pt`` keeps the
    lowest test error.

    Args:
        label_smoothing: as in ``torch.nn.functional.cross_entropy`` (training only).
    """

    monitor = "error"

    def __init__(self, label_smoothing: UnitInterval = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def check_model(self, model: nn.Module) -> None:
        """Raise ``TypeError`` unless ``model`` has ``features`` and ``n_classes`` (a
        classifier)."""
        require_attrs(model, ("features", "n_classes"), "objective 'classification'")

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(mean cross-entropy, {"loss", "accuracy"})`` on ``batch``."""
        logits = model(batch.x)
        loss = F.cross_entropy(logits, batch.y, label_smoothing=self.label_smoothing)
        accuracy = (logits.argmax(1) == batch.y).float().mean()
        return loss, {"loss": loss.detach(), "accuracy": accuracy.detach()}

    def evaluate(self, model, batch, generator=None, final=False) -> dict[str, torch.Tensor]:
        """Per-example ``nll`` (nats), ``accuracy`` and ``error`` (0 or 1), each ``(B,)``."""
        logits = model(batch.x)
        correct = (logits.argmax(1) == batch.y).float()
        return {
            "nll": F.cross_entropy(logits, batch.y, reduction="none"),
            "accuracy": correct,
            "error": 1.0 - correct,
        }
