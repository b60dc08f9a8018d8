"""Flow matching (issue 30, part 1): the linear path, the velocity parameterisation, the
conditional flow-matching loss with its couplings and time sampling, and the ODE solver in t,
checked against closed forms. Gaussian data N(mu, s^2 I) stay Gaussian under every path,
x_t ~ N(alpha mu, V I) with V = alpha^2 s^2 + sigma^2, and the flow x_t = alpha mu + sqrt(V) z
carries every marginal, so the exact velocity is alpha' mu + V' / (2 V) (x_t - alpha mu)
and the exact ODE map from the prior draw z_T is known per sample."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy.integrate import quad

from dgm_runner.config import ConfigError, validate
from dgm_runner.metrics.likelihood import pf_ode_log_likelihood
from dgm_runner.models.oracle import GaussianOracle
from dgm_runner.models.score import ScoreUNet
from dgm_runner.objectives.base import Batch
from dgm_runner.objectives.flow_matching import FlowMatching, ot_permutation
from dgm_runner.samplers.diffusion import (
    DDIM,
    DDPMAncestral,
    HeunODE,
    ProbabilityFlowODE,
    ode_time_grid,
)
from dgm_runner.sdes import VESDE, VPSDE, DiscreteDDPM, EDMProcess, LinearPath
from tests.components import _signal_if_asked
from tests.helpers import SMALL, needs_mnist
from tests.resume_check import assert_resume_is_bit_exact

MU, STD = torch.tensor([1.0, -0.5]), 0.5
D = MU.numel()


def linear_closed_form(t: torch.Tensor, sigma_min: float, x: torch.Tensor) -> torch.Tensor:
    """E[d x_t / dt | x_t] for N(MU, STD^2 I) data under the linear path, written out by hand:
    alpha = 1 - t, sigma = sigma_min + (1 - sigma_min) t, V = alpha^2 s^2 + sigma^2,
    V' = -2 alpha s^2 + 2 (1 - sigma_min) sigma."""
    a = (1 - t)[:, None]
    sig = (sigma_min + (1 - sigma_min) * t)[:, None]
    var = a**2 * STD**2 + sig**2
    dvar = -2 * a * STD**2 + 2 * (1 - sigma_min) * sig
    return -MU + dvar / (2 * var) * (x - a * MU)


# ------------------------------------------------------------------- (a) parameterisation


