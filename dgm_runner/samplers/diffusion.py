"""Few-step samplers for diffusion models (:class:`dgm_runner.models.score.DiffusionModel`):
DDPM ancestral sampling, DDIM, and the probability-flow ODE with Heun's method on the EDM
time grid. They work for every process of :mod:`dgm_runner.sdes` (VE, VP, discrete DDPM,
EDM), since each is written through ``alpha(t)`` and ``sigma(t)`` only, take a
``torch.Generator``, return images in data space (``model.decode``) and count their
network evaluations in ``nfe``.

Time grids: DDPM and DDIM step through ``model.sde.time_grid(steps, t_min)`` (uniform in t;
a discrete DDPM's evenly spaced integer steps) and end with a last step to the data (the
denoised estimate), so ``NFE = steps``. Heun uses the EDM grid (Karras et al. 2022, Eq. 5)
in the noise level ``sigma_hat = sigma / alpha``: ``NFE = 2 steps - 1``.
"""

from __future__ import annotations

import torch

from dgm_runner.config import PositiveFloat, Steps, UnitInterval
from dgm_runner.models.checks import require
from dgm_runner.models.score import DiffusionModel
from dgm_runner.progress import track
from dgm_runner.samplers.base import Sampler
from dgm_runner.sdes import bcast, gaussian_posterior


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a parameter-free oracle)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


