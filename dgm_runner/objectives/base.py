"""The objective interface the loop relies on."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn


class Batch(NamedTuple):
    """One minibatch: ``x`` ``(B, C, H, W)`` float images, ``y`` ``(B,)`` int64 labels."""

    x: torch.Tensor
    y: torch.Tensor


class Objective:
    """Base class of every training objective (``configs/objective``).

    Subclasses implement :meth:`loss` (what the optimiser minimises) and :meth:`evaluate`
    (per-example test metrics). ``monitor`` names the evaluate key that picks
    ``best.pt`` (lower is better). Objectives with state (e.g. PCD chains) override
    :meth:`state_dict` / :meth:`load_state_dict` so it is checkpointed.
    """

    monitor: str = "loss"

    def check_model(self, model: nn.Module) -> None:
        """Raise ``TypeError`` (one line) if ``model`` cannot be trained by this objective."""

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return ``(scalar to minimise, {name: detached scalar tensor to log})``."""
        raise NotImplementedError

    def evaluate(
        self, model: nn.Module, batch: Batch, generator: torch.Generator | None = None, final: bool = False
    ) -> dict[str, torch.Tensor]:
        """Return ``{metric name: (B,) per-example values}``; the loop averages them.
        ``final`` is true for the last evaluation of a run (and for ``dgm-eval``), where
        expensive metrics (e.g. IWAE with K = 1000) are computed."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Tensors/primitives to checkpoint (default: none)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

