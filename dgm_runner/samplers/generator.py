"""Sampling a GAN: z ~ p(z) through the generator (``sampler=generator``)."""

from __future__ import annotations

import torch

from dgm_runner.models.checks import require_attrs
from dgm_runner.samplers.base import Sampler


class GeneratorSampler(Sampler):
    """``z ~ N(0, I)`` from the generator (the runner reseeds it at every evaluation, so the
    grid always shows the same z), then ``G(z)``."""

    def check_model(self, model: torch.nn.Module) -> None:
        require_attrs(model, ("generate", "latent_dim"), "sampler 'generator'")

    @torch.no_grad()
    def sample(self, model, n: int, generator: torch.Generator) -> torch.Tensor:
        """Returns ``(n, C, H, W)`` images in [0, 1]."""
        device = next(model.parameters()).device
        return model.generate(torch.randn(n, model.latent_dim, generator=generator, device=device))
