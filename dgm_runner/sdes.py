"""Gaussian diffusion processes with closed-form marginals, shared by the diffusion
objectives, samplers and likelihoods.

Every process here is written as ``x_t = alpha(t) x_0 + sigma(t) eps``, ``eps ~ N(0, I)``,
on ``t`` in ``[t_min, T]`` with ``T = 1`` (Kingma et al. 2021, "Variational diffusion
models", Sec. 2). From ``alpha`` and ``sigma`` alone follow

- the forward SDE ``dx = f(t) x dt + g(t) dw`` with ``f = d log alpha / dt`` and
  ``g^2 = d sigma^2 / dt - 2 f sigma^2`` (Song et al. 2021, "Score-based generative
  modeling through SDEs", Eq. 5 and App. B; Karras et al. 2022, Eq. 4), used by the
  reverse-SDE samplers and the probability-flow ODE;
- the EDM noise level ``sigma_hat = sigma / alpha`` of the rescaled state ``x / alpha``
  (Karras et al. 2022, Sec. 2), used by the Heun sampler and EDM preconditioning, and its
  inverse :meth:`SDE.t_of_sigma_hat`.

Shapes: ``x`` is ``(B, ...)``, ``t`` is ``(B,)``; broadcasting over the trailing dimensions
is handled here. Processes: :class:`VESDE`, :class:`VPSDE` (Song et al. 2021),
:class:`DiscreteDDPM` (Ho et al. 2020; linear and cosine schedules),
:class:`EDMProcess` (Karras et al. 2022) and :class:`LinearPath` (rectified flow / the
optimal-transport path of flow matching; Liu et al. 2023, Lipman et al. 2023). A model
takes one as a config component of its own,
``configs/model/sde/{ve,vp,ddpm,edm,linear}.yaml`` (``model/sde=edm``), which Hydra builds
before the model; each constructor's annotations bound its values (:mod:`dgm_runner.config`).

The velocity of the path, ``d x_t / dt = alpha'(t) x_0 + sigma'(t) eps``
(:meth:`SDE.velocity_target`), and the inverse map from ``(x_t, velocity)`` to
``(eps, x_0)`` (:meth:`SDE.noise_and_x0_from_velocity`) serve flow matching and the
velocity parameterisation of :class:`dgm_runner.models.score.DiffusionModel`.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch

from dgm_runner.config import PositiveFloat, PositiveInt, Range


def bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(B,)`` per-example values -> ``(B, 1, ..., 1)``, to multiply ``x`` of shape
    ``(B, ...)``."""
    return v.reshape(-1, *([1] * (x.ndim - 1)))


