"""A user's own components, outside the dgm_runner package (docs/extending.md):
a deeper VAE, a beta-weighted ELBO and a tempered ancestral sampler."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from dgm_runner.config import NonNegativeInt, PositiveFloat, PositiveInt
from dgm_runner.models.vae import GaussianVAE
from dgm_runner.objectives.elbo import ELBO
from dgm_runner.samplers.ancestral import AncestralSampler


class MyVAE(GaussianVAE):
    """A Gaussian VAE with two ReLU hidden layers in the encoder and in the decoder.

    Args:
        image_shape: ``(C, H, W)``, set by the runner from the dataset.
        latent_dim: N_z; hidden_dim: the width of both hidden layers.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        latent_dim: PositiveInt = 16,
        hidden_dim: PositiveInt = 256,
    ) -> None:
        super().__init__()
        self.image_shape, self.latent_dim = tuple(image_shape), latent_dim
        d = math.prod(image_shape)
        self.encoder = nn.Sequential(
            nn.Flatten(),
            nn.Linear(d, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
        )
        self.fc_mu = nn.Linear(hidden_dim, latent_dim)
        self.fc_logvar = nn.Linear(hidden_dim, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, d),
            nn.Unflatten(1, self.image_shape),
        )


class BetaELBO(ELBO):
    """The beta-VAE objective (Higgins et al. 2017): reconstruction + beta x KL, in nats
    per example; ``test/elbo`` stays the true ELBO, the loss is the weighted one.

    Args:
        beta: the KL weight (1: the ELBO).
        likelihood: ``bernoulli`` or ``gaussian`` (see ELBO); iwae_k: importance samples
            of the final NLL (0: off).
    """

    def __init__(
        self,
        beta: PositiveFloat = 4.0,
        likelihood: Literal["bernoulli", "gaussian"] = "bernoulli",
        iwae_k: NonNegativeInt = 0,
    ) -> None:
        super().__init__(likelihood=likelihood, iwae_k=iwae_k)
        self.beta = beta
        self.monitor = "beta_loss"

    def terms(self, model, batch, generator=None):
        out = super().terms(model, batch, generator)
        out["beta_loss"] = out["recon"] + self.beta * out["kl"]
        return out


class TemperedSampler(AncestralSampler):
    """Ancestral sampling with ``z ~ N(0, temperature^2 I)``: below 1, typical samples.

    Args:
        temperature: the prior's standard deviation at sampling time.
    """

    def __init__(self, temperature: PositiveFloat = 0.8) -> None:
        super().__init__()
        self.temperature = temperature

    @torch.no_grad()
    def sample(self, model, n, generator):
        """Returns ``(n, C, H, W)`` decoder means in [0, 1]."""
        device = next(model.parameters()).device
        z = torch.randn(n, model.latent_dim, generator=generator, device=device)
        return model.decode(self.temperature * z)
