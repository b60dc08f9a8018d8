"""The studies (``dgm-study``): measured values against the closed forms of the seeds' questions.

Each study runs with small parameters and fixed seeds; the tolerances are a few standard
errors for Monte-Carlo numbers and round-off for exact ones, and where possible the
closed form is restated here independently of the study's own code.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dgm_runner.studies import (
    all_studies,
    bm_meanfield,
    gaussian_kl,
    grad_variance,
    meanfield_families,
    mfvi_blr,
    noisy_inputs,
    optimal_discriminator,
)
from dgm_runner.study import positional_study


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
    # grows like d^3 (ratio 8 per doubling), the baseline version like d^2, reparameterization like d
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
    # With ||mu|| = 3 each term of d(d+2)(d+4)/4 + a(d+2)^2/2 + a^2 d/4 - a is > 4 SE at some d <= 4.
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


@pytest.mark.parametrize(
    ("run", "kwargs", "message"),
    [
        (grad_variance.run, {"n_samples": 1}, "n_samples=1"),
        (grad_variance.run, {"dims": [0, 4]}, "dims"),
        (mfvi_blr.run, {"sigma_true": -1.0}, "sigma_true"),
        (bm_meanfield.run, {"enum_visible": 10, "enum_hidden": 10}, "enum_visible"),
        (meanfield_families.run, {"n_max": 30}, "n_max"),
        (noisy_inputs.run, {"bandwidths": [0.0]}, "bandwidths"),
        (gaussian_kl.run, {"cases": [[0.0, 1.0, 0.0]]}, "sigma"),
        (optimal_discriminator.run, {"data_stds": [1.0]}, "data"),
    ],
)
def test_bad_parameters_are_one_line_value_errors(tmp_path, run, kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        run(tmp_path, **kwargs)
    assert "\n" not in str(err.value)
