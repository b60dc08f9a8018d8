"""Few-step samplers for diffusion models (:class:`dgm_runner.models.score.DiffusionModel`):
DDPM ancestral sampling, DDIM, the probability-flow ODE with Heun's method on the EDM
time grid, and an ODE solver in t (Euler, midpoint, Heun) for the velocity of any model,
flow matching's included. They work for every process of :mod:`dgm_runner.sdes` (VE, VP,
discrete DDPM, EDM, the linear path), since each is written through ``alpha(t)`` and
``sigma(t)`` only, take a ``torch.Generator``, return images in data space
(``model.decode``) and count their network evaluations in ``nfe``.

Time grids: DDPM and DDIM step through ``model.sde.time_grid(steps, t_min)`` (uniform in t;
a discrete DDPM's evenly spaced integer steps) and end with a last step to the data (the
denoised estimate), so ``NFE = steps``. Heun uses the EDM grid (Karras et al. 2022, Eq. 5)
in the noise level ``sigma_hat = sigma / alpha``: ``NFE = 2 steps - 1``. The ODE solver
(:class:`ProbabilityFlowODE`) steps through :func:`ode_time_grid` (uniform, rho or logit
spacing in t); its NFE is in its docstring.

The linear path has ``alpha(T) = 0``: a noise-predicting model cannot give ``x_0`` (or its
velocity) there, so every sampler here refuses that pair in ``check_model``; a
velocity-parameterised model runs with DDPM, DDIM and the ODE solver, and the Heun
sampler on the EDM grid, which needs a finite ``sigma_hat(T)``, refuses the process.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Optional

import torch

from dgm_runner.config import NonNegativeFloat, PositiveFloat, Range, Steps, UnitInterval
from dgm_runner.models.checks import require
from dgm_runner.models.score import DiffusionModel
from dgm_runner.progress import track
from dgm_runner.samplers.base import Sampler
from dgm_runner.sdes import bcast, gaussian_posterior


def check_start(model: DiffusionModel, user: str) -> None:
    """Raise ValueError (one line) when a sampler starting at ``t = T`` cannot evaluate
    ``model`` there: a noise-predicting model on a process with ``alpha(T) = 0`` (the
    linear path), whose ``x_0 = (x - sigma eps) / alpha`` and probability-flow velocity are
    0 / 0 at T."""
    alpha_end = float(model.sde.alpha(torch.full((1,), model.sde.T)))
    if alpha_end == 0.0 and model.parameterization != "velocity":
        raise ValueError(
            f"{user} starts at t = T, where {type(model.sde).__name__} has alpha = 0 and a "
            "noise-predicting model gives no x_0 or velocity (0 / 0): train with "
            "model.preconditioning=velocity"
        )


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
        check_start(model, f"sampler '{self.name}'")

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
        self,
        steps: Steps = 1000,
        t_min: PositiveFloat = 1e-3,
        clip: bool = False,
        guidance: NonNegativeFloat = 0.0,
    ) -> None:
        self.guidance = guidance
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
        guidance: NonNegativeFloat = 0.0,
    ) -> None:
        self.guidance = guidance
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
        t_min: last time of a continuous process; the grid's lowest non-zero level is
            ``sigma_hat(max(t_min, sde.t_min))`` (on the EDM process with ``t_min = 1e-3``:
            0.00205, not Karras et al.'s 0.002).
        sigma_min: the grid's lowest non-zero noise level ``sigma_hat`` itself, in place of
            ``t_min`` (``sampler.sigma_min=0.002``: Karras et al.'s grid exactly, Eq. 5 with
            their ``sigma_min``); ``None`` (default): from ``t_min``.

    Raises:
        ValueError: (:meth:`check_model`) ``sigma_min`` not below ``sigma_hat(T)``.
    """

    name = "heun"

    def __init__(
        self,
        steps: Steps = 18,
        rho: PositiveFloat = 7.0,
        t_min: PositiveFloat = 1e-3,
        sigma_min: Optional[PositiveFloat] = None,
        guidance: NonNegativeFloat = 0.0,
    ) -> None:
        self.guidance = guidance
        self.steps, self.rho, self.t_min, self.sigma_min = steps, rho, t_min, sigma_min
        self.nfe = 0

    def sigmas(self, model: DiffusionModel, device=None) -> torch.Tensor:
        """``(steps + 1,)`` the noise levels ``sigma_hat`` this sampler steps through for
        ``model``: :func:`edm_sigma_grid` from ``sigma_hat(T)`` to ``sigma_min`` (or
        ``sigma_hat(max(t_min, sde.t_min))``), then 0."""
        sde = model.sde
        hi = float(sde.sigma_hat(torch.full((1,), sde.T, device=device)))
        if self.sigma_min is None:
            t_lo = torch.full((1,), max(self.t_min, sde.t_min), device=device)
            lo = float(sde.sigma_hat(t_lo))
        else:
            lo = float(self.sigma_min)
        return edm_sigma_grid(self.steps, lo, hi, self.rho, device)

    def check_model(self, model: torch.nn.Module) -> None:
        """TypeError for a model that is not a diffusion model; ValueError for a process
        whose ``sigma_hat(T)`` is infinite (the linear path: use ``sampler=ode``)."""
        require(model, DiffusionModel, "sampler 'heun'")
        if not math.isfinite(float(model.sde.sigma_hat(torch.full((1,), model.sde.T)))):
            raise ValueError(
                f"sampler 'heun' steps in sigma_hat = sigma / alpha, infinite at t = T for "
                f"{type(model.sde).__name__} (alpha(T) = 0): use sampler=ode "
                "sampler.method=heun (a grid in t)"
            )
        self.sigmas(model)  # ValueError: sigma_min at or above sigma_hat(T)

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
        sigmas = self.sigmas(model, device)
        x = sde.prior_sample((n, *model.image_shape), generator, device) / sde.alpha(t_hi)
        for i in track(range(self.steps), f"heun steps ({n} samples)", unit="step"):
            s_cur, s_next = sigmas[i], sigmas[i + 1]
            d = self._d(model, x, s_cur)
            x_next = x + (s_next - s_cur) * d
            if s_next > 0:  # Heun's correction (Alg. 1, lines 7-8)
                x_next = x + (s_next - s_cur) * 0.5 * (d + self._d(model, x_next, s_next))
            x = x_next
        return model.decode(x)


