"""Training on the importance-weighted bound: the IWAE of Burda, Grosse & Salakhutdinov
(2016), "Importance Weighted Autoencoders"."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from dgm_runner.config import NonNegativeInt, PositiveFloat, PositiveInt
from dgm_runner.distributions import sample_normal_diag
from dgm_runner.models.checks import require
from dgm_runner.models.vae import GaussianVAE
from dgm_runner.objectives.base import Batch
from dgm_runner.objectives.elbo import ELBO, iwae_log_likelihood, log_importance_weights


class IWAE(ELBO):
    """Maximise the k-sample bound (Burda et al. 2016, Eq. 8)

    ``L_k(x) = E[log (1/k) sum_{i=1..k} w_i]``, ``w_i = p(x, z_i) / q(z_i|x)``,
    ``z_1..z_k ~ q(z|x)`` independently,

    estimated per example with one set of k reparameterised draws
    ``z_i = mu(x) + sigma(x) eps_i`` and differentiated through them: the gradient is
    ``sum_i w~_i grad log w_i`` with the normalised weights ``w~_i = w_i / sum_j w_j``
    (their Eq. 13-14). ``L_1`` is the VAE's ELBO with a Monte-Carlo KL
    (``ELBO(kl="mc")``, same value from the same draws up to float rounding), and
    ``L_1 <= L_k <= L_m <= log p(x)`` for ``k <= m`` (their Theorem 1). The log weights are
    :func:`dgm_runner.objectives.elbo.log_importance_weights`, the function the IWAE NLL of
    evaluation uses too.

    The k draws of an example are one per-example draw of ``(k, latent_dim)`` noise
    (:func:`dgm_runner.distributions.sample_normal_diag`, through ``batch_draw``): a
    data-parallel shard draws what a single process draws for its rows, and a resumed run
    continues the same stream.

    Terms (nats per image): training logs ``iwae_bound`` = L_k (a lower bound on log p(x),
    higher is better) and ``loss`` = -L_k, the minimised and monitored value. Evaluation
    reports the ELBO objective's terms (``recon``, ``kl`` with the analytic KL, ``elbo``)
    with ``loss`` = -L_k and ``iwae_bound`` = L_k of the test images, and at the final
    evaluation ``nll_iwae_k{iwae_k}`` = -L_{iwae_k} (e.g. k = 5000, Burda et al.'s test
    estimate) with its standard error over the test images ``nll_iwae_k{iwae_k}_se``.

    Args:
        k: importance samples per example in training (Burda et al.: 1, 5, 50).
        likelihood: ``bernoulli`` (binary pixels), ``gaussian`` or ``gaussian_learned``.
        obs_std: decoder standard deviation for ``gaussian``.
        iwae_k: importance samples of the final NLL (0: off).
        iwae_k_eval: importance samples of the NLL at the intermediate evaluations (0: off).
    """

    def __init__(
        self,
        k: PositiveInt = 5,
        likelihood: Literal["bernoulli", "gaussian", "gaussian_learned"] = "bernoulli",
        obs_std: PositiveFloat = 1.0,
        iwae_k: NonNegativeInt = 0,
        iwae_k_eval: NonNegativeInt = 0,
    ) -> None:
        super().__init__(
            likelihood=likelihood, obs_std=obs_std, iwae_k=iwae_k, iwae_k_eval=iwae_k_eval
        )
        self.k = k
        self.monitor = "loss"

    def check_model(self, model: nn.Module) -> None:
        require(model, GaussianVAE, "objective 'iwae'")

    def bound(
        self, model: GaussianVAE, batch: Batch, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The one-draw estimate of ``L_k`` per example, differentiable (the training
        estimate; evaluation uses the chunked, gradient-free :meth:`evaluate`).

        Args:
            model: the VAE; batch: ``x`` ``(B, C, H, W)`` (``y`` for conditional models).
            generator: RNG of the draws (None: the global one, as in training).

        Returns:
            ``(B,)`` estimates of L_k (nats).
        """
        x, y = batch.x, batch.y if model.conditional else None
        mu, logvar = model.encode(x, y)
        b, d = mu.shape
        # (B, k, d): each example's k draws are one per-example draw (batch_draw)
        z = sample_normal_diag(
            mu[:, None].expand(b, self.k, d), logvar[:, None].expand(b, self.k, d), generator
        )
        log_w = log_importance_weights(
            model, x, y, z.transpose(0, 1), mu, logvar, self.likelihood, self.obs_std
        )  # (k, B)
        return torch.logsumexp(log_w, dim=0) - math.log(self.k)

    def loss(
        self, model: GaussianVAE, batch: Batch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        bound = self.bound(model, batch).mean()
        return -bound, {"iwae_bound": bound.detach(), "loss": -bound.detach()}

    def evaluate(
        self,
        model: GaussianVAE,
        batch: Batch,
        generator: torch.Generator | None = None,
        final: bool = False,
    ) -> dict[str, torch.Tensor]:
        out = super().evaluate(model, batch, generator, final)
        y = batch.y if model.conditional else None
        bound = iwae_log_likelihood(
            model, batch.x, y, self.k, self.likelihood, self.obs_std, generator
        )
        out["iwae_bound"], out["loss"] = bound, -bound
        return out
