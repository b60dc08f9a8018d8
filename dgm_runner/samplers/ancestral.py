"""Ancestral sampling from a latent-variable model: z ~ p(z), then the decoder mean."""

from __future__ import annotations

from typing import Optional

import torch

from dgm_runner.models.checks import require
from dgm_runner.models.vae import GaussianVAE
from dgm_runner.samplers.base import Sampler


class AncestralSampler(Sampler):
    """Draw ``z ~ N(0, I)`` and return the decoder mean ``E[x | z]`` (the usual VAE
    sample picture; per-pixel noise of the likelihood is not added). For a conditional
    model, sample i gets the label ``labels[i mod len(labels)]``, by default
    ``i mod n_classes`` (so an 8x8 grid cycles 0..9); ``dgm-sample RUN label=3`` draws one
    class only (seed 004 Q3, "generation per class").

    Args:
        labels: the classes to draw, in turn (None: all of them).
    """

    labels: Optional[list[int]] = None  # also for subclasses that do not call __init__

    def __init__(self, labels: Optional[list[int]] = None) -> None:
        self.labels = None if labels is None else [int(v) for v in labels]

    def check_model(self, model: torch.nn.Module) -> None:
        """Raises TypeError for a model that is no GaussianVAE, and for labels given to an
        unconditional model or outside ``[0, n_classes)``."""
        require(model, GaussianVAE, "sampler 'ancestral'")
        if self.labels is None:
            return
        if not model.conditional:
            raise TypeError(
                f"labels {self.labels}: {type(model).__name__} is not a conditional model"
            )
        bad = [v for v in self.labels if not 0 <= v < model.n_classes]
        if bad or not self.labels:
            raise TypeError(f"labels must be classes in [0, {model.n_classes}), got {self.labels}")

    @torch.no_grad()
    def sample(self, model: GaussianVAE, n: int, generator: torch.Generator) -> torch.Tensor:
        """Returns ``(n, C, H, W)`` images in [0, 1]."""
        device = next(model.parameters()).device
        z = torch.randn(n, model.latent_dim, generator=generator, device=device)
        y = None
        if model.conditional:
            classes = torch.tensor(self.labels or range(model.n_classes), device=device)
            y = classes[torch.arange(n, device=device) % classes.numel()]
        return model.decode(z, y)
