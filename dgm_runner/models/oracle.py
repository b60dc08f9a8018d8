"""An exact diffusion "model" for Gaussian data, used to check samplers, losses and
likelihoods against closed forms (and available to users checking their own samplers)."""

from __future__ import annotations

from typing import Literal

import torch

from dgm_runner.models.score import DiffusionModel
from dgm_runner.sdes import SDE, bcast


class GaussianOracle(DiffusionModel):
    """Data ``x_0 ~ N(mu, s^2 I)`` in ``d`` dimensions under the process ``sde``: every
    marginal is Gaussian, ``x_t ~ N(alpha mu, (alpha^2 s^2 + sigma^2) I)``, so the exact
    noise prediction is ``E[eps | x_t] = sigma (x_t - alpha mu) / (alpha^2 s^2 + sigma^2)``
    and the exact score ``-(x_t - alpha mu) / (alpha^2 s^2 + sigma^2)``.

    The exact velocity (``parameterization="velocity"``): with ``V(t) = alpha^2 s^2 +
    sigma^2`` the flow ``x_t = alpha mu + sqrt(V) z`` (``z ~ N(0, I)`` fixed) carries every
    marginal, so ``E[d x_t / dt | x_t] = alpha' mu + V' / (2 V) (x_t - alpha mu)`` with
    ``V' = 2 alpha alpha' s^2 + d sigma^2 / dt``. Under the linear path
    (:class:`~dgm_runner.sdes.LinearPath`, ``alpha = 1 - t``,
    ``sigma = sigma_min + (1 - sigma_min) t``) this is
    ``-mu + ((1 - sigma_min) sigma - (1 - t) s^2) (x_t - (1 - t) mu) / V``, finite at
    ``t = 1`` (``V = 1``) and at ``t = 0``.

    Args:
        sde: the diffusion process.
        mu: ``(d,)`` data mean (model space); std: data std ``s``.
        perturb: added to the exact prediction, the noise's or the velocity's (tests that
            losses rise off the optimum).
        parameterization: ``noise`` (:meth:`predict_noise` is the closed form above; the
            velocity follows through ``f x - g^2 score / 2``) or ``velocity``
            (:meth:`predict_velocity` is the closed form; the noise and ``x_0`` follow
            through :meth:`~dgm_runner.sdes.SDE.noise_and_x0_from_velocity`).
    """

    def __init__(
        self,
        sde: SDE,
        mu: torch.Tensor,
        std: float,
        perturb: float = 0.0,
        parameterization: Literal["noise", "velocity"] = "noise",
    ) -> None:
        super().__init__()
        if parameterization not in ("noise", "velocity"):
            raise ValueError(
                f"parameterization must be noise or velocity, got {parameterization!r}"
            )
        self.sde = sde
        self.register_buffer("mu", mu.float())
        self.std, self.perturb = float(std), float(perturb)
        self.image_shape = tuple(mu.shape)
        self.parameterization = parameterization

    def predict_noise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(B, d)`` states at ``(B,)`` times -> exact ``E[eps | x_t]`` (+ ``perturb``);
        derived from :meth:`predict_velocity` when ``parameterization="velocity"``."""
        if self.parameterization == "velocity":
            return super().predict_noise(x, t)
        alpha, sigma = bcast(self.sde.alpha(t), x), bcast(self.sde.sigma(t), x)
        var = alpha**2 * self.std**2 + sigma**2
        return sigma * (x - alpha * self.mu) / var + self.perturb

    def exact_velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(B, d)`` states at ``(B,)`` times -> the closed-form ``E[d x_t / dt | x_t]``
        (class docstring), without ``perturb``."""
        a, da = bcast(self.sde.alpha(t), x), bcast(self.sde.dalpha_dt(t), x)
        var = a**2 * self.std**2 + bcast(self.sde.sigma(t), x) ** 2
        dvar = 2.0 * a * da * self.std**2 + bcast(self.sde.dsigma2_dt(t), x)
        return da * self.mu + dvar / (2.0 * var) * (x - a * self.mu)

    def predict_velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(B, d)`` states at ``(B,)`` times -> exact velocity (+ ``perturb``)
        (``parameterization="velocity"`` only).

        Raises:
            NotImplementedError: a noise-parameterised oracle (use :meth:`velocity`).
        """
        if self.parameterization != "velocity":
            return super().predict_velocity(x, t)
        return self.exact_velocity(x, t) + self.perturb

    def log_density(self, x0: torch.Tensor) -> torch.Tensor:
        """``(B,)`` exact ``log N(x0; mu, s^2 I)`` in nats."""
        d = x0.shape[1]
        return -0.5 * ((x0 - self.mu) ** 2).sum(1) / self.std**2 - 0.5 * d * torch.log(
            torch.tensor(2 * torch.pi * self.std**2)
        )


class ConditionalGaussianOracle(GaussianOracle):
    """A class-conditional exact model for classifier-free guidance: class ``c`` of ``K``
    has data ``N(mu_c, s^2 I)`` and the null class (index ``K``) ``N(mu_null, s^2 I)``,
    all with the same ``s``. Its network (:meth:`net`) is the exact prediction of
    :class:`GaussianOracle` with the mean of each example's label, so
    :meth:`~dgm_runner.models.score.DiffusionModel.network` guides it as it guides a U-Net.

    Closed form of guidance (Ho & Salimans 2022, Eq. 6): both exact predictions are affine
    in the mean with the same coefficients (the variances are equal), so
    ``(1 + w) F(mu_c) - w F(mu_null) = F(m_w)`` with ``m_w = mu_c + w (mu_c - mu_null)``:
    at every ``t`` the guided model is the exact model of ``N(m_w, s^2 I)``, which is also
    the tilted density ``p(x | c)^(1 + w) / p_null(x)^w`` normalised (a product of
    Gaussian powers with one variance). Every guided sampler must therefore draw
    ``N(m_w, s^2 I)`` (tests/test_guidance.py). With unequal variances the tilted
    densities of different ``t`` are not one diffusion, and guidance does not sample the
    tilted data density (Chidambaram et al. 2024): not claimed here.

    Args:
        sde: the diffusion process.
        means: ``(K, d)`` class means (model space); null_mean: ``(d,)`` the null class's.
        std: the common std ``s``.
        parameterization: ``noise`` or ``velocity`` (:class:`GaussianOracle`).
    """

    def __init__(
        self,
        sde: SDE,
        means: torch.Tensor,
        null_mean: torch.Tensor,
        std: float,
        parameterization: Literal["noise", "velocity"] = "noise",
    ) -> None:
        super().__init__(sde, null_mean, std, parameterization=parameterization)
        if means.dim() != 2 or means.shape[1] != null_mean.numel():
            raise ValueError(f"means must be (K, {null_mean.numel()}), got {tuple(means.shape)}")
        self.register_buffer("means", torch.cat([means.float(), null_mean.float()[None]]))
        self.n_classes = means.shape[0]

    def net(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``(B, d)`` states, ``(B,)`` times, ``(B,)`` labels in ``[0, K]`` -> the exact
        noise (or velocity) prediction for the mean of each example's class."""
        mu = self.means[labels]
        a = bcast(self.sde.alpha(t), x)
        var = a**2 * self.std**2 + bcast(self.sde.sigma(t), x) ** 2
        if self.parameterization == "noise":
            return bcast(self.sde.sigma(t), x) * (x - a * mu) / var
        da = bcast(self.sde.dalpha_dt(t), x)
        dvar = 2.0 * a * da * self.std**2 + bcast(self.sde.dsigma2_dt(t), x)
        return da * mu + dvar / (2.0 * var) * (x - a * mu)

    def predict_noise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The (guided) exact noise prediction; derived from the velocity for
        ``parameterization="velocity"``."""
        if self.parameterization == "velocity":
            return DiffusionModel.predict_noise(self, x, t)
        return self.network(x, t)

    def predict_velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The (guided) exact velocity (``parameterization="velocity"`` only).

        Raises:
            NotImplementedError: a noise-parameterised oracle.
        """
        if self.parameterization != "velocity":
            return DiffusionModel.predict_velocity(self, x, t)
        return self.network(x, t)
