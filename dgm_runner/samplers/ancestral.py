"""Ancestral sampling from a latent-variable model: z ~ p(z), then the decoder mean."""

from __future__ import annotations

import torch

from dgm_runner.models.checks import require
from dgm_runner.models.vae import GaussianVAE
from dgm_runner.samplers.base import Sampler


class AncestralSampler(Sampler):
    """Draw ``z ~ N(0, I)`` and return the decoder mean ``E[x | z]`` (the usual VAE
    sample picture; per-pixel noise of the likelihood is not added). For a conditional
    model, sample i gets the label ``i mod n_classes`` (so an 8x8 grid cycles 0..9)."""

    def check_model(self, model: torch.nn.Module) -> None:
        require(model, GaussianVAE, "sampler 'ancestral'")

    @torch.no_grad()
    def sample(self, model: GaussianVAE, n: int, generator: torch.Generator) -> torch.Tensor:
        """Returns ``(n, C, H, W)`` images in [0, 1]."""
        device = next(model.parameters()).device
        z = torch.randn(n, model.latent_dim, generator=generator, device=device)
        y = torch.arange(n, device=device) % model.n_classes if model.conditional else None
        return model.decode(z, y)
