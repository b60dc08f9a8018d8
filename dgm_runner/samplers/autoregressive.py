"""Ancestral sampling of the code grid from an autoregressive prior, decoded by the
frozen VQ-VAE (van den Oord et al. 2017, Sec. 3.3; seed 003 programming question 1)."""

from __future__ import annotations

import torch
from torch import nn

from dgm_runner.config import PositiveFloat
from dgm_runner.models.checks import require
from dgm_runner.models.pixelcnn import PixelCNNPrior
from dgm_runner.progress import Bar
from dgm_runner.samplers.base import Sampler


class AutoregressiveSampler(Sampler):
    """Draw ``c_i ~ softmax(logits_i / temperature)`` for ``i = 1..h*w`` in raster order
    (one forward pass of the prior per position: 49 for the 7x7 grid), then decode the
    grid with the frozen VQ-VAE: ``(n, C, H, W)`` mean images in [0, 1].

    ``temperature = 1`` samples the learned prior; lower values sharpen it. Deterministic
    given ``generator`` (the draws use :func:`torch.multinomial` with it).

    Args:
        temperature: > 0.

    Raises:
        ValueError: ``temperature <= 0``.
    """

    def __init__(self, temperature: PositiveFloat = 1.0) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        self.temperature = temperature

    def check_model(self, model: nn.Module) -> None:
        require(model, PixelCNNPrior, "sampler 'autoregressive'")

    @torch.no_grad()
    def sample_codes(
        self, model: PixelCNNPrior, n: int, generator: torch.Generator
    ) -> torch.Tensor:
        """``(n, h, w)`` int64 code grids drawn from the prior."""
        h, w = model.grid_shape
        device = next(model.parameters()).device
        codes = torch.zeros(n, h, w, dtype=torch.long, device=device)
        with Bar(h * w, f"code positions ({n} samples)", "position") as bar:
            for r in range(h):
                for c in range(w):
                    logits = model(codes)[:, :, r, c] / self.temperature
                    probs = torch.softmax(logits.double(), dim=1)
                    codes[:, r, c] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
                    bar.update()
        return codes

    @torch.no_grad()
    def sample(self, model: PixelCNNPrior, n: int, generator: torch.Generator) -> torch.Tensor:
        return model.decode_codes(self.sample_codes(model, n, generator))
