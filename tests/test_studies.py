"""The studies (``dgm-study``): measured values against the closed forms of the seeds' questions.

Each study runs with small parameters and fixed seeds; the tolerances are a few standard
errors for Monte-Carlo numbers and round-off for exact ones, and where possible the
closed form is restated here independently of the study's own code.
"""

from __future__ import annotations

import csv
import inspect
import json
import math
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import get_method
from omegaconf import OmegaConf

from dgm_runner import CONFIG_DIR
from dgm_runner.cli.study import positional_study
from dgm_runner.config import ConfigError, Range
from dgm_runner.studies import (
    STUDIES,
    all_studies,
    bm_meanfield,
    call_study,
    dummy_gan,
    gaussian_kl,
    grad_variance,
    meanfield_families,
    mfvi_blr,
    noisy_inputs,
    optimal_discriminator,
    validate_study,
)


def _assert_result_files(out_dir: Path, result: dict) -> None:
    assert json.loads((out_dir / "result.json").read_text())["study"] == result["study"]
    pngs = list(out_dir.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


# --- grad_variance (seed 000 Q2, seed 004 Q1) --------------------------------------------


def test_reinforce_variance_closed_form_by_hand():
    # d = 1, mu = 0: estimate = 0.5 eps^2 * eps, E[eps^6] / 4 = 15 / 4.
    assert grad_variance.total_variance("reinforce", 1, 0.0) == pytest.approx(15 / 4)
    # d = 1, mu = 1: E[(0.5 (1 + eps)^2 eps)^2] - 1; (1 + e)^4 e^2 = e^2 + 4e^3 + 6e^4 + 4e^5 + e^6,
    # odd moments vanish, E e^2 = 1, E e^4 = 3, E e^6 = 15.
    expected = 0.25 * (1 + 6 * 3 + 15) - 1
    assert grad_variance.total_variance("reinforce", 1, 1.0) == pytest.approx(expected)
    # grows like d^3 (ratio 8 per doubling), the baseline version like d^2, reparameterization
    # like d
    big = 2**14
    for method, ratio in (("reinforce", 8), ("reinforce_baseline", 4), ("reparam", 2)):
        assert grad_variance.total_variance(method, 2 * big, 1.0) / grad_variance.total_variance(
            method, big, 1.0
        ) == pytest.approx(ratio, rel=2e-3)
    assert grad_variance.total_variance("reinforce", big, 1.0) / big**3 == pytest.approx(
        0.25, rel=2e-3
    )


def test_grad_variance_matches_closed_forms(tmp_path):
    result = grad_variance.run(tmp_path, dims=(1, 4, 16, 64), n_samples=4000, slope_from=4)
    for row in result["per_dim"]:
        for method in grad_variance.METHODS:
            s = row[method]
            assert abs(s["mean_chi2_z"]) < 4, (row["d"], method)  # unbiased: mean = mu
            assert abs(s["var"] - s["var_closed_form"]) < 4 * s["var_se"], (row["d"], method)
    d64 = result["per_dim"][-1]
    assert d64["reinforce"]["var"] > 100 * d64["reparam"]["var"]
    slopes = {
        c["quantity"].split(":")[0]: c["measured"]
        for c in result["checks"]
        if "slope" in c["quantity"]
    }
    assert slopes["reparam"] == pytest.approx(1.0, abs=0.05) and slopes["reinforce"] > 2.3
    assert all(c["ok"] for c in result["checks"])
    _assert_result_files(tmp_path, result)


def test_grad_variance_large_mean_checks_every_term_of_the_reinforce_variance(tmp_path):
    # With ||mu|| = 3 each term of d(d+2)(d+4)/4 + a(d+2)^2/2 + a^2 d/4 - a is > 4 SE at some
    # d <= 4.
    result = grad_variance.run(tmp_path, dims=(1, 2, 4), n_samples=20000, mu_norm=3.0, slope_from=1)
    for row in result["per_dim"]:
        for method in grad_variance.METHODS:
            s = row[method]
            assert abs(s["var"] - s["var_closed_form"]) < 4 * s["var_se"], (row["d"], method)


def test_grad_variance_of_an_l_sample_estimate_is_divided_by_l(tmp_path):
    result = grad_variance.run(
        tmp_path, dims=(8, 16), n_samples=3000, n_per_estimate=4, slope_from=8
    )
    for row in result["per_dim"]:
        for method in grad_variance.METHODS:
            s = row[method]
            assert s["var_closed_form"] == pytest.approx(
                grad_variance.total_variance(method, row["d"], 1.0) / 4
            )
            assert abs(s["var"] - s["var_closed_form"]) < 4 * s["var_se"]


# --- mfvi_blr (seed 000 Q3) ----------------------------------------------------------------


def _blr_data(seed=1, n=40, d=3, sigma=0.7):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, X @ rng.standard_normal(d) + sigma * rng.standard_normal(n), rng


def test_blr_closed_form_elbo_at_an_arbitrary_q():
    X, y, rng = _blr_data()
    mu, s, sigma = rng.standard_normal(3), rng.uniform(0.1, 1.0, 3), 0.9
    value = mfvi_blr.elbo(X, y, mu, s, sigma)
    mc, se = mfvi_blr.elbo_monte_carlo(X, y, mu, s, sigma, 20000, rng)
    assert abs(mc - value) < 4 * se
    mean, precision = mfvi_blr.exact_posterior(X, y, sigma)
    kl = mfvi_blr.kl_to_posterior(mu, s, mean, precision)
    assert kl > 0 and value + kl == pytest.approx(mfvi_blr.log_evidence(X, y, sigma), abs=1e-8)
    assert mfvi_blr.finite_difference_error(X, y, mu, s, sigma) < 1e-5


def test_mfvi_blr_optimum_is_the_posterior_mean_with_reciprocal_precision_diagonal(tmp_path):
    result = mfvi_blr.run(tmp_path, n_data=60, dim=3, n_steps=2000, n_mc=5000)
    fitted, exact = result["fitted"], result["exact"]
    np.testing.assert_allclose(fitted["mu"], exact["posterior_mean"], atol=1e-6)
    np.testing.assert_allclose(np.square(fitted["s"]), exact["meanfield_var"], rtol=1e-6)
    assert np.all(
        np.asarray(exact["meanfield_var"]) < np.asarray(exact["posterior_var"])
    )  # mean field under-covers
    mc = result["elbo_monte_carlo"]
    assert abs(mc["mean"] - fitted["elbo"]) < 4 * mc["se"]
    assert fitted["elbo"] + exact["kl_q_posterior"] == pytest.approx(
        exact["log_evidence"], abs=1e-6
    )
    assert all(c["ok"] for c in result["checks"])
    _assert_result_files(tmp_path, result)


def test_mfvi_blr_too_large_step_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="lr="):
        mfvi_blr.run(tmp_path, lr=50.0, n_steps=50)


