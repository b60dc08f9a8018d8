"""DPM-Solver++(2M), Euler ancestral and RK45 (issue 30, solvers) against closed forms with
the exact ``GaussianOracle`` for data N(mu, s^2 I): moments, NFE counts, convergence order,
equivalences with the Euler method and DDPM ancestral sampling, refusals and validation."""

import math

import pytest
import torch

from dgm_runner.config import ConfigError, validate
from dgm_runner.models.oracle import GaussianOracle
from dgm_runner.samplers import DDPMAncestral
from dgm_runner.samplers.solvers import RK45ODE, DPMSolverPP2M, EulerAncestral
from dgm_runner.sdes import VPSDE, EDMProcess, LinearPath, bcast

MU, STD = torch.tensor([1.0, -0.5]), 0.5
SIGMA_MAX = 80.0

PROCESSES = {"edm": lambda: EDMProcess(0.002, SIGMA_MAX, 7.0), "vp": lambda: VPSDE(0.1, 20.0)}
# Euler ancestral is first order in sigma_hat (std 0.47 at 100 steps, 0.495 at 400).
SAMPLERS = {
    "dpmpp_2m": lambda: DPMSolverPP2M(steps=30),
    "euler_ancestral": lambda: EulerAncestral(steps=400),
    "rk45": lambda: RK45ODE(),
}


def _check_moments(x: torch.Tensor) -> None:
    """Mean within 5 standard errors + 0.01, variance within 10 % (its relative standard
    error is sqrt(2 / n) = 1.6 % at n = 8000)."""
    n = x.shape[0]
    assert torch.allclose(x.mean(0), MU, atol=5 * STD / math.sqrt(n) + 0.01), x.mean(0)
    var = x.var(0)
    assert torch.allclose(var, torch.full_like(var, STD**2), rtol=0.1), var


@pytest.mark.parametrize("process", PROCESSES)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_solvers_reproduce_gaussian_moments_with_the_exact_oracle(process, sampler):
    model = GaussianOracle(PROCESSES[process](), MU, STD)
    _check_moments(SAMPLERS[sampler]().sample(model, 8000, torch.Generator().manual_seed(0)))


def test_rk45_carries_the_linear_path_prior_to_the_data_with_a_velocity_oracle():
    model = GaussianOracle(LinearPath(), MU, STD, parameterization="velocity")
    sampler = RK45ODE()
    sampler.check_model(model)
    assert sampler.t_end(model) == 0.0
    _check_moments(sampler.sample(model, 8000, torch.Generator().manual_seed(0)))


def test_a_perturbed_oracle_fails_the_moment_check():
    """The moment check can fail: a noise prediction off by 0.3 shifts the samples."""
    model = GaussianOracle(EDMProcess(0.002, SIGMA_MAX, 7.0), MU, STD, perturb=0.3)
    x = DPMSolverPP2M(steps=30).sample(model, 8000, torch.Generator().manual_seed(0))
    with pytest.raises(AssertionError):
        _check_moments(x)


def _counting(model: GaussianOracle, method: str) -> dict[str, int]:
    calls = {"n": 0}
    original = getattr(model, method)

    def counted(x, t):
        calls["n"] += 1
        return original(x, t)

    setattr(model, method, counted)
    return calls


@pytest.mark.parametrize(
    "sde, parameterization",
    [(EDMProcess(), "noise"), (VPSDE(), "noise"), (VPSDE(), "velocity")],
    ids=["edm", "vp", "vp_velocity"],
)
def test_solvers_count_their_network_evaluations(sde, parameterization):
    model = GaussianOracle(sde, MU, STD, parameterization=parameterization)
    method = "predict_noise" if parameterization == "noise" else "predict_velocity"
    calls = _counting(model, method)
    for sampler, expected in [(DPMSolverPP2M(steps=7), 7), (EulerAncestral(steps=9), 9)]:
        calls["n"] = 0
        sampler.sample(model, 16, torch.Generator().manual_seed(0))
        assert sampler.nfe == calls["n"] == expected, sampler.name
    rk45 = RK45ODE()
    calls["n"] = 0
    rk45.sample(model, 16, torch.Generator().manual_seed(0))
    assert rk45.nfe == calls["n"] > 6  # solve_ivp's nfev, every one a network call