@pytest.mark.parametrize("sigma_min", [0.0, 0.1])
def test_velocity_through_the_noise_prediction_is_the_closed_form(sigma_min):
    """The noise oracle's velocity f x - g^2 score / 2 (through predict_noise) and the velocity
    oracle's own prediction both equal the hand-written closed form, for t inside (0, 1)."""
    sde = LinearPath(sigma_min)
    gen = torch.Generator().manual_seed(0)
    t = torch.rand(64, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    x = torch.randn(64, D, generator=gen, dtype=torch.float64) * 1.5
    mu = MU.double()
    noise = GaussianOracle(sde, mu, STD).double()
    velocity = GaussianOracle(sde, mu, STD, parameterization="velocity").double()
    expected = linear_closed_form(t, sigma_min, x)
    torch.testing.assert_close(noise.velocity(x, t), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(velocity.velocity(x, t), expected, rtol=1e-10, atol=1e-10)
    # and back: the velocity oracle's derived noise / x0 are the noise oracle's
    eps_v, x0_v = velocity.predict_noise_and_x0(x, t)
    eps_n, x0_n = noise.predict_noise_and_x0(x, t)
    torch.testing.assert_close(eps_v, eps_n, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x0_v, x0_n, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "sde",
    [VESDE(0.01, 50.0), VPSDE(0.1, 20.0), EDMProcess(0.002, 80.0, 7.0), DiscreteDDPM(100)],
    ids=["ve", "vp", "edm", "ddpm"],
)
def test_velocity_and_noise_parameterisations_agree_on_every_process(sde):
    """alpha' x0_hat + sigma' eps_hat = f x - g^2 score / 2, and the inverse map from a velocity
    to (eps, x0) recovers the noise oracle's predictions (float32, t between DDPM steps)."""
    gen = torch.Generator().manual_seed(1)
    t = torch.rand(32, generator=gen) * 0.9 + 0.05 + 0.0013
    noise = GaussianOracle(sde, MU, STD)
    velocity = GaussianOracle(sde, MU, STD, parameterization="velocity")
    a, sig = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    x = a * MU + torch.sqrt(a**2 * STD**2 + sig**2) * torch.randn(32, D, generator=gen)
    torch.testing.assert_close(noise.velocity(x, t), velocity.velocity(x, t), rtol=2e-4, atol=2e-4)
    for got, want in zip(velocity.predict_noise_and_x0(x, t), noise.predict_noise_and_x0(x, t)):
        torch.testing.assert_close(got, want, rtol=2e-4, atol=2e-4)


def test_the_linear_path_is_exact_at_both_ends():
    """alpha(1) = 0 exactly, the prior N(0, I) is the marginal at t = 1, sigma_hat(1) = inf maps
    back to 1; a velocity model gives E[eps | x_1] = x_1 and E[x_0 | x_1] = mu at t = 1 and
    x_0 = x at t = 0 (sigma_min = 0) with no division; f and g refuse t = 1."""
    sde = LinearPath()
    ends = torch.tensor([0.0, 1.0])
    assert sde.alpha(ends).tolist() == [1.0, 0.0] and sde.sigma(ends).tolist() == [0.0, 1.0]
    assert sde.prior_std() == 1.0 and math.isinf(float(sde.sigma_hat(ends)[1]))
    assert sde.t_of_sigma_hat(sde.sigma_hat(ends)).tolist() == [0.0, 1.0]
    oracle = GaussianOracle(sde, MU, STD, parameterization="velocity")
    x = torch.randn(8, D, generator=torch.Generator().manual_seed(2))
    eps, x0 = oracle.predict_noise_and_x0(x, torch.ones(8))
    torch.testing.assert_close(eps, x)
    torch.testing.assert_close(x0, MU.expand(8, D))
    _, x0 = oracle.predict_noise_and_x0(x, torch.zeros(8))
    torch.testing.assert_close(x0, x)
    with pytest.raises(ValueError, match="infinite at t = 1"):
        sde.drift(x, torch.ones(8))
    with pytest.raises(ValueError, match="infinite at t = 1"):
        sde.diffusion(torch.ones(8))
    with pytest.raises(ValueError, match="0 <= sigma_min < 1"):
        LinearPath(1.0)


def test_score_unet_velocity_parameterisation_is_the_network_output():
    """preconditioning=velocity: velocity() is F(x, t) itself, eps_hat = x + (1 - t) F and
    x0_hat = x - t F (sigma_min = 0), finite at t = 1; the other parameterisations are not
    changed (none: predict_noise is F)."""
    torch.manual_seed(0)
    model = ScoreUNet((1, 8, 8), LinearPath(), preconditioning="velocity")
    x = torch.randn(3, 1, 8, 8)
    t = torch.tensor([0.0, 0.4, 1.0])
    f = model.net(x, t)
    torch.testing.assert_close(model.velocity(x, t), f)
    eps, x0 = model.predict_noise_and_x0(x, t)
    torch.testing.assert_close(eps, x + (1 - t)[:, None, None, None] * f)
    torch.testing.assert_close(x0, x - t[:, None, None, None] * f)
    assert torch.isfinite(model.score(x[1:], t[1:])).all()
    plain = ScoreUNet((1, 8, 8), LinearPath())
    assert plain.parameterization == "noise"
    torch.testing.assert_close(plain.predict_noise(x, t), plain.net(x, t))
    with pytest.raises(NotImplementedError, match="predicts the noise"):
        plain.predict_velocity(x, t)


# ------------------------------------------------------------------------- (b) samplers

N_SAMPLES = 20_000


def exact_map(sde, z: torch.Tensor, t_end: float) -> torch.Tensor:
    """The probability-flow map of N(MU, STD^2 I) data from the prior draw ``z`` at T
    (``x_T = prior_std z``) to ``t_end``: ``x = a mu + sqrt(V) (x_T - a_T mu) / sqrt(V_T)``."""
    ts = torch.tensor([sde.T, t_end])
    a, sig = sde.alpha(ts).double(), sde.sigma(ts).double()
    var = a**2 * STD**2 + sig**2
    x_t = sde.prior_std() * z.double()
    out = a[1] * MU + torch.sqrt(var[1]) * (x_t - a[0] * MU) / torch.sqrt(var[0])
    return out.float()


# Tolerances of the per-sample map, relative to 1 + |z| (the error grows with the draw):
# Euler is 1st order (error ~ 1/steps), midpoint and Heun 2nd order (Heun's last step, which
# ends at t = 0, is an Euler step); each about 3x what the solver reaches here.
ODE_CASES = {
    "euler": (ProbabilityFlowODE("euler", 400), 4e-3),
    "midpoint": (ProbabilityFlowODE("midpoint", 40), 1e-5),
    "heun": (ProbabilityFlowODE("heun", 40), 1.5e-3),
    "euler_logit": (ProbabilityFlowODE("euler", 400, grid="logit"), 1e-2),
    "midpoint_karras": (ProbabilityFlowODE("midpoint", 40, grid="karras"), 5e-4),
}


def map_error(sampler, sde, oracle, n: int) -> float:
    """Largest ``|x - exact map| / (1 + |z|)`` over ``n`` samples of seed 0."""
    x = sampler.sample(oracle, n, torch.Generator().manual_seed(0))
    z = torch.randn((n, D), generator=torch.Generator().manual_seed(0))
    t_end = max(getattr(sampler, "t_min", 0.0), sde.t_min)
    return float(((x - exact_map(sde, z, t_end)).abs() / (1 + z.abs())).max())


@pytest.mark.parametrize("case", ODE_CASES)
@pytest.mark.parametrize("sigma_min", [0.0, 0.1])
def test_ode_solvers_carry_the_prior_to_the_data_with_the_exact_velocity(case, sigma_min):
    """Each sample lands on the exact map of its own prior draw (within the solver's
    discretisation error), and the samples' mean and std are the data's within 5 standard
    errors (mean: 5 s / sqrt(n); std: 5 s / sqrt(2 n)) + 5 times the map tolerance; at t = 0
    the linear path keeps sigma_min noise, so the std there is sqrt(s^2 + sigma_min^2)."""
    sampler, tol = ODE_CASES[case]
    sde = LinearPath(sigma_min)
    oracle = GaussianOracle(sde, MU, STD, parameterization="velocity")
    assert map_error(sampler, sde, oracle, N_SAMPLES) < tol
    x = sampler.sample(oracle, N_SAMPLES, torch.Generator().manual_seed(0))
    std = math.sqrt(STD**2 + sigma_min**2)
    assert torch.allclose(x.mean(0), MU, atol=5 * std / math.sqrt(N_SAMPLES) + 5 * tol)
    se_std = 5 * std / math.sqrt(2 * N_SAMPLES)
    assert torch.allclose(x.std(0), torch.full((D,), std), atol=se_std + 5 * tol)


@pytest.mark.parametrize("method, order", [("euler", 1), ("midpoint", 2), ("heun", 2)])
def test_ode_solvers_converge_at_their_order(method, order):
    """Doubling the steps (10 -> 20, t_min = 0.05 so that Heun's every step is corrected)
    divides the error of the map by 2 (Euler, within 25 %) or by at least 3 (2nd order;
    the midpoint rule gains more on this field, ~8)."""
    sde = LinearPath()
    oracle = GaussianOracle(sde, MU, STD, parameterization="velocity")
    coarse, fine = (
        map_error(ProbabilityFlowODE(method, n, t_min=0.05), sde, oracle, 2000) for n in (10, 20)
    )
    assert 0.75 * 2**order < coarse / fine, (coarse, fine)
    assert order == 2 or coarse / fine < 1.25 * 2, (coarse, fine)


@pytest.mark.parametrize(
    "sde, sampler, tol",
    [
        (EDMProcess(0.002, 80.0, 7.0), ProbabilityFlowODE("heun", 100), 6e-3),
        (EDMProcess(0.002, 80.0, 7.0), ProbabilityFlowODE("midpoint", 100, grid="karras"), 6e-3),
        (VPSDE(0.1, 20.0), ProbabilityFlowODE("heun", 100, t_min=1e-3), 6e-4),
        (VPSDE(0.1, 20.0), ProbabilityFlowODE("midpoint", 100, grid="karras", t_min=1e-3), 6e-4),
    ],
    ids=["edm_heun", "edm_midpoint_karras", "vp_heun", "vp_midpoint_karras"],
)
def test_ode_solver_works_for_noise_models_of_other_processes(sde, sampler, tol):
    """From the process's own prior (EDM: N(0, 80^2 I); VP: N(0, I)) at T to t_min, a
    noise-predicting oracle's probability-flow velocity f x - g^2 score / 2 lands each sample
    on the exact map (which includes the prior's small mismatch with the marginal at T)."""
    assert map_error(sampler, sde, GaussianOracle(sde, MU, STD), 4000) < tol


@pytest.mark.parametrize(
    "sampler", [DDIM(steps=100), DDPMAncestral(steps=200)], ids=["ddim", "ddpm"]
)
def test_ddim_and_ddpm_run_on_the_linear_path_with_a_velocity_model(sampler):
    """The noise-based samplers apply unchanged (from t = 1, through the derived eps and x0):
    mean and variance of the data within the tolerances of tests/test_diffusion.py."""
    oracle = GaussianOracle(LinearPath(), MU, STD, parameterization="velocity")
    x = sampler.sample(oracle, N_SAMPLES, torch.Generator().manual_seed(0))
    assert torch.allclose(x.mean(0), MU, atol=5 * STD / math.sqrt(N_SAMPLES) + 0.01)
    assert torch.allclose(x.var(0), torch.full((D,), STD**2), rtol=0.06), x.var(0)


def test_samplers_refuse_what_cannot_start_at_t_one():
    """A noise-predicting model on the linear path (x0 = 0 / 0 at t = 1) is refused by ode,
    ddim and ddpm; sampler=heun (sigma_hat infinite at t = 1) refuses the linear path."""
    noise = GaussianOracle(LinearPath(), MU, STD)
    for sampler in (ProbabilityFlowODE(), DDIM(), DDPMAncestral(steps=10)):
        with pytest.raises(ValueError, match="alpha = 0"):
            sampler.check_model(noise)
    velocity = GaussianOracle(LinearPath(), MU, STD, parameterization="velocity")
    with pytest.raises(ValueError, match="sampler=ode"):
        HeunODE().check_model(velocity)
    ProbabilityFlowODE().check_model(velocity)
    DDIM().check_model(velocity)


# ----------------------------------------------------------------------------- (c) loss


def test_cfm_loss_at_the_exact_velocity_has_the_closed_form_minimum():
    """At fixed t the expected loss of the exact velocity is E || u - E[u | x_t] ||^2
    = d s^2 (alpha' sigma - alpha sigma')^2 / V = d s^2 / V (the determinant is 1 on the
    linear path); a velocity perturbed by delta adds exactly d delta^2 in expectation; the
    uniform-t loss is the integral of d s^2 / V(t) over [0, 1]."""
    sde = LinearPath()
    exact = GaussianOracle(sde, MU, STD, parameterization="velocity")
    delta = 0.3
    off = GaussianOracle(sde, MU, STD, perturb=delta, parameterization="velocity")
    objective = FlowMatching()
    gen = torch.Generator().manual_seed(0)
    n = 400_000
    x0 = (MU + STD * torch.randn(n, D, generator=gen)).double()
    noise = torch.randn(n, D, generator=gen).double()
    exact, off = exact.double(), off.double()
    for t_value in (0.0, 0.3, 0.7, 1.0):
        t = torch.full((n,), t_value, dtype=torch.float64)
        at_min = objective.per_example(exact, x0, t, noise)
        var = (1 - t_value) ** 2 * STD**2 + t_value**2
        expected = D * STD**2 / var
        assert abs(float(at_min.mean()) - expected) < 5 * float(at_min.std()) / math.sqrt(n)
        gap = objective.per_example(off, x0, t, noise) - at_min
        assert abs(float(gap.mean()) - D * delta**2) < 5 * float(gap.std()) / math.sqrt(n)
    integral = D * quad(lambda t: STD**2 / ((1 - t) ** 2 * STD**2 + t**2), 0, 1)[0]
    batch = Batch(x0.float(), torch.zeros(n, dtype=torch.long))
    values = objective.evaluate(exact.float(), batch, torch.Generator().manual_seed(1))["fm_loss"]
    assert abs(float(values.mean()) - integral) < 5 * float(values.std()) / math.sqrt(n)
    assert objective.standard_errors() == ("fm_loss",)


# ---------------------------------------------------------------------- (d) minibatch OT


def _total(x0: torch.Tensor, noise: torch.Tensor, perm) -> float:
    """``sum_i || x0_i - noise_perm[i] ||^2`` in float64."""
    return sum(float(((x0[i] - noise[j]).double() ** 2).sum()) for i, j in enumerate(perm))


def test_minibatch_ot_is_the_best_permutation_by_brute_force():
    """For batches of 5 the assignment's total squared distance is the minimum over all 120
    permutations, it is a permutation, and the objective's coupled noise is a reordering of
    the independent draw that never costs more."""
    for seed in range(5):
        gen = torch.Generator().manual_seed(seed)
        x0, noise = torch.randn(5, 3, 2, generator=gen), torch.randn(5, 3, 2, generator=gen)
        perm = ot_permutation(x0, noise)
        assert sorted(perm.tolist()) == list(range(5))

        best = min(_total(x0, noise, p) for p in itertools.permutations(range(5)))
        assert _total(x0, noise, perm.tolist()) == pytest.approx(best, rel=1e-12, abs=1e-12)
    oracle = GaussianOracle(LinearPath(), MU, STD, parameterization="velocity")
    x0 = MU + STD * torch.randn(64, D, generator=torch.Generator().manual_seed(9))
    _, independent = FlowMatching().draw(oracle, x0, torch.Generator().manual_seed(3))
    _, coupled = FlowMatching(coupling="minibatch_ot").draw(
        oracle, x0, torch.Generator().manual_seed(3)
    )
    key = lambda v: sorted(map(tuple, v.tolist()))  # noqa: E731
    assert key(coupled) == key(independent) and not torch.equal(coupled, independent)
    assert ((x0 - coupled) ** 2).sum() <= ((x0 - independent) ** 2).sum()
    assert FlowMatching(coupling="minibatch_ot").data_parallel is False
    assert FlowMatching().data_parallel is True


# ------------------------------------------------------------------------ (e) time sampling


def test_logit_normal_times_have_the_configured_location_and_scale():
    """logit(t) of 200 000 draws: mean m within 5 standard errors (s / sqrt(n)), std s within
    5 of its standard errors (s / sqrt(2 n)); uniform times have mean 1/2 and variance 1/12."""
    n, m, s = 200_000, 0.4, 0.8
    oracle = GaussianOracle(LinearPath(), MU, STD, parameterization="velocity")
    objective = FlowMatching(time_sampling="logit_normal", m=m, s=s)
    t = objective.sample_t(oracle, n, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert float(t.min()) > 0 and float(t.max()) < 1
    logit = torch.log(t.double() / (1 - t.double()))
    assert abs(float(logit.mean()) - m) < 5 * s / math.sqrt(n)
    assert abs(float(logit.std()) - s) < 5 * s / math.sqrt(2 * n)
    u = FlowMatching().sample_t(oracle, n, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert abs(float(u.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert abs(float(u.var()) - 1 / 12) < 0.002


# ------------------------------------------------------------------------------- (f) NFE


class CountingOracle(GaussianOracle):
    """Counts its network evaluations (calls of predict_velocity / predict_noise)."""

    calls = 0

    def predict_velocity(self, x, t):
        self.calls += 1
        return super().predict_velocity(x, t)

    def predict_noise(self, x, t):
        if self.parameterization == "noise":
            self.calls += 1
        return super().predict_noise(x, t)


@pytest.mark.parametrize("sigma_min", [0.0, 0.1])
def test_pf_ode_likelihood_of_a_velocity_model_on_the_linear_path_is_the_closed_form(sigma_min):
    """The probability-flow likelihood integrates the model's velocity up to t = 1, where the
    prior N(0, I) is exact: with the exact velocity of centred Gaussian data N(0, s^2 I) it
    gives the log-density of the path's marginal at t = 0, N(0, (s^2 + sigma_min^2) I) (as
    the noise models of the other processes do in test_diffusion)."""
    sde, std = LinearPath(sigma_min), 0.7
    model = GaussianOracle(sde, torch.zeros(2), std, parameterization="velocity")
    x = 0.7 * torch.randn(100, 2, generator=torch.Generator().manual_seed(4))
    logp, nfe = pf_ode_log_likelihood(model, x, trace="exact", t_min=0.0)
    var = std**2 + sigma_min**2
    exact = -0.5 * (x**2).sum(1) / var - math.log(2 * math.pi * var)
    assert nfe > 10
    assert float((logp - exact).abs().max()) / 2 < 1e-2  # nats per dimension


@pytest.mark.parametrize(
    "method, t_min, sde, expected",
    [
        ("euler", 0.0, LinearPath(), 7),
        ("midpoint", 0.0, LinearPath(), 14),
        ("heun", 0.0, LinearPath(), 13),  # the last step ends at 0: Euler
        ("heun", 0.05, LinearPath(), 14),
        ("heun", 0.0, DiscreteDDPM(100), 14),  # ends at the process's t_min = 1/N > 0
    ],
)
def test_ode_solvers_count_their_network_evaluations(method, t_min, sde, expected):
    parameterization = "velocity" if isinstance(sde, LinearPath) else "noise"
    oracle = CountingOracle(sde, MU, STD, parameterization=parameterization)
    sampler = ProbabilityFlowODE(method, 7, t_min=t_min)
    sampler.sample(oracle, 3, torch.Generator().manual_seed(0))
    assert sampler.nfe == oracle.calls == expected
    assert sampler.expected_nfe(max(t_min, sde.t_min)) == expected


def test_time_grids():
    """Every grid runs from T to t_end exactly and decreases; karras on EDM with its own rho is
    the process's uniform grid; on the linear path (sigma_hat(1) = inf) it is the rho-spacing
    in t; logit is uniform in logit t inside its cut and symmetric about 1/2."""
    for sde in (LinearPath(), EDMProcess(), VPSDE(), VESDE(), DiscreteDDPM(100)):
        for grid in ("uniform", "karras", "logit"):
            t_end = max(0.0, sde.t_min)
            t = ode_time_grid(sde, 9, grid, t_end)
            assert t.shape == (10,) and float(t[0]) == sde.T
            assert float(t[-1]) == float(torch.tensor(t_end, dtype=torch.float32))
            assert (t[1:] < t[:-1]).all(), (type(sde).__name__, grid, t)
    torch.testing.assert_close(
        ode_time_grid(EDMProcess(), 6, "karras", 0.0), torch.linspace(1, 0, 7), atol=1e-5, rtol=0
    )
    frac = torch.linspace(0, 1, 7, dtype=torch.float64)
    torch.testing.assert_close(
        ode_time_grid(LinearPath(), 6, "karras", 0.0, rho=3.0), ((1 - frac) ** 3).float()
    )
    logit = ode_time_grid(LinearPath(), 8, "logit", 0.0, logit_eps=0.01)
    torch.testing.assert_close(logit + logit.flip(0), torch.ones(9))
    u = torch.logit(logit[1:-1].double())
    torch.testing.assert_close(u[1:] - u[:-1], torch.full((6,), float(u[1] - u[0])).double())
    with pytest.raises(ValueError, match="unknown ODE time grid"):
        ode_time_grid(LinearPath(), 3, "cosine", 0.0)


# -------------------------------------------------------------------------------- configs


def test_fm_mnist_cpu_composes_to_the_linear_path_and_a_velocity_model(compose_cfg):
    cfg = compose_cfg("experiment=fm_mnist_cpu")
    validate(cfg)
    assert cfg.model.sde._target_ == "dgm_runner.sdes.LinearPath"
    assert cfg.model.preconditioning == "velocity" and list(cfg.model.net.channels) == [16, 32, 64]
    assert cfg.objective._target_.endswith("FlowMatching") and cfg.sampler.method == "midpoint"
    assert (cfg.trainer.batch_size, cfg.trainer.ema_decay, cfg.sampler.steps) == (128, 0.999, 18)


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.sde.sigma_min=1.0", "model.sde.sigma_min"),
        ("objective.coupling=sinkhorn", "objective.coupling"),
        ("objective.time_sampling=beta", "objective.time_sampling"),
        ("objective.s=0", "objective.s"),
        ("sampler.method=rk4", "sampler.method"),
        ("sampler.grid=cosine", "sampler.grid"),
        ("sampler.logit_eps=0.5", "sampler.logit_eps"),
        ("model.preconditioning=flow", "model.preconditioning"),
    ],
)
def test_bad_flow_matching_settings_fail_before_work_in_one_line(compose_cfg, override, key):
    cfg = compose_cfg("experiment=fm_mnist_cpu", override)
    with pytest.raises(ConfigError, match=key) as info:
        validate(cfg)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------ (g) resume


class SignallingFlowMatching(FlowMatching):
    """``objective=flow_matching`` with the stop signal of ``tests.components.SignallingELBO``
    (a SIGTERM before training step ``step`` when ``$DGM_TEST_SIGNAL_AT`` is
    ``"<rank>:<step>"``); without the variable it is flow matching."""

    def steps(self, model, batch, step):
        _signal_if_asked(step)
        yield from super().steps(model, batch, step)


FM_RUN = [
    "experiment=fm_mnist_cpu",
    *SMALL,
    "model.net.channels=[8,16,16]",
    "model.net.groups=4",
    "model.net.emb_dim=16",
    "logger=none",
    "~sample_metrics.fid",
    "trainer.num_threads=1",
    "trainer.epochs=2",
    "sampler.steps=2",
    "objective.coupling=minibatch_ot",
    "objective.time_sampling=logit_normal",
    "objective._target_=tests.test_flow_matching.SignallingFlowMatching",
]


@needs_mnist
def test_training_resumed_mid_epoch_is_bit_exact(tmp_path, monkeypatch):
    """SIGTERM before step 6 of 8 (epoch 2 of 2, 4 batches of 64); resumed, the run (OT
    coupling, logit-normal times, EMA) ends with the uninterrupted run's weights and metrics
    to the last bit."""
    straight, _ = assert_resume_is_bit_exact(tmp_path, monkeypatch, FM_RUN)
    assert math.isfinite(straight["test/fm_loss"]) and straight["test/fm_loss_se"] > 0
