"""Denoising score matching (Vincent 2011): over discrete noise levels (Song & Ermon 2019)
and for diffusion models under a VE / VP SDE, a discrete DDPM or the EDM process (Song et
al. 2021; Ho et al. 2020; Karras et al. 2022)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from dgm_runner.config import PositiveFloat, UnitInterval
from dgm_runner.distributions import batch_draw
from dgm_runner.models.checks import require
from dgm_runner.models.score import DiffusionModel, NoiseConditionalScoreMLP
from dgm_runner.objectives.base import Batch, Objective
from dgm_runner.objectives.guidance import conditioned_on, training_labels


def dsm_per_example(
    score: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor, weighting: str = "none"
) -> torch.Tensor:
    """The DSM loss of one example at one noise level, summed over dimensions.

    With ``x~ = x + sigma * noise`` the DSM target is ``grad log q(x~|x) = -noise / sigma``
    ``= -(x~ - x) / sigma^2``. ``weighting="none"`` is seed 001 Q4's loss as printed,
    ``|| s(x~, sigma) + (x~ - x) / sigma^2 ||^2`` (no 1/2, no weight); ``"sigma2"`` is
    Song & Ermon (2019), Eq. 2 with ``lambda = sigma^2``:
    ``sigma^2 / 2 * || s + (x~ - x) / sigma^2 ||^2 = 0.5 ||sigma s + noise||^2``.

    Args:
        score: ``(B, ...)`` model score at x~; noise: ``(B, ...)`` standard normal draw;
        sigma: ``(B,)`` noise std per example.

    Returns:
        ``(B,)`` loss per example.
    """
    s = sigma.reshape(-1, *([1] * (score.ndim - 1)))
    if weighting == "sigma2":
        return 0.5 * (s * score + noise).pow(2).flatten(1).sum(1)
    return (score + noise / s).pow(2).flatten(1).sum(1)


class DenoisingScoreMatching(Objective):
    """Noise-conditional DSM over the model's levels ``model.sigmas``: one level drawn
    uniformly per example per step, ``x~ = x + sigma noise``, loss
    :func:`dsm_per_example`. Metric ``dsm_loss`` (per example).

    Args:
        weighting: ``none`` (default: seed 001 Q4's loss, as printed) or ``sigma2``
            (Song & Ermon 2019's lambda = sigma^2, an option).
    """

    monitor = "dsm_loss"

    def __init__(self, weighting: Literal["sigma2", "none"] = "none") -> None:
        self.weighting = weighting

    def check_model(self, model: nn.Module) -> None:
        require(model, NoiseConditionalScoreMLP, "objective 'dsm'")

    def _per_example(
        self, model: NoiseConditionalScoreMLP, x: torch.Tensor, generator=None
    ) -> torch.Tensor:
        n, rest, levels = x.shape[0], x.shape[1:], len(model.sigmas)
        idx = batch_draw(
            n, lambda m: torch.randint(0, levels, (m,), generator=generator, device=x.device)
        )
        sigma = model.sigmas[idx]
        noise = batch_draw(
            n, lambda m: torch.randn((m, *rest), generator=generator, device=x.device)
        )
        x_noisy = x + sigma[:, None] * noise
        return dsm_per_example(model.score(x_noisy, sigma), noise, sigma, self.weighting)

    def loss(self, model, batch: Batch):
        loss = self._per_example(model, batch.x).mean()
        return loss, {"dsm_loss": loss.detach()}

    def evaluate(self, model, batch: Batch, generator=None, final: bool = False):
        return {"dsm_loss": self._per_example(model, batch.x, generator)}


class DiffusionDSM(Objective):
    """Denoising score matching for diffusion models (any :class:`DiffusionModel`), written
    as a weighted noise-prediction error: ``t`` from ``time_sampling``,
    ``x_t = alpha(t) x_0 + sigma(t) eps`` (``x_0`` in model space), per-example loss
    ``0.5 w(t) || eps_hat(x_t, t) - eps ||^2`` summed over pixels. Metric ``dsm_loss``.

    ``weighting``:

    - ``sigma2``: ``w = 1``, i.e. ``lambda(t) = sigma(t)^2`` on the score error
      ``0.5 || sigma s + eps ||^2`` (Song et al. 2021, Eq. 7) and Ho et al.'s "simple"
      loss (2020, Eq. 14; up to the factor 0.5, which Adam does not see).
    - ``edm``: Karras et al. (2022, Table 1) ``lambda(s) = (s^2 + sd^2) / (s sd)^2`` on
      ``|| D - x_0 ||^2 = s^2 || eps_hat - eps ||^2`` (``s = sigma / alpha``,
      ``sd = model.sigma_data``: the model's own value, the one its EDM preconditioning
      uses, so the two cannot disagree; :class:`DiffusionModel`), i.e.
      ``w = (s^2 + sd^2) / sd^2``; with EDM preconditioning this is unit weight on the
      network's own output.

    ``time_sampling``: ``process`` draws from ``model.sde.sample_t`` (``U(t_min, 1)`` for
    continuous processes, ``n ~ U{1..N}`` for a discrete DDPM, Ho et al. Alg. 1);
    ``lognormal`` draws ``log s ~ N(p_mean, p_std^2)`` (Karras et al. 2022, Table 1) and
    trains at ``t = sde.t_of_sigma_hat(s)``.

    Args:
        t_min: smallest time of ``process`` sampling (Song et al.'s ``eps``: 1e-5).
        weighting: ``sigma2`` or ``edm``.
        time_sampling: ``process`` or ``lognormal``.
        p_mean, p_std: the log-normal's parameters (-1.2, 1.2).
        p_uncond: for a class-conditional model (``model.conditional=true``), the
            probability that an example's label is replaced by the null class
            (:func:`~dgm_runner.objectives.guidance.training_labels`; Ho & Salimans 2022:
            0.1 or 0.2); the test loss drops labels at the same rate. Unused otherwise.
    """

    monitor = "dsm_loss"

    def __init__(
        self,
        t_min: PositiveFloat = 1e-5,
        weighting: Literal["sigma2", "edm"] = "sigma2",
        time_sampling: Literal["process", "lognormal"] = "process",
        p_mean: float = -1.2,
        p_std: PositiveFloat = 1.2,
        p_uncond: UnitInterval = 0.1,
    ) -> None:
        self.t_min, self.weighting, self.time_sampling = t_min, weighting, time_sampling
        self.p_mean, self.p_std, self.p_uncond = p_mean, p_std, p_uncond

    def check_model(self, model: nn.Module) -> None:
        require(model, DiffusionModel, "objective 'dsm' for diffusion models")

    def sample_t(self, model: DiffusionModel, n: int, generator, device) -> torch.Tensor:
        """``(n,)`` training times (see ``time_sampling``)."""
        if self.time_sampling == "process":
            return model.sde.sample_t(n, generator, device, self.t_min)
        log_s = self.p_mean + self.p_std * torch.randn(n, generator=generator, device=device)
        return model.sde.t_of_sigma_hat(torch.exp(log_s))

    def per_example(
        self, model: DiffusionModel, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """``(B,)`` loss of model-space ``x0`` ``(B, ...)`` at times ``t`` with noise ``noise``."""
        mean, std = model.sde.marginal(x0, t)
        x_t = mean + std.reshape(-1, *([1] * (x0.ndim - 1))) * noise
        err = 0.5 * (model.predict_noise(x_t, t) - noise).pow(2).flatten(1).sum(1)
        if self.weighting == "edm":
            s2, sd2 = model.sde.sigma_hat(t) ** 2, model.sigma_data**2
            err = err * (s2 + sd2) / sd2
        return err

    def _per_example(self, model: DiffusionModel, batch: Batch, generator=None) -> torch.Tensor:
        x0 = model.encode(batch.x)
        n, rest = x0.shape[0], x0.shape[1:]
        t = batch_draw(n, lambda m: self.sample_t(model, m, generator, x0.device))
        noise = batch_draw(
            n, lambda m: torch.randn((m, *rest), generator=generator, device=x0.device)
        )
        labels = training_labels(model, batch.y, self.p_uncond, generator)
        with conditioned_on(model, labels):
            return self.per_example(model, x0, t, noise)

    def loss(self, model, batch: Batch):
        loss = self._per_example(model, batch).mean()
        return loss, {"dsm_loss": loss.detach()}

    def evaluate(self, model, batch: Batch, generator=None, final: bool = False):
        return {"dsm_loss": self._per_example(model, batch, generator)}