def _exact_pf_ode_map(x_T: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE of EDM for N(mu, s^2 I) data, solved in closed form: with the
    exact denoiser ``D = mu + s^2 / (s^2 + sigma^2) (x - mu)``, ``dx / dsigma = (x - D) /
    sigma = sigma (x - mu) / (s^2 + sigma^2)``, so ``x - mu`` scales with
    ``sqrt(s^2 + sigma^2)``: ``x(0) = mu + (x_T - mu) s / sqrt(s^2 + sigma_max^2)``."""
    return MU + (x_T - MU) * STD / math.sqrt(STD**2 + SIGMA_MAX**2)


def _errors(make, steps: list[int], n: int = 1000) -> list[float]:
    model = GaussianOracle(EDMProcess(0.002, SIGMA_MAX, 7.0), MU, STD)
    x_T = model.sde.prior_sample((n, 2), torch.Generator().manual_seed(3), torch.device("cpu"))
    exact = _exact_pf_ode_map(x_T)
    out = []
    for k in steps:
        x = make(k).sample(model, n, torch.Generator().manual_seed(3))
        out.append(float((x - exact).abs().max()))
    return out


def test_dpmpp_2m_is_second_order_and_euler_first_order():
    """Max error against the exact map at 16, 32, 64 steps. Measured: DPM-Solver++(2M)
    0.153, 0.0326, 0.00729 (ratios 4.7, 4.5: second order); the deterministic Euler method
    (euler_ancestral eta = 0) 0.331, 0.168, 0.0846 (ratios 1.97, 1.99: first order)."""
    steps = [16, 32, 64]
    dpm = _errors(lambda k: DPMSolverPP2M(steps=k), steps)
    euler = _errors(lambda k: EulerAncestral(steps=k, eta=0.0), steps)
    for a, b in zip(dpm[:-1], dpm[1:]):
        assert 3.5 < a / b < 5.5, dpm
    for a, b in zip(euler[:-1], euler[1:]):
        assert 1.7 < a / b < 2.3, euler
    # and RK45 at tight tolerances reaches the exact map (the reference is right)
    assert _errors(lambda k: RK45ODE(rtol=1e-8, atol=1e-8), [0])[0] < 1e-4


@pytest.mark.parametrize("steps", [1, 2, 7])
def test_euler_ancestral_with_eta_zero_is_the_euler_method_in_sigma_hat(steps):
    """A plain Euler method on ``d x_hat / d sigma = (x_hat - D) / sigma`` (Karras et al.
    2022, Eq. 4) in ``x_hat = x / alpha`` on the same grid (equal for every step count, so
    step for step), and no noise drawn after the initial one."""
    model = GaussianOracle(VPSDE(), MU, STD)
    sampler = EulerAncestral(steps=steps, eta=0.0)
    gen = torch.Generator().manual_seed(5)
    got = sampler.sample(model, 64, gen)
    sde = model.sde
    ref_gen = torch.Generator().manual_seed(5)
    x = sde.prior_sample((64, 2), ref_gen, torch.device("cpu")) / sde.alpha(torch.ones(1))
    assert torch.equal(gen.get_state(), ref_gen.get_state())
    sigmas = sampler.sigmas(model)
    for i in range(steps):
        t = sde.t_of_sigma_hat(sigmas[i].expand(64))
        d = (x - model.denoise(bcast(sde.alpha(t), x) * x, t)) / sigmas[i]
        x = x + (sigmas[i + 1] - sigmas[i]) * d
    # float32 rounding of x_hat ~ sigma_hat(T) = 150 on VP (1e-7 relative): 1e-4 absolute
    torch.testing.assert_close(got, x, rtol=1e-5, atol=1e-4)


def test_euler_ancestral_with_eta_one_is_ddpm_ancestral_sampling_on_edm():
    """In the VE form, the posterior from sigma to sigma' has mean ``x0 + sigma'^2 / sigma^2
    (x - x0)`` and variance ``sigma'^2 (sigma^2 - sigma'^2) / sigma^2``: the Euler step to
    ``sigma_down = sigma'^2 / sigma`` plus noise ``sigma_up``. EDM's time grid is its rho
    grid, so both samplers take the same steps and draw the same noise."""
    model = GaussianOracle(EDMProcess(0.002, SIGMA_MAX, 7.0), MU, STD)
    a = EulerAncestral(steps=20).sample(model, 500, torch.Generator().manual_seed(1))
    b = DDPMAncestral(steps=20).sample(model, 500, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_refusals_are_one_line_value_errors():
    velocity = GaussianOracle(LinearPath(), MU, STD, parameterization="velocity")
    noise = GaussianOracle(LinearPath(), MU, STD)
    for sampler in (DPMSolverPP2M(), EulerAncestral()):
        with pytest.raises(ValueError, match="sampler=ode") as info:
            sampler.check_model(velocity)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="alpha = 0") as info:
        RK45ODE().check_model(noise)
    assert "\n" not in str(info.value)
    RK45ODE().check_model(velocity)
    with pytest.raises(ValueError, match="t_min < T"):
        RK45ODE(t_min=1.0).check_model(velocity)
    with pytest.raises(TypeError, match="needs a DiffusionModel"):
        DPMSolverPP2M().check_model(torch.nn.Linear(2, 2))
    # a velocity model on VP runs through denoise; a noise model on VP stops at t = 1e-3
    DPMSolverPP2M().check_model(GaussianOracle(VPSDE(), MU, STD, parameterization="velocity"))
    assert RK45ODE().t_end(GaussianOracle(VPSDE(), MU, STD)) == 1e-3


@pytest.mark.parametrize(
    "sampler, override, key",
    [
        ("dpmpp_2m", "sampler.steps=0", "sampler.steps"),
        ("dpmpp_2m", "sampler.rho=0", "sampler.rho"),
        ("euler_ancestral", "sampler.steps=0", "sampler.steps"),
        ("euler_ancestral", "sampler.eta=-1", "sampler.eta"),
        ("rk45", "sampler.rtol=-1e-5", "sampler.rtol"),
        ("rk45", "sampler.atol=0", "sampler.atol"),
        ("rk45", "sampler.t_min=-0.1", "sampler.t_min"),
    ],
)
def test_bad_solver_settings_fail_at_validation_in_one_line(compose_cfg, sampler, override, key):
    # ddpm_mnist_cpu sets no sampler key of its own (edm_mnist_cpu sets sampler.steps, which
    # rk45 has not: there ~sampler.steps)
    validate(compose_cfg("experiment=ddpm_mnist_cpu", f"sampler={sampler}"))
    cfg = compose_cfg("experiment=ddpm_mnist_cpu", f"sampler={sampler}", override)
    with pytest.raises(ConfigError, match=key) as info:
        validate(cfg)
    assert "\n" not in str(info.value)
