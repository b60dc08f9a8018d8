"""Diffusion processes, samplers, losses and likelihoods (issue 14) against closed forms:
Gaussian data N(mu, s^2 I) have Gaussian marginals under every process, so the exact
noise prediction, score, density and entropy are known (``GaussianOracle``)."""

import json
import math
import sys

import pytest
import torch

from dgm_runner.data.base import DataSplits
from dgm_runner.loop import train
from dgm_runner.metrics.likelihood import (
    _divergence,
    ddpm_bound,
    discretized_gaussian_log_likelihood,
    pf_ode_bits_per_dim,
    pf_ode_log_likelihood,
)
from dgm_runner.models.oracle import GaussianOracle
from dgm_runner.models.score import ScoreUNet
from dgm_runner.objectives.dsm import DiffusionDSM
from dgm_runner.samplers import DDIM, DDPMAncestral, EulerMaruyama, HeunODE, PredictorCorrector
from dgm_runner.samplers.diffusion import edm_sigma_grid
from dgm_runner.samplers.score import vp_corrector_alpha
from dgm_runner.sdes import VESDE, VPSDE, DiscreteDDPM, EDMProcess, ddpm_betas, gaussian_posterior
from tests.helpers import SMALL, needs_mnist

MU, STD = torch.tensor([1.0, -0.5]), 0.5

PROCESSES = {
    "ve": lambda: VESDE(0.01, 50.0),
    "vp": lambda: VPSDE(0.1, 20.0),
    "ddpm_linear": lambda: DiscreteDDPM(1000, "linear"),
    "ddpm_cosine": lambda: DiscreteDDPM(1000, "cosine"),
    "edm": lambda: EDMProcess(0.002, 80.0, 7.0),
}
SAMPLERS = {
    "ddpm": lambda: DDPMAncestral(steps=1000),
    "ddim": lambda: DDIM(steps=250, eta=0.0),
    "heun": lambda: HeunODE(steps=80),
    "em": lambda: EulerMaruyama(steps=1000),
    "pc": lambda: PredictorCorrector(steps=500, snr=0.16),
}


@pytest.mark.parametrize("process", PROCESSES)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_reproduces_gaussian_moments_with_the_exact_oracle(process, sampler):
    n = 20_000
    x = SAMPLERS[sampler]().sample(
        GaussianOracle(PROCESSES[process](), MU, STD), n, torch.Generator().manual_seed(0)
    )
    assert torch.allclose(x.mean(0), MU, atol=5 * STD / math.sqrt(n) + 0.01)
    var = x.var(0)
    assert torch.allclose(var, torch.full_like(var, STD**2), rtol=0.06), var


@pytest.mark.parametrize("process", PROCESSES)
def test_t_of_sigma_hat_inverts_sigma_hat(process):
    sde = PROCESSES[process]()
    t = torch.linspace(max(sde.t_min, 0.01), 1.0, 37)
    torch.testing.assert_close(sde.t_of_sigma_hat(sde.sigma_hat(t)), t, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("process", PROCESSES)
def test_marginal_variance_solves_the_forward_sde(process):
    # for dx = f x dt + g dw started at a point, Var_t = sigma^2 obeys dVar/dt = 2 f Var + g^2
    sde = PROCESSES[process]()
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64) + 0.0003  # between DDPM steps
    h = 1e-4
    dvar = (sde.sigma(t + h) ** 2 - sde.sigma(t - h) ** 2) / (2 * h)
    expected = 2 * sde.dlog_alpha_dt(t) * sde.sigma(t) ** 2 + sde.diffusion(t) ** 2
    torch.testing.assert_close(dvar.float(), expected.float(), rtol=1e-3, atol=1e-5)