#: ``logit_eps`` of the logit grid: in (0, 1/2).
LogitEps = Annotated[float, Range(gt=0, lt=0.5)]


def rho_spacing(hi: float, lo: float, steps: int, rho: float) -> torch.Tensor:
    """``(steps + 1,)`` float64 values from ``hi`` down to ``lo`` (both >= 0, both ends
    included) uniform in ``value^(1/rho)``: the spacing of Karras et al. (2022, Eq. 5),
    here with ``lo = 0`` allowed."""
    frac = torch.arange(steps + 1, dtype=torch.float64) / steps
    a, b = hi ** (1.0 / rho), lo ** (1.0 / rho)
    return (a + frac * (b - a)) ** rho


def ode_time_grid(
    sde,
    steps: int,
    grid: str,
    t_end: float,
    rho: float = 7.0,
    logit_eps: float = 1e-3,
    device: torch.device | None = None,
) -> torch.Tensor:
    """``(steps + 1,)`` decreasing times from ``sde.T`` to ``t_end`` (both exact), for an ODE
    solver in t.

    - ``uniform``: uniform in t.
    - ``karras``: Karras et al.'s (2022, Eq. 5) rho-spacing of the noise level
      ``sigma_hat = sigma / alpha`` from ``sigma_hat(T)`` to ``sigma_hat(t_end)``, mapped to
      t by ``sde.t_of_sigma_hat`` (for :class:`~dgm_runner.sdes.EDMProcess` with the same rho
      this is its uniform grid). Where ``sigma_hat(T)`` is infinite (the linear path,
      ``alpha(1) = 0``) or ``sigma_hat(t_end) = 0`` (VP or the linear path with
      ``sigma_min = 0`` at ``t_end = 0``, where the inverse map collapses the small levels
      onto 0 in float32) the rho-spacing is taken in t itself (for the linear path with
      ``sigma_min = 0``, ``sigma_hat = t / (1 - t) ~ t`` near the data).
    - ``logit``: uniform in ``logit t`` between ``logit(min(T, 1 - logit_eps))`` and
      ``logit(max(t_end, logit_eps))`` (so infinite ends are cut at ``logit_eps``), the
      ends then set to ``T`` and ``t_end``: steps dense near both ends, the grid that
      matches logit-normal training times (Esser et al. 2024, Sec. 3.1).

    Raises:
        ValueError: ``steps < 1``, an unknown grid, or ``t_end`` outside ``[0, T)``.
    """
    T = float(sde.T)
    if steps < 1:
        raise ValueError(f"an ODE time grid needs at least 1 step, got {steps}")
    if not 0.0 <= t_end < T:
        raise ValueError(f"an ODE time grid needs 0 <= t_end < T = {T}, got {t_end}")
    if grid == "uniform":
        t = torch.linspace(T, t_end, steps + 1, dtype=torch.float64)
    elif grid == "karras":
        ends = sde.sigma_hat(torch.tensor([T, t_end]))
        hi, lo = float(ends[0]), float(ends[1])
        if math.isfinite(hi) and lo > 0:
            sig = rho_spacing(hi, lo, steps, rho)
            t = sde.t_of_sigma_hat(sig.float()).double()
        else:
            t = rho_spacing(T, t_end, steps, rho)
    elif grid == "logit":
        hi, lo = min(T, 1.0 - logit_eps), max(t_end, logit_eps)
        u = torch.linspace(math.log(hi / (1 - hi)), math.log(lo / (1 - lo)), steps + 1)
        t = torch.sigmoid(u.double())
    else:
        raise ValueError(f"unknown ODE time grid {grid!r}: use uniform, karras or logit")
    t[0], t[-1] = T, t_end
    t = torch.minimum(t.clamp(t_end, T), torch.cummin(t.clamp(t_end, T), 0).values)
    return t.float().to(device)


