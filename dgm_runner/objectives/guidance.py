"""Label dropout for class-conditional diffusion and flow-matching models: one network
learns the conditional and the unconditional model (Ho & Salimans 2022, "Classifier-free
diffusion guidance", Sec. 3.2 and Algorithm 1), which guided sampling then combines
(:meth:`dgm_runner.models.score.DiffusionModel.network`)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from dgm_runner.distributions import batch_draw


def training_labels(
    model: nn.Module, y: torch.Tensor, p_uncond: float, generator: torch.Generator | None = None
) -> torch.Tensor | None:
    """The labels a class-conditional model trains on: ``y`` ``(B,)`` with each label
    replaced by the null class ``model.n_classes`` with probability ``p_uncond``
    (Ho & Salimans 2022, Algorithm 1, ``p_uncond``). The uniform draws go through
    :func:`~dgm_runner.distributions.batch_draw` from ``generator`` (the loop's RNG when
    None), one per example, so a resumed or data-parallel run draws what one process
    would; objectives draw them after their times and noise.

    Returns:
        ``(B,)`` int64 labels in ``[0, n_classes]``; None for a model that is not
        class-conditional (and then nothing is drawn: an unconditional run's random stream
        is unchanged).
    """
    if not getattr(model, "conditional", False):
        return None
    u = batch_draw(y.shape[0], lambda m: torch.rand(m, generator=generator, device=y.device))
    return torch.where(u < p_uncond, torch.full_like(y, model.n_classes), y)


def conditioned_on(model: nn.Module, labels: torch.Tensor | None) -> AbstractContextManager:
    """``model.conditioned(labels)`` (no guidance) for labels of
    :func:`training_labels`, a no-op context for None."""
    return nullcontext() if labels is None else model.conditioned(labels)