def test_discrete_ddpm_matches_ho_et_al_at_integer_steps():
    sde = DiscreteDDPM(1000, "linear")
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    n = torch.tensor([1, 2, 10, 500, 1000])
    torch.testing.assert_close(
        sde.alpha(n / 1000.0) ** 2, abar[n - 1].float(), rtol=1e-4, atol=1e-7
    )
    # the posterior at consecutive steps: Ho et al. Eq. 7 (mean coefficients, beta_tilde)
    t, s = n[1:] / 1000.0, (n[1:] - 1) / 1000.0
    a, b, v = gaussian_posterior(sde, t, s)
    ab_t, ab_s, beta = abar[n[1:] - 1], abar[n[1:] - 2], betas[n[1:] - 1]
    torch.testing.assert_close(
        a, (torch.sqrt(1 - beta) * (1 - ab_s) / (1 - ab_t)).float(), rtol=1e-3, atol=1e-6
    )
    torch.testing.assert_close(
        b, (torch.sqrt(ab_s) * beta / (1 - ab_t)).float(), rtol=1e-3, atol=1e-6
    )
    torch.testing.assert_close(v, ((1 - ab_s) / (1 - ab_t) * beta).float(), rtol=1e-3, atol=1e-8)
    # the cosine schedule of Nichol & Dhariwal, Eq. 17, and the T-scaled linear one
    cos = ddpm_betas(1000, "cosine")
    f = lambda k: math.cos((k / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert float(torch.cumprod(1 - cos, 0)[499]) == pytest.approx(f(500) / f(0), rel=1e-6)
    assert float(ddpm_betas(100, "linear")[-1]) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="sampler.steps"):
        sde.time_grid(1001, 1e-3)


def test_ddim_with_eta_one_is_ddpm_ancestral_sampling():
    model = GaussianOracle(DiscreteDDPM(100, "linear"), MU, STD)
    a = DDPMAncestral(steps=40).sample(model, 500, torch.Generator().manual_seed(1))
    b = DDIM(steps=40, eta=1.0).sample(model, 500, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "sampler", [DDIM(steps=10, eta=0.0), HeunODE(steps=6)], ids=["ddim", "heun"]
)
def test_ddim_and_heun_are_deterministic_given_the_initial_noise(sampler):
    model = GaussianOracle(VPSDE(), MU, STD)
    gen = torch.Generator().manual_seed(2)
    x = sampler.sample(model, 64, gen)
    after_sampling = gen.get_state()
    gen2 = torch.Generator().manual_seed(2)
    torch.randn((64, 2), generator=gen2)  # the initial noise and nothing else
    assert torch.equal(after_sampling, gen2.get_state())  # (same seed, same x: test_contracts.py)
    assert x.shape == (64, 2)


def test_samplers_count_their_network_evaluations():
    model = GaussianOracle(EDMProcess(), MU, STD)
    calls = {"n": 0}
    original = model.predict_noise

    def counted(x, t):
        calls["n"] += 1
        return original(x, t)

    model.predict_noise = counted
    for sampler, expected in [
        (DDIM(steps=7), 7),
        (DDPMAncestral(steps=9), 9),
        (HeunODE(steps=5), 9),
        (EulerMaruyama(steps=11), 11),
        (PredictorCorrector(steps=6, corrector_steps=2), 18),
    ]:
        calls["n"] = 0
        sampler.sample(model, 4, torch.Generator().manual_seed(0))
        assert sampler.nfe == expected == calls["n"], type(sampler).__name__


def test_edm_grid_is_karras_eq5():
    grid = edm_sigma_grid(18, 0.002, 80.0, 7.0)
    assert grid.shape == (19,) and float(grid[-1]) == 0.0
    assert float(grid[0]) == pytest.approx(80.0, rel=1e-5) and float(grid[-2]) == pytest.approx(
        0.002, rel=1e-4
    )
    i = 5
    assert float(grid[i]) == pytest.approx(
        (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7, rel=1e-5
    )


def test_vp_langevin_corrector_scales_its_step_by_score_sdes_alpha_i():
    """score_sde's LangevinCorrector under the VP SDE: step ``2 alpha_i (snr |z| / |s|)^2``
    with ``alpha_i = 1 - beta_i``, ``beta_i = linspace(beta_min / N, beta_max / N, N)[i]``,
    ``i = floor(t (N - 1))``; under VE ``alpha_i = 1``."""
    vp = VPSDE(0.1, 20.0)
    betas = torch.linspace(0.1 / 1000, 20.0 / 1000, 1000, dtype=torch.float64)
    for t in (1.0, 0.5, 0.001):
        i = int(t * 999)
        assert vp_corrector_alpha(vp, torch.tensor(t), 1000) == pytest.approx(
            1 - float(betas[i]), rel=1e-12
        )
    sampler = PredictorCorrector(steps=10, snr=0.16, corrector_steps=1)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    t = torch.full((8,), 0.5)
    for sde, alpha in ((vp, vp_corrector_alpha(vp, t[0], 10)), (PROCESSES["ve"](), 1.0)):
        model = GaussianOracle(sde, MU, STD)
        out = sampler.correct(model, x, t, torch.Generator().manual_seed(1))
        grad = model.score(x, t)
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
        ratio = z.norm(dim=1).mean() / grad.norm(dim=1).mean()
        step = 2 * alpha * (0.16 * ratio) ** 2
        torch.testing.assert_close(out, x + step * grad + torch.sqrt(2 * step) * z)


def test_heun_reaches_karras_sigma_min_exactly_with_sampler_sigma_min():
    """On the EDM process the default grid's lowest level is sigma_hat(t_min = 1e-3), about
    0.00205; ``sigma_min=0.002`` gives Karras et al.'s grid (their Eq. 5) exactly; a level at
    or above sigma_hat(T) is refused before sampling."""
    model = GaussianOracle(PROCESSES["edm"](), MU, STD)
    default = HeunODE(steps=18).sigmas(model)
    assert 0.00203 < float(default[-2]) < 0.00207
    exact = HeunODE(steps=18, sigma_min=0.002).sigmas(model)
    torch.testing.assert_close(exact, edm_sigma_grid(18, 0.002, 80.0, 7.0))
    assert float(exact[-2]) == pytest.approx(0.002, rel=1e-6)
    with pytest.raises(ValueError, match="sigma_min"):
        HeunODE(sigma_min=100.0).check_model(model)


@pytest.mark.parametrize("process", ["ve", "vp", "ddpm_linear", "edm"])
@pytest.mark.parametrize("weighting,time_sampling", [("sigma2", "process"), ("edm", "lognormal")])
def test_each_loss_is_minimised_by_the_exact_oracle(process, weighting, time_sampling):
    sde = PROCESSES[process]()
    objective = DiffusionDSM(weighting=weighting, time_sampling=time_sampling)
    gen = torch.Generator().manual_seed(3)
    x0 = MU + STD * torch.randn(20_000, 2, generator=gen)
    t = objective.sample_t(GaussianOracle(sde, MU, STD), x0.shape[0], gen, x0.device)
    noise = torch.randn(x0.shape, generator=gen)
    exact = objective.per_example(GaussianOracle(sde, MU, STD), x0, t, noise).mean()
    for delta in (0.05, -0.05):
        assert (
            objective.per_example(GaussianOracle(sde, MU, STD, perturb=delta), x0, t, noise).mean()
            > exact
        )


@pytest.mark.parametrize("process", ["ve", "vp", "ddpm_linear", "edm"])
def test_pf_ode_likelihood_of_gaussian_data_is_the_closed_form(process):
    mu = torch.zeros(2)  # a centred mean: the prior N(0, prior_std^2) then matches p_T
    model = GaussianOracle(PROCESSES[process](), mu, 0.7)
    x = 0.7 * torch.randn(100, 2, generator=torch.Generator().manual_seed(4))
    logp, nfe = pf_ode_log_likelihood(model, x, trace="exact")
    assert nfe > 10
    assert float((logp - model.log_density(x)).abs().max()) / 2 < 1e-2  # nats per dimension


def test_hutchinson_divergence_is_unbiased_with_its_known_variance():
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(6, 6, generator=gen)
    fn = lambda x: x @ a.T  # noqa: E731  (Jacobian a, divergence tr a)
    r = 20_000
    probe = torch.randint(0, 2, (r, 6), generator=gen).float() * 2 - 1
    _, est = _divergence(fn, torch.randn(r, 6, generator=gen), probe)
    _, exact = _divergence(fn, torch.randn(3, 6), None)
    torch.testing.assert_close(exact, torch.full((3,), float(torch.trace(a))))
    off = ~torch.eye(6, dtype=torch.bool)
    var = float((a[off] * (a[off] + a.T[off])).sum())  # Var z^T A z for Rademacher z
    assert abs(float(est.mean()) - float(torch.trace(a))) < 4 * math.sqrt(var / r)
    assert float(est.var()) == pytest.approx(var, rel=0.1)


def test_bits_per_dim_units_follow_the_dequantization_formula():
    # a centred "image" model whose exact density is known: bits/dim from the PF ODE must
    # equal (-(log N(2y - 1) + D log 2) / D + log 256) / log 2 on the same dequantized y
    shape = (1, 2, 2)
    sde = VPSDE()
    mu = torch.zeros(shape)
    model = GaussianOracle(sde, mu, 0.6)
    model.centered = True
    k = torch.randint(0, 256, (8, *shape), generator=torch.Generator().manual_seed(6)).float()
    data = DataSplits(
        "toy",
        k / 255,
        torch.zeros(8, dtype=torch.long),
        k / 255,
        torch.zeros(8, dtype=torch.long),
        1,
        False,
    )
    out = pf_ode_bits_per_dim(
        model, None, data, seed=7, final=True, n=8, batch_size=8, trace="exact"
    )
    y = (k + torch.rand(k.shape, generator=torch.Generator().manual_seed(7))) / 256
    z = (2 * y - 1).flatten(1)
    d = 4
    logp_z = -0.5 * (z**2).sum(1) / 0.36 - 0.5 * d * math.log(2 * math.pi * 0.36)
    expected = ((-(logp_z + d * math.log(2)) / d + math.log(256)) / math.log(2)).mean()
    assert out["bits_per_dim"] == pytest.approx(float(expected), abs=0.02)
    assert out["bits_per_dim_n"] == 8


def test_discretized_decoder_is_a_distribution_over_the_256_values():
    values = torch.linspace(-1, 1, 256)[:, None]  # one dimension, every 8-bit value
    for mean, std in [(0.3, 0.01), (-0.99, 0.2), (0.999, 0.05)]:
        logp = discretized_gaussian_log_likelihood(
            values, torch.full_like(values, mean), std, 1 / 255, -1.0, 1.0
        )
        assert float(logp.exp().sum()) == pytest.approx(1.0, abs=1e-4)


def test_ddpm_bound_is_above_the_entropy_and_tightens_with_more_steps():
    # E[-ELBO] >= E[-log p_theta] >= H(data); with the exact epsilon the gap shrinks with N
    entropy = 0.5 * 2 * math.log(2 * math.pi * math.e * STD**2)
    bounds = []
    for steps in (10, 100, 1000):
        model = GaussianOracle(DiscreteDDPM(steps, "linear"), MU, STD)
        x = MU + STD * torch.randn(4000, 2, generator=torch.Generator().manual_seed(8))
        nats = ddpm_bound(model, x, torch.Generator().manual_seed(9), decoder="gaussian")
        se = float(nats.std()) / math.sqrt(len(nats))
        bounds.append(float(nats.mean()))
        assert bounds[-1] > entropy - 3 * se
    assert bounds[0] > bounds[1] > bounds[2]
    with pytest.raises(TypeError, match="discrete DDPM"):
        ddpm_bound(GaussianOracle(VPSDE(), MU, STD), MU[None], None)


def test_edm_preconditioning_follows_karras_table1():
    captured = {}

    class FakeNetwork(torch.nn.Module):  # F = 1, recording its input
        in_channels = out_channels = 1

        def forward(self, x, cond):
            captured["x"], captured["cond"] = x, cond
            return torch.ones_like(x)

    unet = ScoreUNet(
        (1, 8, 8),
        EDMProcess(sigma_min=0.002, sigma_max=80.0),
        FakeNetwork(),
        preconditioning="edm",
        centered=True,
    )
    x = torch.randn(3, 1, 8, 8)
    t = torch.tensor([0.1, 0.5, 0.9])
    s = unet.sde.sigma(t)
    x0 = unet.denoise(x, t)
    sd = 0.5
    c_skip, c_out, c_in = (
        sd**2 / (s**2 + sd**2),
        s * sd / (s**2 + sd**2).sqrt(),
        1 / (s**2 + sd**2).sqrt(),
    )
    torch.testing.assert_close(x0, c_skip[:, None, None, None] * x + c_out[:, None, None, None])
    torch.testing.assert_close(captured["x"], c_in[:, None, None, None] * x)
    torch.testing.assert_close(captured["cond"], torch.log(s) / 4)


@needs_mnist
@pytest.mark.parametrize("experiment", ["ddpm_mnist_cpu", "edm_mnist_cpu"])
def test_diffusion_experiment_smoke_run_writes_the_contract_and_bits_per_dim(
    compose_cfg, tmp_path, experiment, monkeypatch, capsys
):
    discrete = experiment == "ddpm_mnist_cpu"
    cfg = compose_cfg(
        f"experiment={experiment}",
        *SMALL,
        "model.net.channels=[8,16,16]",
        "model.net.groups=4",
        *(["model.sde.timesteps=20"] if discrete else []),
        "sampler.steps=3",
        "~sample_metrics.fid",
        "sample_metrics.bpd.n=2",
        "sample_metrics.bpd.rtol=1e-2",
        "sample_metrics.bpd.atol=1e-2",
        *(["sample_metrics.bpd_vlb.n=2"] if discrete else []),
    )
    final = train(cfg, tmp_path)
    assert final["status"] == "completed"
    assert 0 < final["test/bits_per_dim"] < 100 and final["test/bits_per_dim_n"] == 2
    if discrete:  # the discrete model also has Ho et al.'s bound
        assert final["test/bits_per_dim_vlb"] > 0
    for rel in (
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "metrics.jsonl",
        "samples/final.png",
        "tb",
    ):
        assert (tmp_path / rel).exists(), rel
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "completed"
    if discrete:  # the commands below are the same for both processes: run once (EDM)
        return
    # any fitting sampler samples the trained run; a wrong name is one line (in-process: a
    # console script's main(), as a user's command line runs it, without 5 s of start-up)
    for sampler in ("ddim", "heun", "ddpm", "euler_maruyama"):
        code, err = _main(
            monkeypatch, capsys, "dgm-sample", str(tmp_path), f"sampler={sampler}",
            "sampler.steps=3", "n=4",
        )  # fmt: skip
        assert code == 0, err
        assert (tmp_path / "samples" / f"sample_{sampler}_steps3_n4_seed0.png").is_file()
    code, err = _main(
        monkeypatch, capsys, "dgm-eval", str(tmp_path), "sampler=ddim", "sampler.steps=2"
    )
    assert code == 0, err
    record = json.loads((tmp_path / "eval" / "metrics_ddim_steps=2.json").read_text())
    assert record["sampler"]["steps"] == 2 and "test/bits_per_dim" in record
    _check_sampler_table(tmp_path)
    capsys.readouterr()  # the table's progress bar
    code, err = _main(monkeypatch, capsys, "dgm-sample", str(tmp_path), "sampler=nope")
    assert code == 1 and "choose one of" in err and len(err.strip().splitlines()) == 1


def _main(monkeypatch, capsys, tool: str, *args: str) -> tuple[int, str]:
    """``tool args`` run in-process through its console entry point: ``(exit status, stderr)``."""
    from dgm_runner.cli import eval as evaluate
    from dgm_runner.cli import sample

    monkeypatch.setattr(sys, "argv", [tool, *args])
    code = 0
    try:
        {"dgm-sample": sample.main, "dgm-eval": evaluate.main}[tool]()
    except SystemExit as exit_:
        code = exit_.code or 0
    return code, capsys.readouterr().err


def _check_sampler_table(run_dir):
    """scripts/sampler_table.py's rows on a trained run: one row per (sampler, steps), the
    sampler's own NFE count (Heun: 2 N - 1), the extra keys, the scores and the feature
    extractor's identity in every record, and the three files."""
    from dgm_runner.cli.sampler_table import sampler_table, write
    from dgm_runner.metrics.features import SHIPPED

    specs = ["heun:2,3", "ddim:3+clip=true", "rk45+rtol=0.01+atol=0.01"]
    seen = []  # the rows so far after each row: what the console entry writes as it goes
    rows = sampler_table(run_dir, specs, n=12, batch_size=6, on_row=seen.append)
    assert [len(done) for done in seen] == [1, 2, 3, 4] and seen[-1] == rows
    assert seen[1] == rows[:2]
    assert [(r["sampler"], r["steps"], r["nfe"]) for r in rows[:3]] == [
        ("heun", 2, 3),
        ("heun", 3, 5),
        ("ddim", 3, 3),
    ]
    # the adaptive solver: no steps, its own NFE count (SciPy's nfev over the batches)
    assert rows[3]["sampler"] == "rk45" and rows[3]["steps"] is None and rows[3]["nfe"] > 0
    assert rows[2]["clip"] is True and "clip" not in rows[0]
    for r in rows:
        assert r["n"] == 12 and r["fid"] > 0 and r["seconds_per_1000"] > 0
        assert 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1
        assert r["classifier_sha256"] == SHIPPED["mnist"].sha256 and r["classifier_shipped"]
        assert r["reference"] == "grey test images"
    write(rows, run_dir / "eval" / "table")
    assert json.loads((run_dir / "eval" / "table.json").read_text()) == rows
    md = (run_dir / "eval" / "table.md").read_text()
    assert "| ddim, clip=True | 3 | 3 |" in md and "sha256" not in md
    assert f"| rk45, rtol=0.01, atol=0.01 | - | {rows[3]['nfe']} |" in md
    assert (run_dir / "eval" / "table.png").stat().st_size > 0


def test_sampler_table_rows_parse_and_bad_rows_are_one_line_errors():
    from dgm_runner.cli.sampler_table import format_markdown, parse_rows
    from dgm_runner.config import ConfigError

    assert parse_rows(["ddim:10,20", "ddim:5+eta=1.0+clip=true"]) == [
        ("ddim", 10, {}),
        ("ddim", 20, {}),
        ("ddim", 5, {"eta": 1.0, "clip": True}),
    ]
    for bad in ("ddim", "ddim:", ":10", "ddim+eta=1"):
        with pytest.raises(ConfigError, match="expected <sampler entry>"):
            parse_rows([bad])
    assert parse_rows(["rk45", "rk45+rtol=0.001"]) == [
        ("rk45", None, {}),
        ("rk45", None, {"rtol": 0.001}),
    ]
    with pytest.raises(ConfigError, match="sampler rk45 takes no steps"):
        parse_rows(["rk45:10"])
    with pytest.raises(ConfigError, match="sampler=nope is not a sampler: choose one of .*ddim"):
        parse_rows(["nope:10"])
    row = {
        "sampler": "ddim",
        "steps": 5,
        "eta": 1.0,
        "nfe": 5,
        "seconds_per_1000": 2.0,
        "fid": 10.0,
        "kid": 1.0,
        "kid_std": 0.1,
        "precision": 0.5,
        "recall": 0.4,
        "n": 100,
    }
    assert "| ddim, eta=1.0 | 5 | 5 | 10.0 |" in format_markdown([row])


def test_bad_diffusion_settings_fail_before_training_with_one_line(compose_cfg, tmp_path):
    from dgm_runner.config import ConfigError, validate

    for override, key in (
        ("sampler.eta=2", "sampler.eta"),
        ("model.sde=foo", "model.sde"),
        ("model.preconditioning=karras", "model.preconditioning"),
        ("sampler.steps=0", "sampler.steps"),
    ):
        cfg = compose_cfg("experiment=ddpm_mnist_cpu", override)
        with pytest.raises(ConfigError, match=key):
            validate(cfg)
    with pytest.raises(ValueError, match=r"sampler.steps must be in \[1, 100\]"):
        DDPMAncestral(steps=101).check_model(GaussianOracle(DiscreteDDPM(100), MU, STD))
    with pytest.raises(TypeError, match="needs a DiffusionModel"):
        HeunODE().check_model(torch.nn.Linear(2, 2))
