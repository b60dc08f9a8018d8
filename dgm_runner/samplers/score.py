"""Samplers for score models: annealed Langevin dynamics (Song & Ermon 2019; seed 001 Q4,
Algorithm 1) and reverse-SDE samplers (Song et al. 2021): Euler-Maruyama and
predictor-corrector (NFE = ``steps (1 + corrector_steps)``). All are deterministic given
the generator. Few-step samplers (DDPM, DDIM, Heun): :mod:`dgm_runner.samplers.diffusion`."""

from __future__ import annotations

import math

import torch

from dgm_runner.config import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Steps
from dgm_runner.models.checks import require, require_attrs
from dgm_runner.models.score import DiffusionModel
from dgm_runner.progress import Bar, track
from dgm_runner.samplers.base import Sampler
from dgm_runner.samplers.diffusion import model_device
from dgm_runner.sdes import VPSDE, bcast


def langevin_step(
    x: torch.Tensor,
    score: torch.Tensor,
    step: torch.Tensor | float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """One Langevin update ``x + step/2 * score + sqrt(step) * z``, ``z ~ N(0, I)``
    (seed 001 Algorithm 1, line 6). ``step`` is a float or broadcastable tensor."""
    z = torch.randn(x.shape, generator=generator, device=x.device)
    return x + 0.5 * step * score + (step**0.5 if isinstance(step, float) else torch.sqrt(step)) * z


class AnnealedLangevin(Sampler):
    """Annealed Langevin dynamics, seed 001 Algorithm 1 / Song & Ermon (2019) Algorithm 1.

    Levels are ``model.sigmas`` in the algorithm's order, largest first (sigma_1 > ... >
    sigma_L); at level i, ``T`` steps of :func:`langevin_step` with step size
    ``alpha_i = step_size * sigma_i^2 / sigma_L^2`` where sigma_L is the *smallest* level.
    Starts from ``N(0, sigma_1^2 I)``: ``L x T`` network evaluations, as printed. With
    ``denoise`` (an option, off by default: Algorithm 1 has no such step), a final
    Tweedie step ``x + sigma_L^2 s(x, sigma_L)`` removes the last level's noise
    (Jolicoeur-Martineau et al. 2021): one more evaluation.

    Args:
        step_size: base step size (Algorithm 1's epsilon; seed 001 Q4).
        steps_per_level: T.
        denoise: apply the final denoising step (default False, as Algorithm 1).
    """

    def __init__(
        self,
        step_size: PositiveFloat = 5e-5,
        steps_per_level: PositiveInt = 100,
        denoise: bool = False,
    ) -> None:
        self.step_size = step_size
        self.steps_per_level = steps_per_level
        self.denoise = denoise

    def check_model(self, model: torch.nn.Module) -> None:
        require_attrs(model, ("sigmas", "score"), "sampler 'annealed_langevin'")

    def describe(self) -> str:
        return f"annealed Langevin {self.steps_per_level} steps per level"

    def step_sizes(self, sigmas: torch.Tensor) -> torch.Tensor:
        """``(L,)`` alpha_i = step_size * sigma_i^2 / sigma_L^2 for levels ordered largest first."""
        return self.step_size * sigmas**2 / sigmas[-1] ** 2

    @torch.no_grad()
    def sample(self, model, n: int, generator: torch.Generator) -> torch.Tensor:
        """Returns ``(n, *model.image_shape)`` samples."""
        sigmas = model.sigmas
        x = (
            torch.randn((n, *model.image_shape), generator=generator, device=sigmas.device)
            * sigmas[0]
        )
        levels = len(sigmas)
        with Bar(levels * self.steps_per_level, f"Langevin steps ({n} samples)", "step") as bar:
            for sigma, alpha in zip(sigmas, self.step_sizes(sigmas)):
                s = sigma.expand(n)
                for _ in range(self.steps_per_level):
                    x = langevin_step(x, model.score(x, s), float(alpha), generator)
                    bar.update()
        if self.denoise:
            x = x + sigmas[-1] ** 2 * model.score(x, sigmas[-1].expand(n))
        return x


def _reverse_em(model, x, t, dt, generator):
    """One Euler-Maruyama step of the reverse SDE ``dx = [f - g^2 s] dt + g dw`` with
    ``dt < 0`` (Song et al. 2021, Eq. 6); returns (x, its noise-free mean)."""
    g = bcast(model.sde.diffusion(t), x)
    drift = model.sde.drift(x, t) - g**2 * model.score(x, t)
    mean = x + drift * dt
    z = torch.randn(x.shape, generator=generator, device=x.device)
    return mean + g * math.sqrt(-dt) * z, mean


class EulerMaruyama(Sampler):
    """Reverse-SDE Euler-Maruyama from the prior at t = 1 down to t = ``t_min`` in ``steps``
    uniform steps (Song et al. 2021, Eq. 6; NFE = ``steps``); with ``denoise`` the last step
    returns the noise-free mean. On a VP process few steps are unstable near t = 0 (the
    step ratio ``beta(t) |dt| / sigma(t)^2`` grows like ``|dt| / t``): use ``ddim`` or
    ``heun`` for few-step sampling. Returns images in data space (``model.decode``).

    Args:
        steps: number of time steps.
        t_min: final time (Song et al.'s ``eps``: 1e-3; at least the process's ``t_min``).
        denoise: drop the noise of the last step.
    """

    name = "euler_maruyama"

    def __init__(
        self,
        steps: Steps = 1000,
        t_min: PositiveFloat = 1e-3,
        denoise: bool = True,
        guidance: NonNegativeFloat = 0.0,
    ) -> None:
        self.guidance = guidance
        self.steps, self.t_min, self.denoise = steps, t_min, denoise
        self.nfe = 0

    def check_model(self, model: torch.nn.Module) -> None:
        require(model, DiffusionModel, "sampler 'euler_maruyama'")

    def correct(
        self, model, x: torch.Tensor, t: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Corrector applied before each predictor step (none here; see PredictorCorrector)."""
        return x

    @torch.no_grad()
    def sample(self, model, n: int, generator: torch.Generator) -> torch.Tensor:
        """Returns ``(n, *model.image_shape)`` samples in data space; sets ``self.nfe``."""
        device = model_device(model)
        self.nfe = 0
        x = model.sde.prior_sample((n, *model.image_shape), generator, device)
        t_end = max(self.t_min, model.sde.t_min)
        dt = -(1.0 - t_end) / self.steps
        mean = x
        times = torch.linspace(1.0, t_end, self.steps, device=device)
        for t in track(times, f"{self.name} steps ({n} samples)", self.steps, "step"):
            tt = t.expand(n)
            x = self.correct(model, x, tt, generator)
            x, mean = _reverse_em(model, x, tt, dt, generator)
            self.nfe += 1
        return model.decode(mean if self.denoise else x)


class PredictorCorrector(EulerMaruyama):
    """Predictor-corrector sampling (Song et al. 2021, Algorithm 1 / 2): at each time step
    ``corrector_steps`` Langevin corrections with step ``2 alpha_i (snr ||z|| / ||s||)^2``
    (norms per sample, averaged over the batch, as in their code), then one reverse
    Euler-Maruyama predictor step. ``alpha_i`` is 1 except under the VP SDE, where their
    code's ``LangevinCorrector`` multiplies by ``1 - beta_i`` of the discretised schedule,
    ``beta_i = (beta_min + i / (N - 1) (beta_max - beta_min)) / N`` at
    ``i = floor(t (N - 1) / T)``, ``N`` the number of predictor steps
    (:func:`vp_corrector_alpha`; their Algorithm 5 writes ``alpha_i`` the same way).

    Args:
        steps: number of predictor steps.
        snr: corrector signal-to-noise ratio (0.16 for VE on images in their paper).
        corrector_steps: Langevin steps per time step (0: plain Euler-Maruyama).
        t_min: final time.
        denoise: drop the noise of the last predictor step.
    """

    name = "pc"

    def __init__(
        self,
        steps: Steps = 1000,
        snr: PositiveFloat = 0.16,
        corrector_steps: NonNegativeInt = 1,
        t_min: PositiveFloat = 1e-3,
        denoise: bool = True,
        guidance: NonNegativeFloat = 0.0,
    ) -> None:
        self.guidance = guidance
        super().__init__(steps, t_min, denoise)
        self.snr, self.corrector_steps = snr, corrector_steps

    def check_model(self, model: torch.nn.Module) -> None:
        require(model, DiffusionModel, "sampler 'pc'")

    def correct(
        self, model, x: torch.Tensor, t: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """``corrector_steps`` Langevin steps at time ``t`` with the SNR-based step size."""
        alpha = (
            vp_corrector_alpha(model.sde, t[0], self.steps) if isinstance(model.sde, VPSDE) else 1.0
        )
        for _ in range(self.corrector_steps):
            grad = model.score(x, t)
            self.nfe += 1
            z = torch.randn(x.shape, generator=generator, device=x.device)
            grad_norm = grad.flatten(1).norm(dim=1).mean()
            noise_norm = z.flatten(1).norm(dim=1).mean()
            step = 2 * alpha * (self.snr * noise_norm / grad_norm) ** 2
            x = x + step * grad + torch.sqrt(2 * step) * z
        return x


def vp_corrector_alpha(sde: VPSDE, t: torch.Tensor, n: int) -> float:
    """``1 - beta_i`` of the VP SDE discretised in ``n`` steps at time ``t`` (a scalar
    tensor): ``beta_i = (beta_min + i / (n - 1) (beta_max - beta_min)) / n``,
    ``i = floor(t (n - 1) / T)`` -- score_sde's ``VPSDE.alphas[timestep]``, the factor of
    its ``LangevinCorrector`` step size (Song et al. 2021, Algorithm 5's ``alpha_i``)."""
    i = math.floor(float(t) * (n - 1) / sde.T)
    frac = i / max(n - 1, 1)
    return 1.0 - (sde.beta_min + frac * (sde.beta_max - sde.beta_min)) / n
