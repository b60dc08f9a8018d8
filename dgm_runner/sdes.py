"""Forward SDEs of score-based generative models (Song et al. 2021, "Score-Based Generative
Modeling through Stochastic Differential Equations", sec. 3.4 and Appendix B), shared by
the continuous DSM objective and the reverse-SDE samplers.

``dx = f(x, t) dt + g(t) dw`` on t in [0, T], T = 1. Shapes: ``x`` is ``(B, ...)``,
``t`` is ``(B,)``; broadcasting over the trailing dimensions is handled here.
"""

from __future__ import annotations

import math

import torch


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(B,)`` -> ``(B, 1, ..., 1)`` to multiply ``x``."""
    return v.reshape(-1, *([1] * (x.ndim - 1)))


class SDE:
    """Interface: ``drift``, ``diffusion``, ``marginal`` (of x_t given x_0), ``prior_sample``."""

    T: float = 1.0

    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``f(x, t)``, same shape as x."""
        raise NotImplementedError

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """``g(t)``, ``(B,)``."""
        raise NotImplementedError

    def marginal(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``(B, ...)`` and std ``(B,)`` of the Gaussian ``p_t(x_t | x_0)``."""
        raise NotImplementedError

    def prior_sample(self, shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """Draw from the prior ``p_T`` the reverse SDE starts from."""
        raise NotImplementedError


class VESDE(SDE):
    """Variance exploding: ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``, ``f = 0``,
    ``g(t) = sigma(t) sqrt(2 log(sigma_max / sigma_min))`` (Song et al. 2021, Eq. 30);
    ``p_t(x_t|x_0) = N(x_0, sigma(t)^2 I)`` (the sigma_min^2 offset is dropped as there),
    prior ``N(0, sigma_max^2 I)``."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"VE SDE needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """``(B,)`` noise level at time t."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))

    def marginal(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x0, self.sigma(t)

    def prior_sample(self, shape, generator, device) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=device) * self.sigma_max


class VPSDE(SDE):
    """Variance preserving: ``beta(t) = beta_min + t (beta_max - beta_min)``,
    ``f = -beta(t) x / 2``, ``g = sqrt(beta(t))`` (Song et al. 2021, Eq. 32-33); the
    marginal has mean ``exp(c(t)) x_0`` and variance ``1 - exp(2 c(t))`` with
    ``c(t) = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2``; prior ``N(0, I)``."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if not 0 < beta_min < beta_max:
            raise ValueError(f"VP SDE needs 0 < beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = beta_min, beta_max

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """``(B,)`` beta(t)."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -0.5 * _bcast(self.beta(t), x) * x

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(self.beta(t))

    def marginal(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
        return _bcast(torch.exp(c), x0) * x0, torch.sqrt(1.0 - torch.exp(2.0 * c))

    def prior_sample(self, shape, generator, device) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=device)


def make_sde(kind: str, sigma_min: float, sigma_max: float, beta_min: float, beta_max: float) -> SDE:
    """``"ve"`` -> :class:`VESDE`, ``"vp"`` -> :class:`VPSDE`; raises ValueError otherwise."""
    if kind == "ve":
        return VESDE(sigma_min, sigma_max)
    if kind == "vp":
        return VPSDE(beta_min, beta_max)
    raise ValueError(f"unknown SDE {kind!r}: use ve or vp")
