"""Sweeps through Hydra's launcher and sweeper plugins (issue 9): joblib (parallel on one
host), submitit (local here; SLURM composes), Optuna; the sweep summary for each."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dgm_runner import CONFIG_DIR
from dgm_runner.io.sweep_summary import SweepSummary, summarize_sweep
from tests.helpers import SMALL, needs_mnist

TINY = [*SMALL, "logger=none"]
RBM_FAST = ["sampler.steps=20", "~sample_metrics.ais"]


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dgm_runner", *args], capture_output=True, text=True, timeout=timeout
    )


def _rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


@needs_mnist
def test_joblib_sweep_reports_the_failed_job_and_finishes_the_other(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = _cli(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "experiment=rbm_cdk",
        "objective.k=1,0",
        *TINY,
        *RBM_FAST,
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert proc.returncode == 1 and "1 of 2 sweep jobs did not complete" in proc.stderr, (
        proc.stderr[-3000:]
    )
    rows = _rows(sweep_dir)
    assert [(r["job"], r["objective.k"], r["status"]) for r in rows] == [
        ("0", "1", "completed"),
        ("1", "0", "failed"),
    ]
    assert rows[0]["test/free_energy"] and not rows[0]["error"]
    assert rows[1]["error"] == "ConfigError: objective.k=0 is invalid: must be >= 1"
    assert (sweep_dir / "summary.md").is_file() and (
        sweep_dir / "summary_test_free_energy.png"
    ).is_file()
    assert (sweep_dir / "0" / "checkpoints" / "last.pt").is_file()


@pytest.mark.slow
@needs_mnist
def test_optuna_sweep_minimises_the_preset_metric(tmp_path):
    sweep_dir = tmp_path / "optuna"
    proc = _cli(
        "experiment=vae_bce",
        "sweep=optuna_vae",
        "hydra.sweeper.n_trials=2",
        *TINY,
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert result["name"] == "optuna" and set(result["best_params"]) == {
        "trainer.lr",
        "model.latent_dim",
    }
    rows = _rows(sweep_dir)
    assert len(rows) == 2 and all(r["status"] == "completed" for r in rows)
    assert result["best_value"] == pytest.approx(min(float(r["test/loss"]) for r in rows))
    for r in rows:  # the search space of the preset
        assert 1e-4 <= float(r["trainer.lr"]) <= 1e-2 and 2 <= int(r["model.latent_dim"]) <= 64


@pytest.mark.slow
@needs_mnist
def test_submitit_local_sweep_completes_and_writes_the_summary(tmp_path):
    sweep_dir = tmp_path / "submitit"
    proc = _cli(
        "-m",
        "hydra/launcher=submitit_local",
        "experiment=vae_mlp",
        "model.latent_dim=2,3",
        *TINY,
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(sweep_dir)
    assert [(r["model.latent_dim"], r["status"]) for r in rows] == [
        ("2", "completed"),
        ("3", "completed"),
    ]
    assert (sweep_dir / ".submitit").is_dir()  # submitit's own logs, skipped by the summary


def test_launcher_and_sweeper_configs_compose():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        slurm = compose(
            "train",
            overrides=["hydra/launcher=slurm_gpu", "hydra.launcher.partition=long"],
            return_hydra_config=True,
        )
        joblib = compose("train", overrides=["hydra/launcher=joblib"], return_hydra_config=True)
        optuna = compose(
            "train", overrides=["experiment=vae_bce", "sweep=optuna_vae"], return_hydra_config=True
        )
    launcher = slurm.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.cpus_per_task) == ("long", 1, 4)
    assert launcher.mem_gb >= 4 and launcher.timeout_min > 0
    assert joblib.hydra.launcher._target_.endswith("JoblibLauncher")
    assert (
        optuna.hydra.sweeper._target_.endswith("OptunaSweeper")
        and optuna.hydra.sweeper.direction == "minimize"
    )
    assert optuna.optimize_metric == "test/loss" and str(optuna.hydra.mode) == "RunMode.MULTIRUN"


def test_summary_marks_jobs_without_metrics_and_is_refreshed_per_job(tmp_path):
    """A job killed before writing metrics.json is a failed row; the per-job refresh
    (on_job_end) writes the tables without plots; single runs are left alone."""
    from omegaconf import OmegaConf

    for job, (overrides, metrics) in enumerate(
        [
            (["model.latent_dim=2"], {"status": "completed", "test/loss": 1.5}),
            (["model.latent_dim=3"], None),
        ]
    ):
        (tmp_path / str(job) / ".hydra").mkdir(parents=True)
        (tmp_path / str(job) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        if metrics:
            (tmp_path / str(job) / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / ".submitit").mkdir()
    cfg = OmegaConf.create({"hydra": {"mode": "RunMode.MULTIRUN", "sweep": {"dir": str(tmp_path)}}})
    SweepSummary().on_job_end(cfg, job_return=None)
    rows = _rows(tmp_path)
    assert [r["status"] for r in rows] == ["completed", "failed"]
    assert "no metrics.json" in rows[1]["error"] and ".submitit" in rows[1]["error"]
    assert not list(tmp_path.glob("summary_*.png"))
    summarize_sweep(tmp_path)
    assert (tmp_path / "summary_test_loss.png").is_file()
    single = tmp_path / "single"
    single.mkdir()
    SweepSummary().on_job_end(
        OmegaConf.create({"hydra": {"mode": "RunMode.RUN", "sweep": {"dir": str(single)}}})
    )
    assert not list(single.iterdir())


def test_the_task_returns_the_metric_optuna_minimises(caplog):
    from dgm_runner.cli.train import _objective_value

    final = {"status": "completed", "epoch": 1, "test/loss": 90.5, "test/kl": 3}
    assert (
        _objective_value(final, "test/loss") == 90.5 and _objective_value(final, "test/kl") == 3.0
    )
    assert _objective_value(final, "test/nll") is None  # Optuna marks the trial failed
    assert (
        "optimize_metric=test/nll is not a final metric" in caplog.text
        and "test/loss" in caplog.text
    )
