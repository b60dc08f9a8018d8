"""An exact diffusion "model" for Gaussian data, used to check samplers, losses and
likelihoods against closed forms (and available to users checking their own samplers)."""

from __future__ import annotations

import torch

from dgm_runner.models.score import DiffusionModel
from dgm_runner.sdes import SDE, bcast


class GaussianOracle(DiffusionModel):
    """Data ``x_0 ~ N(mu, s^2 I)`` in ``d`` dimensions under the process ``sde``: every
    marginal is Gaussian, ``x_t ~ N(alpha mu, (alpha^2 s^2 + sigma^2) I)``, so the exact
    noise prediction is ``E[eps | x_t] = sigma (x_t - alpha mu) / (alpha^2 s^2 + sigma^2)``
    and the exact score ``-(x_t - alpha mu) / (alpha^2 s^2 + sigma^2)``.

    Args:
        sde: the diffusion process.
        mu: ``(d,)`` data mean (model space); std: data std ``s``.
        perturb: added to the exact noise prediction (tests that losses rise off the optimum).
    """

    def __init__(self, sde: SDE, mu: torch.Tensor, std: float, perturb: float = 0.0) -> None:
        super().__init__()
        self.sde = sde
        self.register_buffer("mu", mu.float())
        self.std, self.perturb = float(std), float(perturb)
        self.image_shape = tuple(mu.shape)

    def predict_noise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(B, d)`` states at ``(B,)`` times -> exact ``E[eps | x_t]`` (+ ``perturb``)."""
        alpha, sigma = bcast(self.sde.alpha(t), x), bcast(self.sde.sigma(t), x)
        var = alpha**2 * self.std**2 + sigma**2
        return sigma * (x - alpha * self.mu) / var + self.perturb

    def log_density(self, x0: torch.Tensor) -> torch.Tensor:
        """``(B,)`` exact ``log N(x0; mu, s^2 I)`` in nats."""
        d = x0.shape[1]
        return -0.5 * ((x0 - self.mu) ** 2).sum(1) / self.std**2 - 0.5 * d * torch.log(
            torch.tensor(2 * torch.pi * self.std**2)
        )