# --- bm_meanfield (seed 000 Q1) ------------------------------------------------------------


def test_synchronous_updates_oscillate_on_the_two_unit_counter_example():
    a, b0 = 10.0, 2.5
    A, b = np.array([[0.0, -a], [-a, 0.0]]), np.array([b0, b0])
    traj = bm_meanfield.synchronous(b, A, 400)
    assert np.abs(traj[-1] - traj[-3]).max() < 1e-12  # period 2 ...
    assert np.abs(traj[-1] - traj[-2]).min() > 0.5  # ... and not a fixed point
    p, q = traj[-1, 0], traj[-2, 0]
    sig = 1 / (1 + math.exp(-(b0 - a * q)))
    assert p == pytest.approx(sig, abs=1e-12)
    seq, bounds = bm_meanfield.sequential(b, A, 400, 1e-12)
    assert np.abs(seq[-1] - seq[-2]).max() < 1e-12 and np.diff(bounds).min() >= -1e-12
    assert sorted(seq[-1]) == pytest.approx(
        sorted([p, q]), abs=1e-9
    )  # (p, q) is a fixed point of (4)


def test_sequential_updates_never_decrease_the_bound():
    rng = np.random.default_rng(3)
    for _ in range(20):
        W, A, _, x = bm_meanfield.random_model(rng, 6, 7, 5.0)
        _, bounds = bm_meanfield.sequential(W.T @ x, A, 50)
        assert np.diff(bounds).min() >= -1e-10


def test_bm_meanfield_study(tmp_path):
    result = bm_meanfield.run(tmp_path, scales=(0.1, 1.0, 8.0), n_models=30, max_iter=300)
    sweep = {r["scale"]: r for r in result["sweep"]}
    assert sweep[0.1]["sync_converged"] == 1.0  # a contraction at this scale
    assert sweep[8.0]["sync_converged"] < 1.0  # strong couplings: some do not converge
    enum = result["enumeration"]
    assert enum["bound"] <= enum["log_px"]
    assert result["two_cycle"]["instability"] > 1
    assert all(c["ok"] for c in result["checks"])
    _assert_result_files(tmp_path, result)


# --- meanfield_families (seed 002 Problem 1) -----------------------------------------------


def test_meanfield_families_minimisers(tmp_path):
    result = meanfield_families.run(tmp_path, n_min=2, n_max=7, grid_size=201, n_random=50)
    for row in result["per_N"]:
        n = row["N"]
        assert row["log_Z"] == pytest.approx(math.log(2**n - 1), abs=1e-12)
        assert row["Q2_theta"] == 0.0 and row["Q2_kl"] == pytest.approx(
            math.log(2**n - 1), abs=1e-12
        )
        assert sorted(row["Q1_theta_cavi"]) == pytest.approx([0.0] + [0.5] * (n - 1), abs=1e-12)
        assert row["Q1_kl_cavi"] == pytest.approx(math.log((2**n - 1) / 2 ** (n - 1)), abs=1e-12)
        assert row["Q1_kl_seed_factor"] == pytest.approx(row["Q1_kl_cavi"], abs=1e-9)
        assert row["Q1_free_energy"] <= row["log_Z"]
    assert all(c["ok"] for c in result["checks"])
    _assert_result_files(tmp_path, result)


