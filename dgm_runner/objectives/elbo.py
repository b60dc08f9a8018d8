"""The negative ELBO for Gaussian-latent VAEs."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from dgm_runner.config import PositiveInt
from dgm_runner.distributions import kl_normal_std, log_normal_diag, sample_normal_diag
from dgm_runner.models.vae import GaussianVAE
from dgm_runner.models.checks import require
from dgm_runner.objectives.base import Batch, Objective


class ELBO(Objective):
    """Minimise ``-ELBO = E_q[-log p(x|z)] + KL(q(z|x) || N(0, I))`` (Kingma & Welling 2014).

    ``likelihood="mse"`` is seed 000's choice: the reconstruction term is the squared
    error summed over pixels, ``||x - x_hat(z)||^2`` (the Gaussian NLL up to scale and a
    constant), so the loss is in "nats up to a constant" per example. ``kl="analytic"``
    uses the closed form (Kingma & Welling, Appendix B); ``kl="mc"`` uses the single-
    sample estimate ``log q(z|x) - log p(z)`` at the drawn z. ``n_samples`` draws of z per
    example are averaged.

    Logged / evaluated terms (per example): ``recon_mse_sum``, ``kl``, ``elbo_loss``
    (= recon + KL).

    Args:
        likelihood: the reconstruction term (only ``"mse"`` for now).
        kl: ``"analytic"`` or ``"mc"``.
        n_samples: Monte Carlo samples of z per example.
    """

    monitor = "elbo_loss"

    def __init__(
        self,
        likelihood: Literal["mse"] = "mse",
        kl: Literal["analytic", "mc"] = "analytic",
        n_samples: PositiveInt = 1,
    ) -> None:
        self.likelihood = likelihood
        self.kl = kl
        self.n_samples = n_samples

    def check_model(self, model: nn.Module) -> None:
        require(model, GaussianVAE, "objective 'elbo'")

    def terms(
        self, model: GaussianVAE, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-example ``recon_mse_sum``, ``kl`` and ``elbo_loss``, each ``(B,)`` nats."""
        mu, logvar = model.encode(x)
        recon = torch.zeros(x.shape[0], device=x.device)
        kl = torch.zeros_like(recon)
        for _ in range(self.n_samples):
            z = sample_normal_diag(mu, logvar, generator)
            recon = recon + (model.decode(z) - x).pow(2).flatten(1).sum(dim=1)
            if self.kl == "mc":
                zeros = torch.zeros_like(z)
                kl = kl + log_normal_diag(z, mu, logvar) - log_normal_diag(z, zeros, zeros)
        recon = recon / self.n_samples
        kl = kl_normal_std(mu, logvar) if self.kl == "analytic" else kl / self.n_samples
        return {"recon_mse_sum": recon, "kl": kl, "elbo_loss": recon + kl}

    def loss(self, model: GaussianVAE, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        t = self.terms(model, batch.x)
        means = {k: v.mean() for k, v in t.items()}
        return means["elbo_loss"], {k: v.detach() for k, v in means.items()}

    def evaluate(self, model: GaussianVAE, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        return self.terms(model, batch.x, generator)