class _GridSampler(Sampler):
    """Shared by DDPM and DDIM: steps through ``sde.time_grid(steps, t_min)``; ``clip``
    clamps the denoised estimate to the data range of model space (Ho et al.'s code)."""

    name = "diffusion"

    def __init__(self, steps: Steps, t_min: PositiveFloat, clip: bool) -> None:
        self.steps, self.t_min, self.clip = steps, t_min, clip
        self.nfe = 0

    def check_model(self, model: torch.nn.Module) -> None:
        require(model, DiffusionModel, f"sampler '{self.name}'")
        model.sde.time_grid(self.steps, self.t_min)  # ValueError: steps outside a discrete DDPM

    def _predict(
        self, model: DiffusionModel, x: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.nfe += 1
        eps_hat, x0 = model.predict_noise_and_x0(x, t)
        if self.clip:
            x0 = x0.clamp(-1.0, 1.0) if model.centered else x0.clamp(0.0, 1.0)
            eps_hat = (x - bcast(model.sde.alpha(t), x) * x0) / bcast(model.sde.sigma(t), x)
        return eps_hat, x0

    def update(self, model, x, eps_hat, x0, t, s, generator) -> torch.Tensor:
        """``x_s`` from ``x_t`` and the predictions at t (per sampler)."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, model: DiffusionModel, n: int, generator: torch.Generator) -> torch.Tensor:
        """``(n, *model.image_shape)`` samples in data space; sets ``self.nfe = steps``."""
        device = model_device(model)
        self.nfe = 0
        x = model.sde.prior_sample((n, *model.image_shape), generator, device)
        grid = model.sde.time_grid(self.steps, self.t_min, device)
        for i in track(range(len(grid)), f"{self.name} steps ({n} samples)", unit="step"):
            t = grid[i].expand(n)
            eps_hat, x0 = self._predict(model, x, t)
            if i == len(grid) - 1:
                x = x0  # the last step goes to the data: the denoised estimate
            else:
                x = self.update(model, x, eps_hat, x0, t, grid[i + 1].expand(n), generator)
        return model.decode(x)


class DDPMAncestral(_GridSampler):
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2): ``x_s ~ q(x_s | x_t, x0_hat)``,
    the Gaussian posterior of :func:`gaussian_posterior` at the predicted ``x_0``
    (variance ``beta_tilde``, Ho et al.'s ``sigma_t^2 = beta_tilde_t`` choice); with a
    discrete DDPM and ``steps = N`` this is Alg. 2 exactly (its last step returns the mean,
    i.e. the denoised estimate), with fewer steps it is the respaced sampler of Nichol &
    Dhariwal (2021, Sec. 4). ``NFE = steps``.

    Args:
        steps: number of network evaluations (= time steps).
        t_min: last time of a continuous process (discrete: step 1).
        clip: clamp predicted ``x_0`` to the data range.
    """

    name = "ddpm"

    def __init__(
        self, steps: Steps = 1000, t_min: PositiveFloat = 1e-3, clip: bool = False
    ) -> None:
        super().__init__(steps, t_min, clip)

    def update(self, model, x, eps_hat, x0, t, s, generator):
        a, b, v = gaussian_posterior(model.sde, t, s)
        z = torch.randn(x.shape, generator=generator, device=x.device)
        return bcast(a, x) * x + bcast(b, x) * x0 + bcast(v.sqrt(), x) * z


class DDIM(_GridSampler):
    """DDIM (Song, Meng & Ermon 2021, Eq. 12), written for any ``alpha, sigma``:
    ``x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z`` with
    ``c = eta sqrt(v)``, ``v`` the posterior variance of :func:`gaussian_posterior`
    (their Eq. 16). ``eta = 0`` is deterministic given the initial noise (the DDIM ODE);
    ``eta = 1`` is DDPM ancestral sampling. ``NFE = steps``.

    Args:
        steps: number of network evaluations (= time steps).
        eta: stochasticity in [0, 1].
        t_min: last time of a continuous process.
        clip: clamp predicted ``x_0`` to the data range.
    """

    name = "ddim"

    def __init__(
        self,
        steps: Steps = 50,
        eta: UnitInterval = 0.0,
        t_min: PositiveFloat = 1e-3,
        clip: bool = False,
    ) -> None:
        super().__init__(steps, t_min, clip)
        self.eta = eta

    def update(self, model, x, eps_hat, x0, t, s, generator):
        _, _, v = gaussian_posterior(model.sde, t, s)
        c = self.eta * v.sqrt()
        out = (
            bcast(model.sde.alpha(s), x) * x0
            + bcast((model.sde.sigma(s) ** 2 - c**2).clamp_min(0).sqrt(), x) * eps_hat
        )
        if self.eta > 0:
            out = out + bcast(c, x) * torch.randn(x.shape, generator=generator, device=x.device)
        return out


def edm_sigma_grid(
    steps: int, sigma_min: float, sigma_max: float, rho: float, device=None
) -> torch.Tensor:
    """``(steps + 1,)`` noise levels of Karras et al. (2022, Eq. 5):
    ``(sigma_max^(1/rho) + i / (steps - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``
    for ``i < steps``, then 0. Raises ValueError for ``steps < 1`` or a bad range."""
    if steps < 1 or not 0 < sigma_min <= sigma_max:
        raise ValueError(
            "EDM grid needs steps >= 1 and 0 < sigma_min <= sigma_max, "
            f"got {steps}, {sigma_min}, {sigma_max}"
        )
    i = torch.arange(steps, dtype=torch.float64)
    frac = i / max(steps - 1, 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sig = (hi + frac * (lo - hi)) ** rho
    return torch.cat([sig, torch.zeros(1, dtype=torch.float64)]).float().to(device)


class HeunODE(Sampler):
    """The probability-flow ODE
    ``d x_hat / d sigma_hat = (x_hat - D(x_hat; sigma_hat)) / sigma_hat``
    in the rescaled state ``x_hat = x / alpha`` (Karras et al. 2022, Eq. 3-4) solved with
    Heun's 2nd-order method on their rho-grid (Alg. 1, deterministic: S_churn = 0), from
    ``sigma_hat(T)`` down to ``sigma_hat(max(t_min, sde.t_min))`` and a last Euler step to 0.
    ``D`` is the model's denoiser at ``t = sde.t_of_sigma_hat(sigma_hat)`` (a discrete DDPM
    is evaluated between its integer steps). Deterministic given the initial noise.
    ``NFE = 2 steps - 1``.

    Args:
        steps: number of noise levels N (Karras et al.: 18 -> 35 NFE).
        rho: grid exponent (7).
        t_min: last time of a continuous process.
    """

    name = "heun"

    def __init__(
        self, steps: Steps = 18, rho: PositiveFloat = 7.0, t_min: PositiveFloat = 1e-3
    ) -> None:
        self.steps, self.rho, self.t_min = steps, rho, t_min
        self.nfe = 0

    def check_model(self, model: torch.nn.Module) -> None:
        require(model, DiffusionModel, "sampler 'heun'")

    def _d(
        self, model: DiffusionModel, x_hat: torch.Tensor, sigma_hat: torch.Tensor
    ) -> torch.Tensor:
        """``(x_hat - D) / sigma_hat``: the ODE's slope at one noise level (one NFE)."""
        self.nfe += 1
        s = sigma_hat.expand(x_hat.shape[0])
        t = model.sde.t_of_sigma_hat(s)
        alpha = bcast(model.sde.alpha(t), x_hat)
        x0 = model.denoise(alpha * x_hat, t)
        return (x_hat - x0) / bcast(s, x_hat)

    @torch.no_grad()
    def sample(self, model: DiffusionModel, n: int, generator: torch.Generator) -> torch.Tensor:
        """``(n, *model.image_shape)`` samples in data space; sets ``self.nfe = 2 steps - 1``."""
        device = model_device(model)
        self.nfe = 0
        sde = model.sde
        t_hi = torch.full((1,), sde.T, device=device)
        t_lo = torch.full((1,), max(self.t_min, sde.t_min), device=device)
        sigmas = edm_sigma_grid(
            self.steps, float(sde.sigma_hat(t_lo)), float(sde.sigma_hat(t_hi)), self.rho, device
        )
        x = sde.prior_sample((n, *model.image_shape), generator, device) / sde.alpha(t_hi)
        for i in track(range(self.steps), f"heun steps ({n} samples)", unit="step"):
            s_cur, s_next = sigmas[i], sigmas[i + 1]
            d = self._d(model, x, s_cur)
            x_next = x + (s_next - s_cur) * d
            if s_next > 0:  # Heun's correction (Alg. 1, lines 7-8)
                x_next = x + (s_next - s_cur) * 0.5 * (d + self._d(model, x_next, s_next))
            x = x_next
        return model.decode(x)