class ProbabilityFlowODE(Sampler):
    """An ODE solver in t for ``dx/dt = model.velocity(x, t)`` (the probability-flow ODE,
    Song et al. 2021, Eq. 13; for a flow-matching model its learned velocity field, Lipman
    et al. 2023, Sec. 3), from the prior ``N(0, prior_std^2 I)`` at ``t = T`` (the process's
    own prior: N(0, I) for the linear path and VP, ``N(0, sigma_max^2 I)`` for VE and EDM)
    down to ``t_end = max(t_min, sde.t_min)``, through :func:`ode_time_grid`; returns the
    state at ``t_end`` (no denoising step: under the linear path with ``sigma_min = 0`` it
    is the data, under EDM it carries noise ``sigma_min = 0.002``). Deterministic given the
    initial noise.

    ``method`` and its network evaluations per sample (``nfe``) for ``steps`` intervals
    ``t_i -> t_{i+1}``, ``h = t_{i+1} - t_i < 0``:

    - ``euler``: ``x + h v(x, t_i)``; NFE = ``steps``.
    - ``midpoint``: ``x + h v(x + h/2 v(x, t_i), t_i + h/2)`` (explicit midpoint, 2nd
      order); NFE = ``2 steps``.
    - ``heun``: ``x + h/2 (v(x, t_i) + v(x_E, t_{i+1}))`` with the Euler point ``x_E``
      (2nd order, Karras et al. 2022, Alg. 1); a last step that ends at ``t = 0`` is left
      an Euler step, as theirs: NFE = ``2 steps - 1`` if ``t_end = 0``, else ``2 steps``.

    A velocity-parameterised model is evaluated at ``t = T`` exactly; a noise-predicting
    model on a process with ``alpha(T) = 0`` (the linear path) is refused in
    :meth:`check_model`. Euler and midpoint never evaluate at ``t_end``, and Heun not at 0,
    so ``t_min = 0`` works for processes whose score is undefined at ``sigma = 0`` (VP).

    Args:
        method: ``euler``, ``midpoint`` or ``heun``.
        steps: number of intervals of the grid.
        grid: ``uniform``, ``karras`` or ``logit`` (:func:`ode_time_grid`).
        rho: the karras grid's exponent (7).
        t_min: the last time (at least the process's ``t_min``); 0 by default.
        logit_eps: where the logit grid cuts ``t = 0`` and ``t = 1``.
    """

    name = "ode"

    def __init__(
        self,
        method: Literal["euler", "midpoint", "heun"] = "euler",
        steps: Steps = 50,
        grid: Literal["uniform", "karras", "logit"] = "uniform",
        rho: PositiveFloat = 7.0,
        t_min: NonNegativeFloat = 0.0,
        logit_eps: LogitEps = 1e-3,
        guidance: NonNegativeFloat = 0.0,
    ) -> None:
        self.guidance = guidance
        self.method, self.steps, self.grid = method, steps, grid
        self.rho, self.t_min, self.logit_eps = rho, t_min, logit_eps
        self.nfe = 0

    def describe(self) -> str:
        return f"ode {self.method} {self.steps} steps ({self.grid} grid)"

    def check_model(self, model: torch.nn.Module) -> None:
        """TypeError: not a diffusion model; ValueError: a noise-predicting model on the
        linear path (:func:`check_start`) or ``t_min`` at or beyond ``T``."""
        require(model, DiffusionModel, "sampler 'ode'")
        check_start(model, "sampler 'ode'")
        self.times(model, None)

    def expected_nfe(self, t_end: float) -> int:
        """Network evaluations per sample of one call ending at ``t_end``."""
        if self.method == "euler":
            return self.steps
        if self.method == "heun" and t_end == 0.0:
            return 2 * self.steps - 1
        return 2 * self.steps

    def times(self, model: DiffusionModel, device) -> torch.Tensor:
        """``(steps + 1,)`` the grid this sampler steps through for ``model``."""
        t_end = max(self.t_min, model.sde.t_min)
        return ode_time_grid(
            model.sde, self.steps, self.grid, t_end, self.rho, self.logit_eps, device
        )

    def _v(self, model: DiffusionModel, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return model.velocity(x, t.expand(x.shape[0]))

    @torch.no_grad()
    def integrate(self, model: DiffusionModel, x_T: torch.Tensor) -> torch.Tensor:
        """Solve ``dx/dt = model.velocity(x, t)`` from the states ``x_T`` at ``t = T`` down
        the grid of :meth:`times` to ``t_end`` (the steps of ``method``, class docstring):
        the deterministic map that :meth:`sample` applies to its prior draw, so
        ``sample(model, n, g) == model.decode(integrate(model, prior draw))`` bit for bit.
        Reflow (Liu et al. 2023, Sec. 2.2-2.3) pairs each ``x_T`` with this endpoint.

        Args:
            model: a diffusion / flow-matching model (:meth:`check_model` accepts it).
            x_T: ``(n, *model.image_shape)`` states at ``t = T``, in model space, on the
                model's device (for the linear path: draws of the prior ``N(0, I)``).

        Returns:
            ``(n, *model.image_shape)`` states at ``t_end``, in model space (not decoded, not
            clamped). Sets ``self.nfe`` to the network evaluations per sample of this call
            (:meth:`expected_nfe`).
        """
        self.nfe = 0
        grid = self.times(model, x_T.device)
        x = x_T
        desc = f"ode {self.method} steps ({x_T.shape[0]} samples)"
        for i in track(range(self.steps), desc, unit="step"):
            t, s = grid[i], grid[i + 1]
            h = s - t
            v = self._v(model, x, t)
            if self.method == "euler":
                x = x + h * v
            elif self.method == "midpoint":
                x = x + h * self._v(model, x + 0.5 * h * v, t + 0.5 * h)
            else:
                x_euler = x + h * v
                x = x_euler if s == 0 else x + 0.5 * h * (v + self._v(model, x_euler, s))
        return x

    @torch.no_grad()
    def sample(self, model: DiffusionModel, n: int, generator: torch.Generator) -> torch.Tensor:
        """``(n, *model.image_shape)`` samples in data space: ``model.decode`` of
        :meth:`integrate` from ``n`` draws of the process's prior
        (``sde.prior_sample``, from ``generator``); sets ``self.nfe``
        (:meth:`expected_nfe`)."""
        device = model_device(model)
        x = model.sde.prior_sample((n, *model.image_shape), generator, device)
        return model.decode(self.integrate(model, x))
