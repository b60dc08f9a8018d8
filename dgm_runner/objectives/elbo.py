"""The ELBO (and, for conditional models, the CELBO) of Gaussian-latent VAEs, and the
importance-weighted bound used to report log-likelihoods."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from dgm_runner.config import NonNegativeInt, PositiveFloat, PositiveInt
from dgm_runner.distributions import (
    kl_normal_std,
    log_bernoulli,
    log_normal_diag,
    sample_normal_diag,
)
from dgm_runner.models.checks import require
from dgm_runner.models.vae import GaussianVAE
from dgm_runner.objectives.base import Batch, Objective
from dgm_runner.progress import track

Likelihood = Literal["mse", "bernoulli", "gaussian", "gaussian_learned"]

# Rows (samples x examples) decoded at once by the IWAE estimator: bounds its memory.
_IWAE_ROWS = 50_000


def _sample_mean(values: list[torch.Tensor]) -> torch.Tensor:
    """Mean of per-sample ``(B,)`` terms; the one tensor itself for a single sample (no
    extra kernels in the usual ``n_samples=1`` training step)."""
    return values[0] if len(values) == 1 else torch.stack(values).mean(0)


def log_likelihood(
    likelihood: Likelihood,
    x: torch.Tensor,
    logits: torch.Tensor,
    obs_std: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """``log p(x|z)`` per example from the decoder's pre-sigmoid output.

    * ``bernoulli``: independent Bernoulli pixels, ``sum_i log Bernoulli(x_i; sigmoid(l_i))``
      (seed 001 Q2, its Eq. 2 reconstruction term; seed 004 Q2 cross entropy).
    * ``gaussian``: ``log N(x; sigmoid(l), obs_std^2 I)``, normalised (nats).
    * ``gaussian_learned``: the same with a learned ``(B,)`` tensor ``obs_std`` = sigma(z)
      (seed 003 written Q2).
    * ``mse``: ``-||x - sigmoid(l)||^2`` summed over pixels (seed 000 Q4): the Gaussian
      NLL up to scale and constant, *not* a normalised log-density.

    Args:
        x: ``(B, C, H, W)`` targets; logits: ``(B, C, H, W)``.

    Returns:
        ``(B,)`` (nats for bernoulli / gaussian).
    """
    x, logits = x.flatten(1), logits.flatten(1)
    if likelihood == "bernoulli":
        return log_bernoulli(x, logits)
    mean = torch.sigmoid(logits)
    if likelihood in ("gaussian", "gaussian_learned"):
        if isinstance(obs_std, torch.Tensor):
            logvar = (2.0 * torch.log(obs_std)).reshape(-1, 1).expand_as(mean)
        else:
            logvar = torch.full_like(mean, 2.0 * math.log(obs_std))
        return log_normal_diag(x, mean, logvar)
    return -(mean - x).pow(2).sum(dim=1)


def log_importance_weights(
    model: GaussianVAE,
    x: torch.Tensor,
    y: torch.Tensor | None,
    z: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    likelihood: Likelihood = "bernoulli",
    obs_std: float = 1.0,
) -> torch.Tensor:
    """The log importance weights ``log w = log p(x|z) + log p(z) - log q(z|x)`` of draws
    ``z ~ q(z|x) = N(mu, diag e^logvar)``, ``p(z) = N(0, I)`` (Burda et al. 2016, Eq. 8:
    ``w = p(x, z) / q(z|x)``): the one log-weight of the IWAE bound, for training
    (:class:`dgm_runner.objectives.iwae.IWAE`) and evaluation (:func:`iwae_log_likelihood`).

    Args:
        model: the VAE (decoder ``decode_logits``; ``decode_std`` for ``gaussian_learned``).
        x: ``(B, C, H, W)`` images; y: ``(B,)`` labels of a conditional model, else None.
        z: ``(S, B, latent_dim)``: S draws for each of the B examples.
        mu, logvar: ``(B, latent_dim)`` parameters of q(z|x).
        likelihood: ``bernoulli``, ``gaussian`` or ``gaussian_learned`` (a normalised
            density; see :func:`log_likelihood`).
        obs_std: decoder standard deviation for ``gaussian``.

    Returns:
        ``(S, B)`` log weights (nats). Differentiable in the model's parameters and, through
        a reparameterised ``z``, in q's.
    """
    s, b = z.shape[:2]
    flat = z.reshape(s * b, -1)
    ys = None if y is None else y.repeat(s)
    logits = model.decode_logits(flat, ys)
    std = model.decode_std(flat, ys) if likelihood == "gaussian_learned" else obs_std
    ll = log_likelihood(likelihood, x.repeat(s, 1, 1, 1), logits, std).reshape(s, b)
    zeros = torch.zeros_like(mu)
    return ll + log_normal_diag(z, zeros, zeros) - log_normal_diag(z, mu, logvar)


@torch.no_grad()
def iwae_log_likelihood(
    model: GaussianVAE,
    x: torch.Tensor,
    y: torch.Tensor | None,
    k: int,
    likelihood: Likelihood = "bernoulli",
    obs_std: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The importance-weighted bound ``L_k`` (Burda et al. 2016, Eq. 8):

    ``log p(x) >= L_k = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)]``, ``z_i ~ q(z|x)``,
    which increases with ``k`` (their Theorem 1) and tends to ``log p(x)``; ``L_1`` is
    the ELBO. Samples are drawn in chunks and combined with a running logsumexp, so
    memory is bounded whatever ``k``; the log weights are :func:`log_importance_weights`.

    Args:
        model: a trained VAE (conditional models bound ``log p(x|y)``).
        x: ``(B, C, H, W)``; y: ``(B,)`` labels or None.
        k: number of importance samples.
        likelihood: ``bernoulli`` or ``gaussian`` (``mse`` is not a density).
        generator: RNG for the z draws.

    Returns:
        ``(B,)`` estimate of ``log p(x)`` (nats; negate for the NLL).

    Raises:
        ValueError: ``likelihood="mse"`` or ``k < 1``.
    """
    if likelihood == "mse" or k < 1:
        raise ValueError(
            "the IWAE bound needs a normalised likelihood (bernoulli|gaussian) and k >= 1"
        )
    mu, logvar = model.encode(x, y)
    b = x.shape[0]
    chunk = max(1, _IWAE_ROWS // b)
    total = torch.full((b,), -math.inf, device=x.device)
    for start in track(range(0, k, chunk), f"IWAE k={k} ({b} images)", unit="chunk"):
        c = min(chunk, k - start)
        z = sample_normal_diag(mu.expand(c, *mu.shape), logvar.expand(c, *logvar.shape), generator)
        log_w = log_importance_weights(model, x, y, z, mu, logvar, likelihood, obs_std)
        total = torch.logsumexp(torch.cat([total[None], log_w]), dim=0)
    return total - math.log(k)


class ELBO(Objective):
    """Minimise ``-ELBO = E_q[-log p(x|z)] + KL(q(z|x) || N(0, I))`` (Kingma & Welling 2014,
    Eq. 3); for a conditional model (CVAE, Sohn et al. 2015) every distribution is also
    conditioned on the label y and the bound is the CELBO on ``log p(x|y)`` (seed 004 Q3,
    its Eq. 2).

    ``kl="analytic"`` uses the closed form (Kingma & Welling, Appendix B; seed 001 Eq. 1);
    ``kl="mc"`` uses the estimate ``log q(z|x) - log p(z)`` at the drawn z (seed 001 Eq. 2).
    ``n_samples`` draws of z per example are averaged (seed 002: 2).

    Terms (per example, nats):

    * ``likelihood="mse"`` (seed 000): ``recon_mse_sum``, ``kl``, ``elbo_loss`` = recon + KL.
    * ``likelihood="gaussian_learned"`` (seed 003 written Q2) also logs ``decoder_std``.
    * otherwise: ``recon`` = -E_q log p(x|z), ``kl``, ``elbo`` = -(recon + KL) (a lower bound
      on log p(x), higher is better), ``loss`` = -elbo; conditional models also report
      ``celbo`` (= ``elbo``: their ELBO is the CELBO). With ``iwae_k`` > 0 the final
      evaluation adds ``nll_iwae_k{K}`` = -L_K (see :func:`iwae_log_likelihood`) and its
      standard error over the test images ``nll_iwae_k{K}_se`` (:meth:`standard_errors`),
      and ``iwae_k_eval`` > 0 adds them to every evaluation.

    Args:
        likelihood: ``mse``, ``bernoulli`` or ``gaussian``.
        kl: ``analytic`` or ``mc``.
        n_samples: Monte Carlo samples of z per example.
        obs_std: decoder standard deviation for ``gaussian``.
        iwae_k: importance samples for the final NLL (0: off).
        iwae_k_eval: importance samples at the intermediate evaluations (0: off).
    """

    def __init__(
        self,
        likelihood: Likelihood = "bernoulli",
        kl: Literal["analytic", "mc"] = "analytic",
        n_samples: PositiveInt = 1,
        obs_std: PositiveFloat = 1.0,
        iwae_k: NonNegativeInt = 0,
        iwae_k_eval: NonNegativeInt = 0,
    ) -> None:
        if likelihood == "mse" and (iwae_k or iwae_k_eval):
            raise ValueError(
                "iwae_k needs a normalised likelihood: use bernoulli or gaussian with mse off"
            )
        self.likelihood = likelihood
        self.kl = kl
        self.n_samples = n_samples
        self.obs_std = obs_std
        self.iwae_k = iwae_k
        self.iwae_k_eval = iwae_k_eval
        self.monitor = "elbo_loss" if likelihood == "mse" else "loss"

    def check_model(self, model: nn.Module) -> None:
        require(model, GaussianVAE, "objective 'elbo'")

    def terms(
        self, model: GaussianVAE, batch: Batch, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-example terms, each ``(B,)`` (see the class docstring for the names)."""
        x, y = batch.x, batch.y if model.conditional else None
        mu, logvar = model.encode(x, y)
        zeros = torch.zeros_like(mu) if self.kl == "mc" else None
        recons, kls, stds = [], [], []  # one (B,) entry per sample of z
        for _ in range(self.n_samples):
            z = sample_normal_diag(mu, logvar, generator)
            std = self.obs_std
            if self.likelihood == "gaussian_learned":
                std = model.decode_std(z, y)
                stds.append(std)
            recons.append(-log_likelihood(self.likelihood, x, model.decode_logits(z, y), std))
            if self.kl == "mc":
                kls.append(log_normal_diag(z, mu, logvar) - log_normal_diag(z, zeros, zeros))
        recon = _sample_mean(recons)
        kl = kl_normal_std(mu, logvar) if self.kl == "analytic" else _sample_mean(kls)
        if self.likelihood == "mse":
            return {"recon_mse_sum": recon, "kl": kl, "elbo_loss": recon + kl}
        out = {"recon": recon, "kl": kl, "elbo": -(recon + kl), "loss": recon + kl}
        if self.likelihood == "gaussian_learned":
            out["decoder_std"] = _sample_mean(stds)
        if model.conditional:
            out["celbo"] = out["elbo"]
        return out

    def loss(
        self, model: GaussianVAE, batch: Batch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        means = {k: v.mean() for k, v in self.terms(model, batch).items()}
        return means[self.monitor], {k: v.detach() for k, v in means.items()}

    def standard_errors(self, final: bool = False) -> tuple[str, ...]:
        """``("nll_iwae_k{K}",)`` when this evaluation computes the IWAE NLL, else ``()``."""
        k = self.iwae_k if final else self.iwae_k_eval
        return (f"nll_iwae_k{k}",) if k else ()

    def evaluate(
        self,
        model: GaussianVAE,
        batch: Batch,
        generator: torch.Generator | None = None,
        final: bool = False,
    ) -> dict[str, torch.Tensor]:
        out = self.terms(model, batch, generator)
        k = self.iwae_k if final else self.iwae_k_eval
        if k:
            y = batch.y if model.conditional else None
            out[f"nll_iwae_k{k}"] = -iwae_log_likelihood(
                model, batch.x, y, k, self.likelihood, self.obs_std, generator
            )
        return out
