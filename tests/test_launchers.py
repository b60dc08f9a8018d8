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
        "optimizer.lr",
        "model.latent_dim",
    }
    rows = _rows(sweep_dir)
    assert len(rows) == 2 and all(r["status"] == "completed" for r in rows)
    assert result["best_value"] == pytest.approx(min(float(r["test/loss"]) for r in rows))
    for r in rows:  # the search space of the preset
        assert 1e-4 <= float(r["optimizer.lr"]) <= 1e-2 and 2 <= int(r["model.latent_dim"]) <= 64


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


def _fake_sweep(root: Path, jobs: list[tuple[list[str], dict | None]]) -> None:
    for job, (overrides, metrics) in enumerate(jobs):
        (root / str(job) / ".hydra").mkdir(parents=True)
        (root / str(job) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        if metrics is not None:
            (root / str(job) / "metrics.json").write_text(json.dumps(metrics))


def test_summary_md_shows_what_differs_and_names_what_every_job_shares(tmp_path):
    """issue 26, item 5: constants (an override given to every job, a metric equal in every
    row) go to one header line; the table keeps job, status and what differs; only a metric
    that differs gets a plot. summary.csv keeps every column."""
    common = {"status": "completed", "epoch": 2, "test/fid_n_samples": 10000.0}
    _fake_sweep(
        tmp_path,
        [
            (["experiment=vae_mlp", "model.latent_dim=2"], {**common, "test/loss": 1.5}),
            (["experiment=vae_mlp", "model.latent_dim=5"], {**common, "test/loss": 1.25}),
        ],
    )
    summarize_sweep(tmp_path)
    lines = (tmp_path / "summary.md").read_text().splitlines()
    assert lines[0] == (
        "Same in all 2 jobs: experiment=vae_mlp, epoch=2, test/fid_n_samples=10000.0000"
    )
    assert lines[2] == "| job | model.latent_dim | status | test/loss |"
    assert lines[4] == "| 0 | 2 | completed | 1.5000 |"
    assert sorted(p.name for p in tmp_path.glob("summary_*.png")) == ["summary_test_loss.png"]
    header = _rows(tmp_path)[0].keys()
    assert {"test/fid_n_samples", "epoch", "error"} <= set(header)


def test_a_metric_a_failed_job_lacks_stays_in_the_table(tmp_path):
    _fake_sweep(
        tmp_path,
        [
            (["model.latent_dim=2"], {"status": "completed", "test/loss": 1.5}),
            (["model.latent_dim=0"], {"status": "failed", "error": "ConfigError: bad"}),
        ],
    )
    summarize_sweep(tmp_path, plots=False)
    lines = (tmp_path / "summary.md").read_text().splitlines()
    assert lines[0].startswith("| job | model.latent_dim | status |") and "test/loss" in lines[0]


def test_jobs_are_labelled_by_their_swept_values(tmp_path):
    from dgm_runner.io.sweep_summary import job_labels

    _fake_sweep(
        tmp_path,
        [
            (["experiment=rbm_cdk", f"objective.k={k}", f"optimizer.lr={lr}"], None)
            for k, lr in ((1, 0.1), (5, 0.1), (5, 0.01))
        ],
    )
    dirs = [tmp_path / str(i) for i in range(3)]
    assert list(job_labels(dirs).values()) == [
        "objective.k=1, optimizer.lr=0.1",
        "objective.k=5, optimizer.lr=0.1",
        "objective.k=5, optimizer.lr=0.01",
    ]
    (tmp_path / "3").mkdir()  # no overrides.yaml: every key of job 0 tells them apart
    assert list(job_labels([dirs[0], tmp_path / "3"]).values()) == [
        "experiment=rbm_cdk, objective.k=1, optimizer.lr=0.1",
        "3",
    ]
    assert list(job_labels([dirs[0], dirs[0]]).values()) == ["0"]  # nothing differs


def test_each_job_logs_how_many_of_the_planned_jobs_are_done(tmp_path):
    from dgm_runner.io.sweep_summary import planned_jobs, sweep_progress

    multirun = {
        "hydra": {
            "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"},
            "overrides": {"task": ["objective.k=1,5,25", "optimizer.lr=0.1,0.01", "+debug=smoke"]},
        }
    }
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump(multirun))
    assert planned_jobs(tmp_path) == 6
    _fake_sweep(
        tmp_path,
        [
            (["objective.k=1"], {"status": "completed"}),
            (["objective.k=5"], {"status": "failed", "error": "x"}),
            (["objective.k=25"], None),  # still running (a parallel launcher)
        ],
    )
    table = summarize_sweep(tmp_path, plots=False)
    assert sweep_progress(tmp_path, table) == (
        f"sweep: 2 of 6 jobs done (1 not completed) -> {tmp_path / 'summary.md'}"
    )
    multirun["hydra"]["sweeper"] = {"_target_": "x.OptunaSweeper", "n_trials": 20}
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump(multirun))
    assert planned_jobs(tmp_path) == 20
    (tmp_path / "multirun.yaml").unlink()
    assert planned_jobs(tmp_path) is None
    assert sweep_progress(tmp_path, table).startswith("sweep: 2 jobs done")