def test_any_mass_on_all_ones_makes_the_kl_infinite():
    kl, free_energy, _ = meanfield_families.kl_and_free_energy(np.full(4, 1e-3))
    assert kl == math.inf and free_energy == -math.inf


# --- noisy_inputs (seed 000 EC-1) ----------------------------------------------------------


def test_noisy_input_cdf_is_the_integral_of_the_density():
    y = torch.linspace(-6, 6, 121, dtype=torch.float64)
    h = 1e-5
    torch.testing.assert_close(
        (noisy_inputs.cdf(y + h) - noisy_inputs.cdf(y - h)) / (2 * h),
        noisy_inputs.density(y),
        atol=1e-8,
        rtol=0,
    )
    assert float(noisy_inputs.cdf(torch.tensor([-math.inf], dtype=torch.float64))) == 0.0
    assert float(noisy_inputs.cdf(torch.tensor([math.inf], dtype=torch.float64))) == 1.0


def test_noisy_inputs_study(tmp_path):
    result = noisy_inputs.run(tmp_path, n_samples=100000, dims=(1, 2, 4), bandwidths=(1.0, 0.5))
    hist = result["histogram"]
    assert abs(hist["chi2"] - hist["dof"]) < 4 * math.sqrt(2 * hist["dof"])
    for o in result["origin"]:
        assert o["enumeration"] == pytest.approx((2 * math.pi * math.e) ** (-o["d"] / 2), rel=1e-12)
        for k in o["kde"]:
            assert abs(k["mc"] - k["exact_mean"]) < 4 * k["se"]
    assert all(c["ok"] for c in result["checks"])
    _assert_result_files(tmp_path, result)


# --- gaussian_kl (seed 001 Q1 g-h) ---------------------------------------------------------


def test_gaussian_kl_study(tmp_path):
    cases = ((0.0, 1.0, 1.0), (3.0, -1.0, 2.0), (0.5, 0.5, 0.3))
    result = gaussian_kl.run(tmp_path, n_samples=20000, cases=cases)
    for (mu_phi, mu_p, sigma), row in zip(cases, result["cases"]):
        assert row["kl_self_mc"] == 0.0
        expected = (mu_p - mu_phi) ** 2 / (2 * sigma**2)
        assert row["kl_closed_form"] == pytest.approx(expected)
        assert abs(row["kl_mc"] - expected) <= 4 * row["se"] + 1e-12
    assert all(c["ok"] for c in result["checks"])
    _assert_result_files(tmp_path, result)


# --- optimal_discriminator (seed 001 Q3 c-d) -----------------------------------------------


def test_trained_discriminator_approaches_d_star(tmp_path):
    result = optimal_discriminator.run(
        tmp_path, steps=800, batch_size=256, n_eval=50000, grid_points=4001
    )
    obj = result["objective"]
    assert obj["D_star_quadrature"] == pytest.approx(2 * result["jsd"] - math.log(4), abs=1e-9)
    assert (
        abs(obj["D_star_monte_carlo"] - obj["D_star_quadrature"]) < 4 * obj["D_star_monte_carlo_se"]
    )
    assert obj["trained_quadrature"] <= obj["D_star_quadrature"]
    assert result["discriminator_error"]["mean_abs_under_M"] < 0.02
    assert all(c["ok"] for c in result["checks"])
    _assert_result_files(tmp_path, result)


def test_identical_densities_give_d_one_half_and_minus_log_4():
    p = optimal_discriminator.Mixture([0.3], [1.2], [1.0], "p")
    grid = torch.linspace(-12, 12, 8001, dtype=torch.float64)
    log_d, log_1md = optimal_discriminator.log_d_star(grid, p, p)
    torch.testing.assert_close(log_d.exp(), torch.full_like(grid, 0.5))
    assert optimal_discriminator.jsd_quadrature(grid, p, p) == pytest.approx(0.0, abs=1e-12)
    assert optimal_discriminator.objective_quadrature(grid, p, p, log_d, log_1md) == pytest.approx(
        -math.log(4)
    )


# --- all, the CLI, parameters --------------------------------------------------------------


def test_all_writes_one_summary_table(tmp_path):
    result = all_studies.run(
        tmp_path,
        studies=["gaussian_kl", "meanfield_families"],
        overrides={"gaussian_kl": {"n_samples": 2000}, "meanfield_families": {"n_max": 4}},
    )
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["study", "quantity", "measured", "closed_form", "agreement", "ok"]
    assert {r["study"] for r in rows} == {"gaussian_kl", "meanfield_families"}
    assert len(rows) == len(result["checks"]) and all(r["ok"] == "True" for r in rows)
    assert (
        "| study | quantity | measured | closed form | agreement |"
        in (tmp_path / "summary.md").read_text()
    )
    for name in ("gaussian_kl", "meanfield_families"):
        assert (tmp_path / name / "result.json").is_file()
    assert (tmp_path / "summary.png").is_file()


