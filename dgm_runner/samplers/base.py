"""The sampler interface."""

from __future__ import annotations

import torch
from torch import nn


class Sampler:
    """Base class of samplers (``configs/sampler``).

    ``sample(model, n, generator)`` returns ``(n, C, H, W)`` images in [0, 1] and is
    deterministic given ``generator``. ``check_model`` raises ``TypeError`` (one line)
    when the sampler cannot draw from ``model``.
    """

    def check_model(self, model: nn.Module) -> None:
        """Raise ``TypeError`` if this sampler does not apply to ``model``."""

    def sample(self, model: nn.Module, n: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError
