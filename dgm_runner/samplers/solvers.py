"""Higher-order and adaptive solvers for diffusion and flow-matching models
(:class:`dgm_runner.models.score.DiffusionModel`), beside those of
:mod:`dgm_runner.samplers.diffusion`:

- :class:`DPMSolverPP2M` (``sampler=dpmpp_2m``): DPM-Solver++(2M), the multistep
  second-order data-prediction solver (Lu et al. 2022, "DPM-Solver++", Alg. 2), on the
  Karras et al. (2022, Eq. 5) grid of ``sampler=heun``. ``NFE = steps``.
- :class:`EulerAncestral` (``sampler=euler_ancestral``): k-diffusion's
  ``sample_euler_ancestral``: an Euler step in the noise level down to ``sigma_down``, then
  fresh noise of std ``sigma_up``, on the same grid. ``NFE = steps``.
- :class:`RK45ODE` (``sampler=rk45``): the probability-flow ODE ``dx/dt = velocity(x, t)``
  with SciPy's adaptive Dormand-Prince RK45 (``scipy.integrate.solve_ivp``). NFE: its
  ``nfev``.

The first two work in the rescaled state ``x_hat = x / alpha`` and the noise level
``sigma_hat = sigma / alpha`` (Karras et al. 2022, Eq. 4: ``x_hat = x_0 + sigma_hat eps``,
the variance-exploding form k-diffusion samples in), with the denoiser
``D(x_hat; sigma_hat) = model.denoise(alpha x_hat, t)`` at ``t = sde.t_of_sigma_hat``; they
refuse processes whose ``sigma_hat(T)`` is infinite (the linear path, ``alpha(1) = 0``:
use ``sampler=ode`` or ``sampler=rk45``). A velocity-parameterised model on VE, VP or EDM
works through ``denoise``.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from scipy.integrate import solve_ivp

from dgm_runner.config import NonNegativeFloat, PositiveFloat, Steps
from dgm_runner.models.checks import require
from dgm_runner.models.score import DiffusionModel
from dgm_runner.progress import track
from dgm_runner.samplers.base import Sampler
from dgm_runner.samplers.diffusion import HeunODE, check_start, model_device
from dgm_runner.sdes import bcast


class _SigmaHatSampler(Sampler):
    """Shared by :class:`DPMSolverPP2M` and :class:`EulerAncestral`: the Karras grid of
    :class:`~dgm_runner.samplers.diffusion.HeunODE` (same options, same levels) and the
    denoiser in the rescaled state ``x_hat = x / alpha``."""

    name = "sigma_hat"

    def __init__(self, steps: int, rho: float, t_min: float, sigma_min: Optional[float]) -> None:
        self.steps, self.rho, self.t_min, self.sigma_min = steps, rho, t_min, sigma_min
        self.nfe = 0

    #: ``(steps + 1,)`` noise levels ``sigma_hat``: the grid of ``sampler=heun``
    #: (:meth:`HeunODE.sigmas <dgm_runner.samplers.diffusion.HeunODE.sigmas>`, the same options).
    sigmas = HeunODE.sigmas

    def check_model(self, model: torch.nn.Module) -> None:
        """TypeError: not a diffusion model; ValueError (one line): ``sigma_hat(T)``
        infinite (the linear path) or ``sigma_min`` not below ``sigma_hat(T)``."""
        require(model, DiffusionModel, f"sampler '{self.name}'")
        if not math.isfinite(float(model.sde.sigma_hat(torch.full((1,), model.sde.T)))):
            raise ValueError(
                f"sampler '{self.name}' steps in sigma_hat = sigma / alpha, infinite at t = T "
                f"for {type(model.sde).__name__} (alpha(T) = 0): use sampler=ode or "
                "sampler=rk45 (in t)"
            )
        self.sigmas(model)

    def _denoise(
        self, model: DiffusionModel, x_hat: torch.Tensor, sigma_hat: torch.Tensor
    ) -> torch.Tensor:
        """``(B, ...)`` ``D(x_hat; sigma_hat)``, the ``x_0`` estimate at the level
        ``sigma_hat`` (0-dim) from the rescaled state ``x_hat`` ``(B, ...)``; one NFE."""
        self.nfe += 1
        t = model.sde.t_of_sigma_hat(sigma_hat.expand(x_hat.shape[0]))
        return model.denoise(bcast(model.sde.alpha(t), x_hat) * x_hat, t)

    def _start(
        self, model: DiffusionModel, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_hat, sigmas)``: ``(n, *image_shape)`` prior noise divided by ``alpha(T)``
        and the ``(steps + 1,)`` grid; resets ``nfe``."""
        device = model_device(model)
        self.nfe = 0
        sde = model.sde
        x = sde.prior_sample((n, *model.image_shape), generator, device)
        return x / sde.alpha(torch.full((1,), sde.T, device=device)), self.sigmas(model, device)