def test_dgm_study_cli_with_a_positional_study_name(tmp_path):
    script = str(Path(sys.executable).parent / "dgm-study")
    proc = subprocess.run(
        [script, "gaussian_kl", f"hydra.run.dir={tmp_path}"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["study"] == "gaussian_kl" and all(c["ok"] for c in result["checks"])
    assert list(tmp_path.glob("*.png"))
    assert "KL(q" in proc.stdout


def test_positional_study_name():
    assert positional_study(["grad_variance", "study.seed=1"]) == [
        "study=grad_variance",
        "study.seed=1",
    ]
    assert positional_study(["study=all", "x"]) == ["study=all", "x"]
    assert positional_study(["--cfg", "job", "gaussian_kl"]) == [
        "--cfg",
        "job",
        "study=gaussian_kl",
    ]
    assert positional_study(["-m", "study=a,b"]) == ["-m", "study=a,b"]


# Each parameter bound declared by the annotations of a study's ``run`` (and refused by
# ``dgm-study`` before the study runs): (study, key, bad value, the one-line message).
_NAN, _INF = float("nan"), float("inf")
BAD_PARAMETERS = [
    ("grad_variance", "seed", -1, "study.seed=-1 is invalid: must be >= 0"),
    ("grad_variance", "dims", [0, 4], "study.dims[0]=0 is invalid: must be >= 1"),
    ("grad_variance", "n_samples", 1, "study.n_samples=1 is invalid: must be >= 2"),
    ("grad_variance", "n_per_estimate", 0, "study.n_per_estimate=0 is invalid: must be >= 1"),
    ("grad_variance", "mu_norm", -1.0, "study.mu_norm=-1.0 is invalid: must be >= 0"),
    ("grad_variance", "mu_norm", _INF, "study.mu_norm=inf is invalid: must be a finite number"),
    ("grad_variance", "slope_from", 0, "study.slope_from=0 is invalid: must be >= 1"),
    ("grad_variance", "z_tol", 0.0, "study.z_tol=0.0 is invalid: must be > 0"),
    ("mfvi_blr", "seed", -1, "study.seed=-1 is invalid: must be >= 0"),
    ("mfvi_blr", "n_data", 1, "study.n_data=1 is invalid: must be >= 2"),
    ("mfvi_blr", "dim", 0, "study.dim=0 is invalid: must be >= 1"),
    ("mfvi_blr", "sigma_true", -1.0, "study.sigma_true=-1.0 is invalid: must be > 0"),
    ("mfvi_blr", "lr", -1, "study.lr=-1 is invalid: must be > 0"),
    ("mfvi_blr", "n_steps", 0, "study.n_steps=0 is invalid: must be >= 1"),
    ("mfvi_blr", "n_mc", 1, "study.n_mc=1 is invalid: must be >= 2"),
    ("mfvi_blr", "z_tol", -4.0, "study.z_tol=-4.0 is invalid: must be > 0"),
    ("bm_meanfield", "seed", -1, "study.seed=-1 is invalid: must be >= 0"),
    ("bm_meanfield", "visible", 0, "study.visible=0 is invalid: must be >= 1"),
    ("bm_meanfield", "hidden", 1, "study.hidden=1 is invalid: must be >= 2"),
    ("bm_meanfield", "scales", [1.0, -0.5], "study.scales[1]=-0.5 is invalid: must be > 0"),
    ("bm_meanfield", "n_models", 0, "study.n_models=0 is invalid: must be >= 1"),
    ("bm_meanfield", "max_iter", 2, "study.max_iter=2 is invalid: must be >= 3"),
    ("bm_meanfield", "tol", 0.0, "study.tol=0.0 is invalid: must be > 0"),
    ("bm_meanfield", "tol", _NAN, "study.tol=nan is invalid: must be a finite number"),
    ("bm_meanfield", "cycle_coupling", 0.0, "study.cycle_coupling=0.0 is invalid: must be > 0"),
    (
        "bm_meanfield",
        "cycle_bias",
        _INF,
        "study.cycle_bias=inf is invalid: must be a finite number",
    ),
    ("bm_meanfield", "enum_visible", 0, "study.enum_visible=0 is invalid: must be >= 1"),
    ("bm_meanfield", "enum_hidden", 1, "study.enum_hidden=1 is invalid: must be >= 2"),
    ("meanfield_families", "seed", -1, "study.seed=-1 is invalid: must be >= 0"),
    ("meanfield_families", "n_min", 1, "study.n_min=1 is invalid: must be >= 2"),
    ("meanfield_families", "n_max", 30, "study.n_max=30 is invalid: must be <= 14"),
    ("meanfield_families", "n_max", 1, "study.n_max=1 is invalid: must be >= 2"),
    ("meanfield_families", "grid_size", 1, "study.grid_size=1 is invalid: must be >= 2"),
    ("meanfield_families", "n_random", 0, "study.n_random=0 is invalid: must be >= 1"),
    ("noisy_inputs", "seed", -1, "study.seed=-1 is invalid: must be >= 0"),
    ("noisy_inputs", "n_samples", 1, "study.n_samples=1 is invalid: must be >= 2"),
    ("noisy_inputs", "n_bins", 0, "study.n_bins=0 is invalid: must be >= 1"),
    ("noisy_inputs", "y_range", 0.0, "study.y_range=0.0 is invalid: must be > 0"),
    ("noisy_inputs", "dims", [0], "study.dims[0]=0 is invalid: must be >= 1"),
    ("noisy_inputs", "dims", [1, 17], "study.dims[1]=17 is invalid: must be <= 16"),
    ("noisy_inputs", "bandwidths", [0.0], "study.bandwidths[0]=0.0 is invalid: must be > 0"),
    ("noisy_inputs", "z_tol", 0.0, "study.z_tol=0.0 is invalid: must be > 0"),
    ("gaussian_kl", "seed", -1, "study.seed=-1 is invalid: must be >= 0"),
    ("gaussian_kl", "n_samples", 1, "study.n_samples=1 is invalid: must be >= 2"),
    ("gaussian_kl", "cases", [[0.0, 1.0, 0.0]], "study.cases[0][2]=0.0 is invalid: must be > 0"),
    (
        "gaussian_kl",
        "cases",
        [[0.0, 1.0]],
        "study.cases[0]=[0.0, 1.0] is invalid: must be a list of 3 values",
    ),
    ("gaussian_kl", "z_tol", 0.0, "study.z_tol=0.0 is invalid: must be > 0"),
    ("optimal_discriminator", "seed", -1, "study.seed=-1 is invalid: must be >= 0"),
    (
        "optimal_discriminator",
        "data_stds",
        [0.5, 0.0],
        "study.data_stds[1]=0.0 is invalid: must be > 0",
    ),
    (
        "optimal_discriminator",
        "data_weights",
        [-0.1, 0.5],
        "study.data_weights[0]=-0.1 is invalid: must be >= 0",
    ),
    ("optimal_discriminator", "gen_stds", [-1.0], "study.gen_stds[0]=-1.0 is invalid: must be > 0"),
    (
        "optimal_discriminator",
        "gen_weights",
        [-1.0],
        "study.gen_weights[0]=-1.0 is invalid: must be >= 0",
    ),
    ("optimal_discriminator", "hidden", 0, "study.hidden=0 is invalid: must be >= 1"),
    ("optimal_discriminator", "steps", 0, "study.steps=0 is invalid: must be >= 1"),
    ("optimal_discriminator", "batch_size", 0, "study.batch_size=0 is invalid: must be >= 1"),
    ("optimal_discriminator", "lr", 0.0, "study.lr=0.0 is invalid: must be > 0"),
    ("optimal_discriminator", "n_eval", 1, "study.n_eval=1 is invalid: must be >= 2"),
    ("optimal_discriminator", "grid_points", 2, "study.grid_points=2 is invalid: must be >= 3"),
    (
        "optimal_discriminator",
        "grid_halfwidth",
        0.0,
        "study.grid_halfwidth=0.0 is invalid: must be > 0",
    ),
    (
        "optimal_discriminator",
        "max_mean_abs_error",
        -0.1,
        "study.max_mean_abs_error=-0.1 is invalid: must be >= 0",
    ),
    (
        "optimal_discriminator",
        "max_objective_gap",
        -0.1,
        "study.max_objective_gap=-0.1 is invalid: must be >= 0",
    ),
    ("optimal_discriminator", "z_tol", 0.0, "study.z_tol=0.0 is invalid: must be > 0"),
    ("dummy_gan", "seed", -1, "study.seed=-1 is invalid: must be >= 0"),
    ("dummy_gan", "mu", _INF, "study.mu=inf is invalid: must be a finite number"),
    ("dummy_gan", "w0", _NAN, "study.w0=nan is invalid: must be a finite number"),
    ("dummy_gan", "phi0", 1.5, "study.phi0=1.5 is invalid: must be <= 1"),
    ("dummy_gan", "phi0", -1.5, "study.phi0=-1.5 is invalid: must be >= -1"),
    ("dummy_gan", "batch_size", 1, "study.batch_size=1 is invalid: must be >= 2"),
    ("dummy_gan", "vanilla_steps", 1, "study.vanilla_steps=1 is invalid: must be >= 2"),
    ("dummy_gan", "vanilla_lr_w", 0.0, "study.vanilla_lr_w=0.0 is invalid: must be > 0"),
    ("dummy_gan", "vanilla_lr_phi", -1, "study.vanilla_lr_phi=-1 is invalid: must be > 0"),
    ("dummy_gan", "wgan_steps", 1, "study.wgan_steps=1 is invalid: must be >= 2"),
    ("dummy_gan", "wgan_lr_w", 0, "study.wgan_lr_w=0 is invalid: must be > 0"),
    ("dummy_gan", "wgan_lr_phi", -0.1, "study.wgan_lr_phi=-0.1 is invalid: must be > 0"),
    ("dummy_gan", "wgan_decay_steps", 0.0, "study.wgan_decay_steps=0.0 is invalid: must be > 0"),
    ("dummy_gan", "avg_fraction", 0.0, "study.avg_fraction=0.0 is invalid: must be > 0"),
    ("dummy_gan", "avg_fraction", 1.5, "study.avg_fraction=1.5 is invalid: must be <= 1"),
    ("dummy_gan", "n_batches", 1, "study.n_batches=1 is invalid: must be >= 2"),
    (
        "dummy_gan",
        "check_points",
        [[1.0]],
        "study.check_points[0]=[1.0] is invalid: must be a list of 2 values",
    ),
    ("dummy_gan", "n_mc", 1, "study.n_mc=1 is invalid: must be >= 2"),
    ("dummy_gan", "quad_nodes", 19, "study.quad_nodes=19 is invalid: must be >= 20"),
    ("dummy_gan", "amplitude_rtol", 0.0, "study.amplitude_rtol=0.0 is invalid: must be > 0"),
    ("dummy_gan", "z_tol", 0.0, "study.z_tol=0.0 is invalid: must be > 0"),
    (
        "all",
        "studies",
        ["gaussian_kl", "typo"],
        "study.studies[1]='typo' is invalid: allowed values are "
        + ", ".join(repr(s) for s in STUDIES),
    ),
]


def _config(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / "study" / f"{name}.yaml"))


@pytest.mark.parametrize(("name", "key", "value", "message"), BAD_PARAMETERS)
def test_annotated_parameters_are_refused_in_one_line_naming_the_key(
    tmp_path, name, key, value, message
):
    cfg = {**_config(name), key: value}
    with pytest.raises(ConfigError) as err:
        call_study(cfg, tmp_path / "run")
    assert str(err.value) == message
    assert not (tmp_path / "run").exists()  # refused before anything is created


def _bounded(hint) -> bool:
    """Does the annotation (or one nested in it) carry a Range or a Literal?"""
    if typing.get_origin(hint) is typing.Annotated:
        return any(isinstance(m, Range) for m in typing.get_args(hint)[1:]) or _bounded(
            typing.get_args(hint)[0]
        )
    if typing.get_origin(hint) is typing.Literal:
        return True
    return any(_bounded(a) for a in typing.get_args(hint))


@pytest.mark.parametrize("name", [*STUDIES, "all"])
def test_every_parameter_is_annotated_and_every_bound_has_a_refusal_test(name):
    run = get_method(_config(name)["_target_"])
    params = set(inspect.signature(run).parameters) - {"out_dir"}
    hints = typing.get_type_hints(run, include_extras=True)  # resolvable: else nothing is validated
    assert params <= set(hints), params - set(hints)
    bounded = {p for p in params if _bounded(hints[p])}
    tested = {key for study, key, _, _ in BAD_PARAMETERS if study == name}
    assert bounded <= tested, f"no refusal test for {sorted(bounded - tested)}"
    validate_study(_config(name))  # the shipped config itself is valid


def test_unknown_and_runner_keys_are_refused():
    cfg = _config("gaussian_kl")
    with pytest.raises(
        ConfigError, match=r"^study.nsamples is not a valid key: allowed keys are cases, "
    ):
        validate_study({**cfg, "nsamples": 10})
    with pytest.raises(ConfigError, match="^study.out_dir is set by the runner"):
        validate_study({**cfg, "out_dir": "x"})
    with pytest.raises(ConfigError, match="^study config is invalid: it has no _target_"):
        validate_study({"name": "x"})


def test_all_reports_an_invalid_override_as_a_failed_row(tmp_path):
    result = all_studies.run(
        tmp_path, studies=["gaussian_kl"], overrides={"gaussian_kl": {"n_samples": 1}}
    )
    assert result["studies"]["gaussian_kl"]["error"] == (
        "ConfigError: study.overrides.gaussian_kl.n_samples=1 is invalid: must be >= 2"
    )
    assert not (tmp_path / "gaussian_kl").exists()


def test_dgm_study_refuses_a_bad_parameter_in_one_line(tmp_path):
    script = str(Path(sys.executable).parent / "dgm-study")
    proc = subprocess.run(
        [script, "mfvi_blr", "study.lr=-1", f"hydra.run.dir={tmp_path}"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert (
        proc.stderr.strip() == "dgm-study: error: ConfigError: study.lr=-1 is invalid: must be > 0"
    )
    assert not (tmp_path / "result.json").exists()


# What the annotations cannot state stays a one-line check in the study itself.
@pytest.mark.parametrize(
    ("run", "kwargs", "message"),
    [
        (grad_variance.run, {"dims": []}, "dims is invalid"),
        (grad_variance.run, {"dims": [1, 2], "slope_from": 2}, "slope_from=2"),
        (bm_meanfield.run, {"enum_visible": 10, "enum_hidden": 10}, "enum_visible"),
        (bm_meanfield.run, {"scales": []}, "scales is invalid"),
        (meanfield_families.run, {"n_min": 5, "n_max": 3}, "n_max=3"),
        (noisy_inputs.run, {"dims": []}, "dims is invalid"),
        (noisy_inputs.run, {"bandwidths": []}, "bandwidths is invalid"),
        (gaussian_kl.run, {"cases": []}, "cases is invalid"),
        (optimal_discriminator.run, {"data_stds": [1.0]}, "data"),
        (optimal_discriminator.run, {"gen_weights": [0.0]}, "gen.weights"),
        (dummy_gan.run, {"vanilla_steps": 10, "n_batches": 5}, "n_batches=5"),
        (dummy_gan.run, {"check_points": []}, "check_points is invalid"),
    ],
)
def test_relations_between_parameters_are_one_line_value_errors(tmp_path, run, kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        run(tmp_path, **kwargs)
    assert "\n" not in str(err.value)


# --- dummy_gan (seed 003 written Q1) -------------------------------------------------------


def _gauss_trapezoid(f, mean, half=14.0, n=20001):
    """E_{y ~ N(mean, 1)} f(y) by the trapezoid rule, independent of the study's quadrature."""
    y = np.linspace(mean - half, mean + half, n)
    pdf = np.exp(-0.5 * (y - mean) ** 2) / math.sqrt(2 * math.pi)
    return float(np.trapezoid(f(y) * pdf, y))


def _vanilla_v_by_hand(mu, w, phi):
    """V(w, phi) = E_x log sigmoid(phi x) + E_{y ~ N(w, 1)} log(1 - sigmoid(phi y))."""

    def log_sig(t):
        return -np.logaddexp(0.0, -t)

    # log(1 - sigmoid(t)) = -log(1 + e^t)
    return _gauss_trapezoid(lambda x: log_sig(phi * x), mu) + _gauss_trapezoid(
        lambda y: -np.logaddexp(0.0, phi * y), w
    )


def _vanilla_grad_by_hand(mu, w, phi, h=1e-5):
    """(dV/dw, dV/dphi) by central differences of the trapezoid V."""
    return (
        (_vanilla_v_by_hand(mu, w + h, phi) - _vanilla_v_by_hand(mu, w - h, phi)) / (2 * h),
        (_vanilla_v_by_hand(mu, w, phi + h) - _vanilla_v_by_hand(mu, w, phi - h)) / (2 * h),
    )


def test_dummy_gan_vanilla_closed_forms_against_an_independent_quadrature():
    mu = 0.7
    quad = dummy_gan.GaussQuadrature(200)
    for w, phi in ((0.7, 0.0), (-1.3, 0.8), (2.0, -2.5), (0.1, 3.0)):
        assert float(dummy_gan.vanilla_value(quad, mu, w, phi)) == pytest.approx(
            _vanilla_v_by_hand(mu, w, phi), abs=1e-9
        )
        gw, gp = dummy_gan.vanilla_grad(quad, mu, w, phi)
        fw, fp = _vanilla_grad_by_hand(mu, w, phi)
        assert float(gw) == pytest.approx(fw, abs=1e-6) and float(gp) == pytest.approx(fp, abs=1e-6)
    # w = mu: V(mu, phi) = -E log(2 + 2 cosh(phi x)) <= -log 4, equality only at phi = 0
    for phi in (-2.0, -0.3, 0.05, 1.0):
        v = float(dummy_gan.vanilla_value(quad, mu, mu, phi))
        assert v == pytest.approx(
            _gauss_trapezoid(lambda x, phi=phi: -np.log(2 + 2 * np.cosh(phi * x)), mu), abs=1e-9
        )
        assert v < -math.log(4) - 1e-4
    assert float(dummy_gan.vanilla_value(quad, mu, mu, 0.0)) == pytest.approx(-2 * math.log(2))
    # dV/dphi (w, 0) = (mu - w) / 2, dV/dw (w, 0) = 0
    for w in (-2.0, 0.0, 0.7, 3.0):
        gw, gp = dummy_gan.vanilla_grad(quad, mu, w, 0.0)
        assert float(gp) == pytest.approx((mu - w) / 2, abs=1e-12) and float(gw) == 0.0
    # best response: 0 at w = mu, 2 mu at w = -mu (D* = sigmoid(2 mu x)), sign(mu - w) elsewhere
    assert float(dummy_gan.vanilla_best_response(quad, mu, mu)) == pytest.approx(0.0, abs=1e-9)
    assert float(dummy_gan.vanilla_best_response(quad, mu, -mu)) == pytest.approx(2 * mu, abs=1e-8)
    ws = np.array([-3.0, -1.0, 0.5, 0.9, 2.0, 4.0])
    assert np.all(np.sign(dummy_gan.vanilla_best_response(quad, mu, ws)) == np.sign(mu - ws))
    # Hessian at the equilibrium, and d2V/dphi2 against differences of the trapezoid V
    v_ww, v_wp, v_pp = dummy_gan.hessian_fd(quad, mu, mu, 0.0)
    assert (v_ww, v_wp, v_pp) == pytest.approx((0.0, -0.5, -(1 + mu**2) / 2), abs=1e-5)
    h = 1e-4
    fd = (
        _vanilla_v_by_hand(mu, -0.4, 1.2 + h)
        - 2 * _vanilla_v_by_hand(mu, -0.4, 1.2)
        + _vanilla_v_by_hand(mu, -0.4, 1.2 - h)
    ) / h**2
    assert float(dummy_gan.vanilla_d2_dphi2(quad, mu, -0.4, 1.2)) == pytest.approx(fd, abs=1e-4)


def test_dummy_gan_monte_carlo_estimator_is_unbiased_with_the_right_standard_error():
    mu, n = 0.7, 40000
    gen = torch.Generator().manual_seed(1)
    w, phi = -1.3, 0.8
    mc = dummy_gan.monte_carlo("vanilla", mu, w, phi, n, gen)
    exact = (_vanilla_v_by_hand(mu, w, phi), *_vanilla_grad_by_hand(mu, w, phi))
    for key, value in zip(("V", "dV_dw", "dV_dphi"), exact):
        mean, se = mc[key]
        assert 0 < se < 0.02 and abs(mean - value) < 4 * se, key

    # se of V = sqrt(Var_x log D(x) + Var_z log(1 - D(G(z)))) / sqrt(n), by the trapezoid rule
    def log_sig(t):
        return -np.logaddexp(0.0, -t)

    var = 0.0
    for f, m in ((lambda x: log_sig(phi * x), mu), (lambda y: log_sig(-phi * y), w)):
        mean_f = _gauss_trapezoid(f, m)
        var += _gauss_trapezoid(lambda y, f=f, c=mean_f: (f(y) - c) ** 2, m)
    assert mc["V"][1] == pytest.approx(math.sqrt(var / n), rel=0.05)
    # WGAN: V = phi (mu - w) exactly in expectation, per-sample sd |phi| sqrt 2; dV/dw = -phi
    w, phi = 0.2, -0.6
    mc = dummy_gan.monte_carlo("wgan", mu, w, phi, n, gen)
    mean, se = mc["V"]
    assert se == pytest.approx(abs(phi) * math.sqrt(2 / n), rel=0.05)
    assert abs(mean - phi * (mu - w)) < 4 * se
    assert mc["dV_dw"][0] == pytest.approx(-phi, abs=1e-15) and mc["dV_dw"][1] < 1e-12
    mean, se = mc["dV_dphi"]
    assert se == pytest.approx(math.sqrt(2 / n), rel=0.05) and abs(mean - (mu - w)) < 4 * se


def test_dummy_gan_study(tmp_path):
    mu = 1.0
    result = dummy_gan.run(
        tmp_path, mu=mu, vanilla_steps=1500, wgan_steps=2000, n_mc=40000, quad_nodes=120
    )
    assert all(c["ok"] for c in result["checks"]), [c for c in result["checks"] if not c["ok"]]
    van = result["vanilla"]
    assert van["simultaneous_jacobian_spectral_radius"] < 1  # damped: converges
    tr = van["training"]
    assert 0 < tr["w_mean_se"] < 0.02 and abs(tr["w_mean"] - mu) < 4 * tr["w_mean_se"]
    assert abs(tr["phi_mean"]) < 4 * tr["phi_mean_se"] and abs(tr["w_final"] - mu) < 0.1
    wg = result["wgan"]
    assert wg["simultaneous_jacobian_spectral_radius"] == pytest.approx(math.sqrt(1 + 0.05**2))
    sim = wg["training"]["simultaneous"]
    assert 0.75 < sim["w_amplitude"] < 1.25  # the last iterate keeps circling ...
    assert abs(sim["w_mean"] - mu) < 0.05  # ... around mu (1000 steps ~ 8 periods)
    assert wg["radius_final_equal_decay"] == pytest.approx(1.0, abs=0.25)  # ... so does this one
    tts = wg["training"]["alternating_two_time_scale"]
    bound = math.sqrt(1 / (1 + 1999 / 100))
    assert wg["two_time_scale_bound_final"] == pytest.approx(bound)
    assert tts["abs_w_final_minus_mu"] <= 1.25 * bound < 0.3  # ... this one converges
    _assert_result_files(tmp_path, result)
    assert (tmp_path / "trajectories.png").is_file()


def test_dummy_gan_is_part_of_dgm_study_all_and_its_config_matches_run():
    assert "dummy_gan" in STUDIES
    assert "dummy_gan" in OmegaConf.load(Path(CONFIG_DIR) / "study" / "all.yaml").studies
    cfg = all_studies.study_config("dummy_gan")
    assert cfg.pop("_target_") == "dgm_runner.studies.dummy_gan.run" and cfg.pop("name")
    params = inspect.signature(dummy_gan.run).parameters
    assert set(cfg) == set(params) - {"out_dir"}
    for key, value in cfg.items():
        default = params[key].default
        if isinstance(default, tuple):
            default = [list(v) for v in default]
        assert value == default, key