class SDE:
    """A Gaussian diffusion process ``x_t = alpha(t) x_0 + sigma(t) eps`` (see the module
    docstring). Subclasses define :meth:`log_alpha`, :meth:`sigma`, their time derivatives
    and :meth:`t_of_sigma_hat`; everything else follows.

    Attributes:
        T: the final time (1).
        t_min: the smallest time a model is trained at and samplers stop at (0 for
            continuous processes, whose samplers stop at their own ``t_min`` option; ``1/N`` for
            N discrete steps).
        discrete_steps: the number of steps of a discrete process, else None.
    """

    T: float = 1.0
    t_min: float = 0.0
    discrete_steps: int | None = None

    # -- defined by each process ------------------------------------------------------
    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        """``(B,)`` log of the signal scale ``alpha(t)``."""
        raise NotImplementedError

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """``(B,)`` noise std ``sigma(t)`` of ``x_t`` given ``x_0``."""
        raise NotImplementedError

    def dlog_alpha_dt(self, t: torch.Tensor) -> torch.Tensor:
        """``(B,)`` ``d log alpha / dt``."""
        raise NotImplementedError

    def dsigma2_dt(self, t: torch.Tensor) -> torch.Tensor:
        """``(B,)`` ``d sigma^2 / dt``."""
        raise NotImplementedError

    def t_of_sigma_hat(self, sigma_hat: torch.Tensor) -> torch.Tensor:
        """``(B,)`` the time at which ``sigma(t) / alpha(t) = sigma_hat`` (inverse of
        :meth:`sigma_hat`; values outside the process's range extrapolate)."""
        raise NotImplementedError

    def prior_std(self) -> float:
        """Std of the Gaussian prior ``p_T = N(0, prior_std^2 I)`` sampling starts from."""
        raise NotImplementedError

    # -- derived ----------------------------------------------------------------------
    def dalpha_dt(self, t: torch.Tensor) -> torch.Tensor:
        """``(B,)`` ``d alpha / dt = alpha (d log alpha / dt)`` (a process may give it exactly)."""
        return self.alpha(t) * self.dlog_alpha_dt(t)

    def dsigma_dt(self, t: torch.Tensor) -> torch.Tensor:
        """``(B,)`` ``d sigma / dt = (d sigma^2 / dt) / (2 sigma)`` (undefined where
        ``sigma = 0``, e.g. VP at t = 0; a process may give it exactly)."""
        return self.dsigma2_dt(t) / (2.0 * self.sigma(t))

    def velocity_target(
        self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """``(B, ...)`` conditional velocity ``d x_t / dt = alpha'(t) x_0 + sigma'(t) eps`` of
        the path ``x_t = alpha x_0 + sigma eps`` at fixed ``(x_0, eps)``: the regression
        target of conditional flow matching (Lipman et al. 2023, Eq. 9 / Liu et al. 2023,
        Eq. 1; for :class:`LinearPath` ``(1 - sigma_min) eps - x_0``). Its conditional mean
        given ``x_t`` is the probability-flow velocity ``f x - g^2 score / 2`` (algebra in
        :meth:`noise_and_x0_from_velocity`)."""
        return bcast(self.dalpha_dt(t), x0) * x0 + bcast(self.dsigma_dt(t), x0) * noise

    def noise_and_x0_from_velocity(
        self, x: torch.Tensor, v: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(eps, x_0)``, both ``(B, ...)``, from a state ``x = alpha x_0 + sigma eps`` and
        its velocity ``v = alpha' x_0 + sigma' eps`` at times ``t`` ``(B,)``: the 2x2 linear
        system with determinant ``det = alpha sigma' - sigma alpha'`` (> 0 for every process
        here where ``sigma > 0`` or ``alpha' != 0``) gives
        ``x_0 = (sigma' x - sigma v) / det`` and ``eps = (alpha v - alpha' x) / det``.
        Applied to estimates (``v_hat = E[v | x_t]``) it gives ``E[x_0 | x_t]`` and
        ``E[eps | x_t]``, since both are linear in ``v``. Conversely
        ``alpha' x0_hat + sigma' eps_hat = f x - g^2 score / 2`` with ``f = alpha' / alpha``,
        ``g^2 = 2 sigma sigma' - 2 f sigma^2`` and ``score = -eps_hat / sigma`` (substitute
        ``x0_hat = (x - sigma eps_hat) / alpha``), so a velocity and a noise prediction are
        the same model seen two ways."""
        a, s = bcast(self.alpha(t), x), bcast(self.sigma(t), x)
        da, ds = bcast(self.dalpha_dt(t), x), bcast(self.dsigma_dt(t), x)
        det = a * ds - s * da
        return (a * v - da * x) / det, (ds * x - s * v) / det

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """``(B,)`` signal scale ``alpha(t)``."""
        return torch.exp(self.log_alpha(t))

    def sigma_hat(self, t: torch.Tensor) -> torch.Tensor:
        """``(B,)`` EDM noise level ``sigma(t) / alpha(t)`` of ``x_t / alpha(t)``."""
        return self.sigma(t) / self.alpha(t)

    def marginal(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``(B, ...)`` and std ``(B,)`` of the Gaussian ``p_t(x_t | x_0)``."""
        return bcast(self.alpha(t), x0) * x0, self.sigma(t)

    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``f(x, t) = (d log alpha / dt) x``, same shape as x."""
        return bcast(self.dlog_alpha_dt(t), x) * x

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """``g(t) = sqrt(d sigma^2 / dt - 2 (d log alpha / dt) sigma^2)``, ``(B,)``."""
        s = self.sigma(t)
        return torch.sqrt((self.dsigma2_dt(t) - 2.0 * self.dlog_alpha_dt(t) * s**2).clamp_min(0.0))

    def prior_sample(
        self, shape: tuple[int, ...], generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        """Draw ``shape`` from the prior ``N(0, prior_std^2 I)``."""
        return torch.randn(shape, generator=generator, device=device) * self.prior_std()

    def sample_t(
        self, n: int, generator: torch.Generator | None, device: torch.device, t_min: float
    ) -> torch.Tensor:
        """``(n,)`` training times: ``U(max(t_min, self.t_min), T)`` (discrete processes
        override)."""
        lo = max(t_min, self.t_min)
        return lo + (self.T - lo) * torch.rand(n, generator=generator, device=device)

    def time_grid(
        self, steps: int, t_min: float, device: torch.device | None = None
    ) -> torch.Tensor:
        """``(steps,)`` decreasing times from ``T`` to ``max(t_min, self.t_min)``, uniform in t;
        samplers then take a final step to the data. Raises ValueError when ``steps < 1``."""
        if steps < 1:
            raise ValueError(f"a time grid needs at least 1 step, got {steps}")
        lo = max(t_min, self.t_min)
        if steps == 1:
            return torch.full((1,), self.T, device=device)
        return torch.linspace(self.T, lo, steps, device=device)


def gaussian_posterior(
    sde: SDE, t: torch.Tensor, s: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coefficients of ``q(x_s | x_t, x_0) = N(a x_t + b x_0, v I)`` for ``s < t``
    (Kingma et al. 2021, Eq. 30-33; for a discrete DDPM with consecutive steps this is Ho et
    al. 2020, Eq. 6-7): with ``alpha_ts = alpha_t / alpha_s`` and
    ``sigma_ts^2 = sigma_t^2 - alpha_ts^2 sigma_s^2``,
    ``a = alpha_ts sigma_s^2 / sigma_t^2``, ``b = alpha_s sigma_ts^2 / sigma_t^2``,
    ``v = sigma_ts^2 sigma_s^2 / sigma_t^2``. All ``(B,)``."""
    a_t, a_s = sde.alpha(t), sde.alpha(s)
    var_t, var_s = sde.sigma(t) ** 2, sde.sigma(s) ** 2
    a_ts = a_t / a_s
    var_ts = (var_t - a_ts**2 * var_s).clamp_min(0.0)
    return a_ts * var_s / var_t, a_s * var_ts / var_t, var_ts * var_s / var_t


class VESDE(SDE):
    """Variance exploding: ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``, ``alpha = 1``,
    ``g(t) = sigma(t) sqrt(2 log(sigma_max / sigma_min))`` (Song et al. 2021, Eq. 30);
    ``p_t(x_t|x_0) = N(x_0, sigma(t)^2 I)`` (the sigma_min^2 offset is dropped as there),
    prior ``N(0, sigma_max^2 I)``. A uniform time grid is geometric in sigma.

    Args:
        sigma_min, sigma_max: the noise std range (configs/model/sde/ve.yaml: 0.01, 50).

    Raises:
        ValueError: unless ``0 < sigma_min < sigma_max``.
    """

    def __init__(self, sigma_min: PositiveFloat = 0.01, sigma_max: PositiveFloat = 50.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(
                f"VE SDE needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}"
            )
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self._log_ratio = math.log(sigma_max / sigma_min)

    def log_alpha(self, t):
        return torch.zeros_like(t)

    def sigma(self, t):
        return self.sigma_min * torch.exp(self._log_ratio * t)

    def dlog_alpha_dt(self, t):
        return torch.zeros_like(t)

    def dsigma2_dt(self, t):
        return 2.0 * self._log_ratio * self.sigma(t) ** 2

    def t_of_sigma_hat(self, sigma_hat):
        return torch.log(sigma_hat / self.sigma_min) / self._log_ratio

    def prior_std(self) -> float:
        return self.sigma_max


class VPSDE(SDE):
    """Variance preserving: ``beta(t) = beta_min + t (beta_max - beta_min)``,
    ``f = -beta(t) x / 2``, ``g = sqrt(beta(t))`` (Song et al. 2021, Eq. 32-33); the
    marginal has mean ``exp(c(t)) x_0`` and variance ``1 - exp(2 c(t))`` with
    ``c(t) = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2``; prior ``N(0, I)``. The
    continuous limit of DDPM's linear schedule (beta_min = 0.1, beta_max = 20 for T = 1000).

    Args:
        beta_min, beta_max: the ends of the linear ``beta(t)`` (Song et al.: 0.1, 20).

    Raises:
        ValueError: unless ``0 < beta_min < beta_max``.
    """

    def __init__(self, beta_min: PositiveFloat = 0.1, beta_max: PositiveFloat = 20.0) -> None:
        if not 0 < beta_min < beta_max:
            raise ValueError(f"VP SDE needs 0 < beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = beta_min, beta_max

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """``(B,)`` beta(t)."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_alpha(self, t):
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(2.0 * self.log_alpha(t)))

    def dlog_alpha_dt(self, t):
        return -0.5 * self.beta(t)

    def dsigma2_dt(self, t):
        return self.beta(t) * torch.exp(2.0 * self.log_alpha(t))

    def diffusion(self, t):
        return torch.sqrt(self.beta(t))

    def t_of_sigma_hat(self, sigma_hat):
        # log alpha = -log(1 + sigma_hat^2) / 2 = c(t): solve the quadratic for t >= 0
        c = -0.5 * torch.log1p(sigma_hat**2)
        a, b = 0.25 * (self.beta_max - self.beta_min), 0.5 * self.beta_min
        return (-b + torch.sqrt(b * b - 4 * a * c)) / (2 * a)

    def prior_std(self) -> float:
        return 1.0


def ddpm_betas(steps: int, schedule: str = "linear", cosine_s: float = 0.008) -> torch.Tensor:
    """``(steps,)`` float64 betas of a discrete DDPM.

    ``linear``: Ho et al. (2020, Sec. 4) use 1e-4 -> 0.02 for T = 1000; for other T the ends
    are scaled by 1000 / T (Nichol & Dhariwal 2021, their code), so every T describes the
    same continuous VP SDE (beta_min = 0.1, beta_max = 20). ``cosine``: Nichol & Dhariwal
    (2021, Eq. 17), ``alpha_bar(n) = f(n) / f(0)``, ``f(n) = cos((n/T + s) / (1 + s) pi/2)^2``,
    betas clipped at 0.999.

    Raises:
        ValueError: unknown schedule or ``steps < 1``.
    """
    if steps < 1:
        raise ValueError(f"a DDPM needs at least 1 step, got {steps}")
    if schedule == "linear":
        scale = 1000.0 / steps
        return torch.linspace(1e-4 * scale, 0.02 * scale, steps, dtype=torch.float64).clamp(
            max=0.999
        )
    if schedule == "cosine":
        n = torch.arange(steps + 1, dtype=torch.float64)
        f = torch.cos((n / steps + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=0.999)
    raise ValueError(f"unknown DDPM schedule {schedule!r}: use linear or cosine")


class DiscreteDDPM(SDE):
    """A discrete DDPM (Ho et al. 2020) with ``N`` steps, ``q(x_n | x_0) = N(sqrt(abar_n) x_0,
    (1 - abar_n) I)``, ``abar_n = prod_{i<=n} (1 - beta_i)``, embedded in continuous time as
    ``t = n / N``: ``log abar`` is interpolated linearly between integer ``n``, so integer
    steps are exact and the reverse-SDE / ODE samplers and the probability-flow likelihood
    (which need ``f`` and ``g`` between steps) apply too. Training draws ``n ~ U{1..N}``.

    Args:
        timesteps: N (Ho et al.: 1000).
        schedule: ``linear`` or ``cosine`` (:func:`ddpm_betas`).

    Raises:
        ValueError: unknown schedule or ``timesteps < 1`` (:func:`ddpm_betas`).
    """

    def __init__(
        self, timesteps: PositiveInt = 1000, schedule: Literal["linear", "cosine"] = "linear"
    ) -> None:
        self.betas = ddpm_betas(timesteps, schedule)
        self.discrete_steps = timesteps
        self.schedule = schedule
        self.t_min = 1.0 / timesteps
        zero = torch.zeros(1, dtype=torch.float64)
        self._log_abar = torch.cat(
            [zero, torch.cumsum(torch.log1p(-self.betas), 0)]
        )  # (N + 1,), n = 0..N
        self._cache: dict[torch.device, torch.Tensor] = {}

    def _table(self, device: torch.device) -> torch.Tensor:
        if device not in self._cache:
            self._cache[device] = self._log_abar.to(device=device, dtype=torch.float32)
        return self._cache[device]

    def _log_abar_at(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Interpolated ``log abar`` at ``t`` and its slope ``d log abar / dt``."""
        table = self._table(t.device)
        pos = (t * self.discrete_steps).clamp(0, self.discrete_steps)
        lo = pos.floor().clamp(max=self.discrete_steps - 1).long()
        frac = pos - lo
        left, right = table[lo], table[lo + 1]
        return left + frac * (right - left), (right - left) * self.discrete_steps

    def log_alpha(self, t):
        return 0.5 * self._log_abar_at(t)[0]

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(self._log_abar_at(t)[0]))

    def dlog_alpha_dt(self, t):
        return 0.5 * self._log_abar_at(t)[1]

    def dsigma2_dt(self, t):
        value, slope = self._log_abar_at(t)
        return -slope * torch.exp(value)

    def t_of_sigma_hat(self, sigma_hat):
        table = self._table(sigma_hat.device)
        target = -torch.log1p(sigma_hat**2)  # log abar, decreasing in n
        n = self.discrete_steps
        idx = torch.searchsorted(-table, -target).clamp(1, n)  # first index with table <= target
        left, right = table[idx - 1], table[idx]
        frac = (target - left) / (right - left)
        return (idx - 1 + frac) / n

    def prior_std(self) -> float:
        return 1.0

    def sample_t(self, n, generator, device, t_min):
        """``(n,)`` times ``k / N`` with ``k ~ U{1, ..., N}`` (Ho et al. 2020, Alg. 1)."""
        k = torch.randint(1, self.discrete_steps + 1, (n,), generator=generator, device=device)
        return k.float() / self.discrete_steps

    def time_grid(self, steps, t_min, device=None):
        """``(steps,)`` integer steps ``N, ..., 1`` spaced evenly, as ``n / N`` (DDIM's
        uniform skip, Song, Meng & Ermon 2021, Sec. 4.2). Raises ValueError when steps > N."""
        if not 1 <= steps <= self.discrete_steps:
            raise ValueError(
                f"this DDPM has {self.discrete_steps} steps: "
                f"sampler.steps must be in [1, {self.discrete_steps}], got {steps}"
            )
        k = torch.linspace(self.discrete_steps, 1, steps, dtype=torch.float64).round()
        return (k / self.discrete_steps).float().to(device)


class EDMProcess(SDE):
    """The EDM process (Karras et al. 2022): ``alpha = 1``, ``sigma`` from ``sigma_min`` to
    ``sigma_max`` along the rho-schedule of their Eq. 5, written in ``t`` in [0, 1] as
    ``sigma(t) = (sigma_min^(1/rho) + t (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho``, so a
    uniform time grid is their sampling grid. Prior ``N(0, sigma_max^2 I)``.

    Args:
        sigma_min, sigma_max: the noise range (their 0.002 and 80).
        rho: the schedule exponent (7).

    Raises:
        ValueError: unless ``0 < sigma_min < sigma_max`` and ``rho > 0``.
    """

    def __init__(
        self,
        sigma_min: PositiveFloat = 0.002,
        sigma_max: PositiveFloat = 80.0,
        rho: PositiveFloat = 7.0,
    ) -> None:
        if not 0 < sigma_min < sigma_max or rho <= 0:
            raise ValueError(
                "EDM needs 0 < sigma_min < sigma_max and rho > 0, "
                f"got {sigma_min}, {sigma_max}, {rho}"
            )
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho
        self._lo, self._hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)

    def log_alpha(self, t):
        return torch.zeros_like(t)

    def sigma(self, t):
        return (self._lo + t * (self._hi - self._lo)) ** self.rho

    def dlog_alpha_dt(self, t):
        return torch.zeros_like(t)

    def dsigma2_dt(self, t):
        base = self._lo + t * (self._hi - self._lo)
        return 2.0 * self.rho * base ** (2 * self.rho - 1) * (self._hi - self._lo)

    def t_of_sigma_hat(self, sigma_hat):
        return (sigma_hat ** (1 / self.rho) - self._lo) / (self._hi - self._lo)

    def prior_std(self) -> float:
        return self.sigma_max


#: ``sigma_min`` of :class:`LinearPath`: 0 (rectified flow) up to, not including, 1.
SigmaMin = Annotated[float, Range(ge=0, lt=1)]


class LinearPath(SDE):
    """The linear (conditional optimal-transport) probability path of flow matching:
    ``x_t = (1 - t) x_0 + (sigma_min + (1 - sigma_min) t) eps``, ``t`` in [0, 1], so
    ``alpha(t) = 1 - t``, ``sigma(t) = sigma_min + (1 - sigma_min) t``; ``t = 1`` is pure
    noise ``N(0, I)`` (``alpha = 0``, ``sigma = 1``: the prior is exact), ``t = 0`` the data
    (plus ``sigma_min`` noise). Its velocity ``d x_t / dt = (1 - sigma_min) eps - x_0``.

    ``sigma_min = 0`` is rectified flow (Liu, Gong & Liu 2023, Eq. 1, with their time
    reversed: their ``X_t = t X_1 + (1 - t) X_0`` has data at t = 1) and the "1-rectified
    flow" / I-CFM path of Tong et al. (2024). ``sigma_min > 0`` is the OT path of Lipman et
    al. (2023, Eq. 20-23): their ``mu_t = t x_1``, ``sigma_t = 1 - (1 - sigma_min) t`` with
    data ``x_1`` at their ``t = 1``; with ``t_ours = 1 - t_theirs`` it is the path above, and
    their target ``u_t = x_1 - (1 - sigma_min) x_0`` (``x_0`` their noise) is minus ours,
    since time runs the other way.

    What ``t = 1`` does: ``alpha(1) = 0`` exactly (:meth:`alpha` is ``1 - t``, not
    ``exp(log_alpha)``), ``log_alpha(1) = -inf``, ``sigma_hat(1) = sigma / alpha = inf`` and
    :meth:`t_of_sigma_hat` maps ``inf`` back to 1. The forward-SDE coefficients
    ``f = -1 / (1 - t)`` and ``g^2 = 2 sigma / (1 - t)`` diverge there: :meth:`drift` and
    :meth:`diffusion` raise ValueError at ``t >= 1`` (reverse-SDE samplers, a noise model's
    probability-flow velocity ``f x - g^2 score / 2``, the probability-flow likelihood all
    need them). What is exact at ``t = 1``: the path velocity (:meth:`velocity_target`,
    ``alpha' = -1``, ``sigma' = 1 - sigma_min``) and the map from a velocity to
    ``(eps, x_0)`` (:meth:`noise_and_x0_from_velocity`, determinant 1): a
    velocity-parameterised model (``model.preconditioning=velocity``) is evaluated at
    ``t = 1`` with no division by ``alpha``. Training times are ``U(t_min, 1)``, sampling
    starts at ``T = 1`` from ``N(0, I)``.

    Args:
        sigma_min: the noise left at ``t = 0`` (default 0: rectified flow; Lipman et al.
            use 1e-4 or so); in ``[0, 1)``.

    Raises:
        ValueError: ``sigma_min`` outside ``[0, 1)``.
    """

    def __init__(self, sigma_min: SigmaMin = 0.0) -> None:
        if not 0.0 <= sigma_min < 1.0:
            raise ValueError(f"the linear path needs 0 <= sigma_min < 1, got {sigma_min}")
        self.sigma_min = float(sigma_min)
        self._slope = 1.0 - self.sigma_min  # sigma'(t)

    def alpha(self, t):
        """``(B,)`` ``1 - t`` (exactly 0 at t = 1)."""
        return 1.0 - t

    def log_alpha(self, t):
        """``(B,)`` ``log(1 - t)``; ``-inf`` at t = 1."""
        return torch.log1p(-t)

    def sigma(self, t):
        return self.sigma_min + self._slope * t

    def dlog_alpha_dt(self, t):
        """``(B,)`` ``-1 / (1 - t)``; ``-inf`` at t = 1."""
        return -1.0 / (1.0 - t)

    def dsigma2_dt(self, t):
        return 2.0 * self._slope * self.sigma(t)

    def dalpha_dt(self, t):
        """``(B,)`` exactly -1."""
        return torch.full_like(t, -1.0)

    def dsigma_dt(self, t):
        """``(B,)`` exactly ``1 - sigma_min`` (also at t = 0 with sigma_min = 0)."""
        return torch.full_like(t, self._slope)

    def noise_and_x0_from_velocity(self, x, v, t):
        """``(eps, x_0)`` from ``x = (1 - t) x_0 + sigma eps`` and
        ``v = (1 - sigma_min) eps - x_0``: the determinant ``alpha sigma' - sigma alpha'``
        is ``(1 - t)(1 - sigma_min) + sigma_min + (1 - sigma_min) t = 1``, so
        ``eps = x + (1 - t) v`` and ``x_0 = (1 - sigma_min) x - sigma v``, exact for every
        t in [0, 1] (shapes as in :meth:`SDE.noise_and_x0_from_velocity`)."""
        return x + bcast(1.0 - t, x) * v, self._slope * x - bcast(self.sigma(t), x) * v

    def _refuse_end(self, t: torch.Tensor, what: str) -> None:
        if bool((t >= 1.0).any()):
            raise ValueError(
                f"the linear path's {what} is infinite at t = 1 (alpha = 0): reverse-SDE "
                "samplers, the probability-flow likelihood and a noise model's velocity "
                "cannot reach t = 1; a velocity model (model.preconditioning=velocity) "
                "samples with sampler=ode, ddim or ddpm"
            )

    def drift(self, x, t):
        """``f x = -x / (1 - t)``. Raises ValueError at ``t >= 1``."""
        self._refuse_end(t, "drift f = -1 / (1 - t)")
        return super().drift(x, t)

    def diffusion(self, t):
        """``g = sqrt(2 sigma / (1 - t))`` (``d sigma^2/dt - 2 f sigma^2`` simplified with
        ``(1 - t)(1 - sigma_min) + sigma = 1``). Raises ValueError at ``t >= 1``."""
        self._refuse_end(t, "diffusion g^2 = 2 sigma / (1 - t)")
        return torch.sqrt(2.0 * self.sigma(t) / (1.0 - t))

    def t_of_sigma_hat(self, sigma_hat):
        """``(B,)`` ``t = (s - sigma_min) / (s + 1 - sigma_min)`` for ``s = sigma / alpha``;
        ``s = inf`` gives 1."""
        t = (sigma_hat - self.sigma_min) / (sigma_hat + self._slope)
        return torch.where(torch.isinf(sigma_hat), torch.ones_like(t), t)

    def prior_std(self) -> float:
        return 1.0