class DPMSolverPP2M(_SigmaHatSampler):
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2): the multistep
    second-order solver of the probability-flow ODE in its data-prediction form, here in
    the rescaled state ``x_hat = x / alpha`` with the log-SNR ``lambda = -log sigma_hat``
    (the rescaled process has ``alpha_hat = 1``). On the grid ``sigma_0 > ... > sigma_N = 0``
    (:meth:`sigmas`, Karras et al.'s Eq. 5 as ``sampler=heun``), with ``D_i = D(x_i;
    sigma_i)`` and ``h_i = log(sigma_i / sigma_{i+1})``:

    - ``x_{i+1} = (sigma_{i+1} / sigma_i) x_i + (1 - sigma_{i+1} / sigma_i) Dbar_i``
      (Alg. 2's ``sigma_{i+1}/sigma_i x_i - alpha_{i+1} (e^{-h_i} - 1) Dbar_i``),
    - ``Dbar_i = (1 + 1 / (2 r_i)) D_i - 1 / (2 r_i) D_{i-1}``, ``r_i = h_{i-1} / h_i``;
      the first step uses ``Dbar_0 = D_0`` (first order: DPM-Solver++(1), i.e. DDIM),
    - the last step to ``sigma_N = 0`` returns ``D_{N-1}`` (first order, ``h = inf``).

    Compared with k-diffusion's ``sample_dpmpp_2m`` (crowsonkb/k-diffusion,
    ``k_diffusion/sampling.py``) line by line: same ``t = -log sigma``, ``h = t_next - t``,
    ``r = h_last / h``, same ``denoised_d = (1 + 1/(2r)) denoised - 1/(2r) old_denoised``,
    same update ``(sigma_next / sigma) x - expm1(-h) denoised_d`` (here written as
    ``1 - sigma_next / sigma``, equal), same first-order first step and first-order last step
    to 0 (k-diffusion reaches ``x = denoised`` through ``expm1(-inf) = -1``; here returned
    directly, identical). Differences: k-diffusion works in the VE state ``x`` with the
    denoiser called at ``sigma``; here the same in ``x_hat = x / alpha`` with ``D`` at
    ``t = sde.t_of_sigma_hat(sigma)`` (for EDM the two coincide), so VP/VE/discrete DDPM
    models run unchanged. Deterministic given the initial noise. ``NFE = steps``.

    Args:
        steps: number of noise levels N = network evaluations.
        rho: grid exponent (7).
        t_min: the grid's lowest non-zero level is ``sigma_hat(max(t_min, sde.t_min))``.
        sigma_min: that level itself instead (``0.002``: Karras et al.'s grid); ``None``:
            from ``t_min``.

    Raises:
        ValueError: (:meth:`check_model`) ``sigma_hat(T)`` infinite (the linear path: use
            ``sampler=ode`` or ``sampler=rk45``) or ``sigma_min`` not below it.
    """

    name = "dpmpp_2m"

    def __init__(
        self,
        steps: Steps = 20,
        rho: PositiveFloat = 7.0,
        t_min: PositiveFloat = 1e-3,
        sigma_min: Optional[PositiveFloat] = None,
        guidance: NonNegativeFloat = 0.0,
    ) -> None:
        self.guidance = guidance
        super().__init__(steps, rho, t_min, sigma_min)

    @torch.no_grad()
    def sample(self, model: DiffusionModel, n: int, generator: torch.Generator) -> torch.Tensor:
        """``(n, *model.image_shape)`` samples in data space; sets ``self.nfe = steps``."""
        x, sigmas = self._start(model, n, generator)
        sig = sigmas.double().tolist()
        old = None
        for i in track(range(self.steps), f"dpmpp_2m steps ({n} samples)", unit="step"):
            denoised = self._denoise(model, x, sigmas[i])
            s, s_next = sig[i], sig[i + 1]
            if s_next == 0.0:
                x = denoised  # the last step to sigma = 0: the denoised estimate
                break
            d_bar = denoised
            if old is not None:
                r = math.log(sig[i - 1] / s) / math.log(s / s_next)  # h_{i-1} / h_i
                d_bar = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old
            x = (s_next / s) * x + (1 - s_next / s) * d_bar
            old = denoised
        return model.decode(x)


class EulerAncestral(_SigmaHatSampler):
    """Ancestral sampling with Euler steps in the noise level (k-diffusion's
    ``sample_euler_ancestral``, crowsonkb/k-diffusion ``k_diffusion/sampling.py``), in the
    rescaled state ``x_hat = x / alpha`` on the Karras grid (:meth:`sigmas`). From
    ``sigma = sigma_i`` to ``sigma_next = sigma_{i+1}`` (``get_ancestral_step``):

    - ``sigma_up = min(sigma_next, eta sqrt(sigma_next^2 (sigma^2 - sigma_next^2) /
      sigma^2))``, ``sigma_down = sqrt(sigma_next^2 - sigma_up^2)``;
    - ``x_hat <- x_hat + (sigma_down - sigma) (x_hat - D(x_hat; sigma)) / sigma`` (Euler
      on ``d x_hat / d sigma = (x_hat - D) / sigma``, Karras et al. 2022, Eq. 4);
    - ``x_hat <- x_hat + sigma_up z``, ``z ~ N(0, I)`` from the sampler's generator (not
      drawn when ``sigma_up = 0``: ``eta = 0`` or the last step to 0, which returns ``D``).

    ``eta = 1``: the ancestral (DDPM-like) step; ``eta = 0``: the deterministic Euler method
    in ``sigma_hat``. ``NFE = steps``.

    Args:
        steps: number of noise levels N = network evaluations.
        eta: the fraction of the ancestral noise (1; k-diffusion's ``eta``).
        rho, t_min, sigma_min: the grid, as :class:`DPMSolverPP2M`.

    Raises:
        ValueError: (:meth:`check_model`) ``sigma_hat(T)`` infinite (the linear path) or
            ``sigma_min`` not below it.
    """

    name = "euler_ancestral"

    def __init__(
        self,
        steps: Steps = 50,
        eta: NonNegativeFloat = 1.0,
        rho: PositiveFloat = 7.0,
        t_min: PositiveFloat = 1e-3,
        sigma_min: Optional[PositiveFloat] = None,
        guidance: NonNegativeFloat = 0.0,
    ) -> None:
        self.guidance = guidance
        super().__init__(steps, rho, t_min, sigma_min)
        self.eta = eta

    @torch.no_grad()
    def sample(self, model: DiffusionModel, n: int, generator: torch.Generator) -> torch.Tensor:
        """``(n, *model.image_shape)`` samples in data space; sets ``self.nfe = steps``."""
        x, sigmas = self._start(model, n, generator)
        sig = sigmas.double().tolist()
        for i in track(range(self.steps), f"euler_ancestral steps ({n} samples)", unit="step"):
            denoised = self._denoise(model, x, sigmas[i])
            s, s_next = sig[i], sig[i + 1]
            up = min(s_next, self.eta * math.sqrt(s_next**2 * (s**2 - s_next**2) / s**2))
            down = math.sqrt(max(s_next**2 - up**2, 0.0))
            x = x + (down - s) * (x - denoised) / s
            if up > 0:
                x = x + up * torch.randn(x.shape, generator=generator, device=x.device)
        return model.decode(x)


class RK45ODE(Sampler):
    """The probability-flow ODE ``dx/dt = model.velocity(x, t)`` (Song et al. 2021, Eq. 13;
    a flow-matching model's velocity field) from the prior at ``t = T`` to
    ``t_end = max(t_min, sde.t_min)``, solved by ``scipy.integrate.solve_ivp(method="RK45")``
    (Dormand & Prince 1980, adaptive steps under ``rtol``, ``atol``) on the flattened batch
    in float64, as :func:`~dgm_runner.metrics.likelihood.pf_ode_log_likelihood` does. Returns
    the state at ``t_end`` (no denoising step, as ``sampler=ode``). Each of solve_ivp's
    ``nfev`` right-hand-side calls is one network evaluation on the whole batch:
    ``nfe = nfev`` (depends on the batch, since the step control is over all of it).
    Deterministic given the initial noise.

    A noise-predicting model on a process with ``alpha(T) = 0`` (the linear path) is
    refused (:func:`~dgm_runner.samplers.diffusion.check_start`). RK45 evaluates the
    velocity at ``t_end`` itself (its last stage), so a noise model on a process with
    ``sigma(0) = 0`` (VP) cannot end at 0: the default ``t_min`` picks the end.

    Args:
        rtol, atol: solve_ivp's tolerances (1e-5 each).
        t_min: the last time (at least the process's ``t_min``); ``None`` (default): 0 where
            the velocity is defined there (a velocity-parameterised model, or
            ``sigma(0) > 0``: VE, EDM, the linear path), else ``1e-3`` (a noise model on VP).

    Raises:
        RuntimeError: solve_ivp fails (its message).
    """

    name = "rk45"

    def __init__(
        self,
        rtol: PositiveFloat = 1e-5,
        atol: PositiveFloat = 1e-5,
        t_min: Optional[NonNegativeFloat] = None,
        guidance: NonNegativeFloat = 0.0,
    ) -> None:
        self.guidance = guidance
        self.rtol, self.atol, self.t_min = rtol, atol, t_min
        self.nfe = 0

    def describe(self) -> str:
        return f"rk45 (rtol {self.rtol:g}, atol {self.atol:g})"

    def t_end(self, model: DiffusionModel) -> float:
        """The time the solve ends at for ``model`` (class docstring)."""
        sde = model.sde
        if self.t_min is not None:
            t_min = self.t_min
        elif model.parameterization == "velocity" or float(sde.sigma(torch.zeros(1))) > 0:
            t_min = 0.0
        else:
            t_min = 1e-3
        return max(t_min, sde.t_min)

    def check_model(self, model: torch.nn.Module) -> None:
        """TypeError: not a diffusion model; ValueError (one line): a noise-predicting model
        on the linear path (:func:`check_start`) or ``t_min`` at or beyond ``T``."""
        require(model, DiffusionModel, "sampler 'rk45'")
        check_start(model, "sampler 'rk45'")
        if not self.t_end(model) < model.sde.T:
            raise ValueError(f"sampler 'rk45' needs t_min < T = {model.sde.T}, got {self.t_min}")

    @torch.no_grad()
    def sample(self, model: DiffusionModel, n: int, generator: torch.Generator) -> torch.Tensor:
        """``(n, *model.image_shape)`` samples in data space; sets ``self.nfe`` to
        solve_ivp's ``nfev``."""
        device = model_device(model)
        self.nfe = 0
        shape = (n, *model.image_shape)
        x = model.sde.prior_sample(shape, generator, device)
        dtype = x.dtype

        def rhs(t: float, y: np.ndarray) -> np.ndarray:
            self.nfe += 1
            xt = torch.from_numpy(y).reshape(shape).to(device=device, dtype=dtype)
            tt = torch.full((n,), t, device=device, dtype=dtype)
            return model.velocity(xt, tt).double().cpu().numpy().ravel()

        y0 = x.double().cpu().numpy().ravel()
        span = (float(model.sde.T), self.t_end(model))
        sol = solve_ivp(rhs, span, y0, method="RK45", rtol=self.rtol, atol=self.atol)
        if not sol.success:
            raise RuntimeError(f"sampler 'rk45': solve_ivp failed: {sol.message}")
        self.nfe = int(sol.nfev)
        out = torch.from_numpy(sol.y[:, -1]).reshape(shape).to(device=device, dtype=dtype)
        return model.decode(out)
