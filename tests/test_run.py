"""End-to-end: smoke runs on real MNIST subsets write the run-directory contract;
sweeps, dgm-eval, dgm-sample, resume, divergence and unsafe checkpoints."""

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from dgm_runner.build import restore_run
from dgm_runner.io.checkpoint import CheckpointError, load_checkpoint
from dgm_runner.io.layout import RunPaths
from dgm_runner.loop import DivergedError, train
from dgm_runner.objectives.elbo import ELBO
from tests.helpers import SMALL, needs_mnist, unnamed_files

pytestmark = needs_mnist

EXPORTS = {
    "rbm_cdk": "model_rbm_seed2025.pt",
    "vae_mlp": "model_vae_seed2025.pt",
    "vae_cnn": "model_vae2_seed2025.pt",
}
FAST = {
    "rbm_cdk": ["sampler.steps=20", "sample_metrics.ais.schedule_steps=200"],
    "vae_mlp": [],
    "vae_cnn": [],
}


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dgm_runner", *args], capture_output=True, text=True, timeout=timeout
    )


def _script(name: str) -> str:
    """The console script installed beside this interpreter (the venv need not be active)."""
    return str(Path(sys.executable).parent / name)


def _assert_contract(run_dir: Path, epochs: int) -> dict:
    paths = RunPaths(run_dir)
    for path in (paths.last, paths.best, paths.metrics_log, paths.metrics, paths.final_grid):
        assert path.is_file(), path
    for epoch in range(1, epochs + 1):
        assert paths.grid(epoch).is_file()
    assert list(paths.tb.glob("events.out.tfevents.*"))
    lines = [json.loads(line) for line in paths.metrics_log.read_text().splitlines()]
    assert [r["epoch"] for r in lines] == list(range(1, epochs + 1))
    final = json.loads(paths.metrics.read_text())
    assert final["status"] == "completed" and final["epoch"] == epochs
    test_keys = {k for k in lines[-1] if k.startswith("test/")}
    assert test_keys and all(final[k] == lines[-1][k] for k in test_keys)
    return final


@pytest.mark.parametrize("experiment", ["rbm_cdk", "vae_mlp", "vae_cnn"])
def test_smoke_run_writes_the_run_directory_contract(compose_cfg, tmp_path, experiment):
    cfg = compose_cfg(f"experiment={experiment}", *SMALL, "trainer.epochs=2", *FAST[experiment])
    final = train(cfg, tmp_path)
    _assert_contract(tmp_path, epochs=2)
    paths = RunPaths(tmp_path)
    assert unnamed_files(tmp_path, 2, list(cfg.figures or {}), EXPORTS[experiment]) == []
    expected = {
        "rbm_cdk": "test/free_energy",
        "vae_mlp": "test/recon_mse_sum",
        "vae_cnn": "test/recon_mse_sum",
    }
    assert expected[experiment] in final
    if experiment == "rbm_cdk":  # AIS at the final evaluation only
        assert (
            final["test/log_likelihood_ais"] < 0
            and final["test/log_z_ais"] <= final["test/log_z_ais_hi"]
        )
        first = json.loads(paths.metrics_log.read_text().splitlines()[0])
        assert "test/log_likelihood_ais" not in first
    if experiment != "rbm_cdk":
        assert final["test/elbo_loss"] == pytest.approx(
            final["test/recon_mse_sum"] + final["test/kl"]
        )
    state = torch.load(paths.export(EXPORTS[experiment]), weights_only=True)
    assert set(state) == set(restore_run(tmp_path, device="cpu")[1].model.state_dict())
    grid = Image.open(paths.final_grid)
    assert grid.size == (4 * 28 + 5 * 2,) * 2  # 16 samples -> 4x4 grid with 2-px padding
    ckpt = load_checkpoint(paths.last)
    assert ckpt["epoch"] == 2 and ckpt["config"]["experiment_name"] == experiment


def test_vae_training_reduces_the_test_loss(compose_cfg, tmp_path):
    cfg = compose_cfg(
        "experiment=vae_mlp",
        "dataset.subset=2000",
        "dataset.test_subset=500",
        "trainer.epochs=3",
        "trainer.progress=false",
    )
    train(cfg, tmp_path)
    lines = [json.loads(line) for line in RunPaths(tmp_path).metrics_log.read_text().splitlines()]
    assert lines[-1]["test/elbo_loss"] < lines[0]["test/elbo_loss"] < 784 * 0.25


def test_cli_default_run_has_hydra_files_and_log(tmp_path):
    run_dir = tmp_path / "run"
    proc = _cli(
        *SMALL,
        "sampler.steps=10",
        "sample_metrics.ais.schedule_steps=100",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    _assert_contract(run_dir, epochs=1)
    paths = RunPaths(run_dir)
    export = "model_rbm_seed2025.pt"
    for path in (paths.config_yaml, paths.overrides_yaml, paths.log, paths.export(export)):
        assert path.is_file(), path
    assert "epoch 1/1" in paths.log.read_text()
    # a real run holds only what RunPaths names (and its exported state_dict)
    figures = list(yaml.safe_load(paths.config_yaml.read_text()).get("figures") or {})
    assert unnamed_files(run_dir, 1, figures, export) == []
    assert {p.name for p in run_dir.iterdir()} - set(RunPaths.ENTRIES) == {export}


def test_sweep_writes_summary_and_marks_a_failed_job(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = _cli(
        "-m", "experiment=vae_mlp", "model.latent_dim=2,0", *SMALL, f"hydra.sweep.dir={sweep_dir}"
    )
    # the sweep finishes the good job, then exits 1 with one line naming the failures
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "dgm-train: error: 1 of 2 sweep jobs did not complete "
        f"(errors in {sweep_dir / 'summary.md'})"
    )
    rows = (sweep_dir / "summary.csv").read_text().splitlines()
    assert rows[0].startswith("job,model.latent_dim,status")
    assert rows[1].startswith("0,2,completed") and rows[2].startswith("1,0,failed")
    assert "model.latent_dim=0 is invalid" in rows[2]
    assert "| 0 | 2 | completed |" in (sweep_dir / "summary.md").read_text()
    # after each job, how far the sweep is (the total read from Hydra's multirun.yaml)
    assert f"sweep: 1 of 2 jobs done -> {sweep_dir / 'summary.md'}" in proc.stderr
    assert "sweep: 2 of 2 jobs done (1 not completed)" in proc.stderr
    assert (sweep_dir / "summary_test_elbo_loss.png").is_file()


def test_sweep_presets_set_multirun_parameters(compose_cfg):
    from hydra import compose, initialize_config_dir

    from dgm_runner import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cd_k = compose(
            "train", overrides=["experiment=rbm_cdk", "sweep=cd_k"], return_hydra_config=True
        )
        nz = compose(
            "train", overrides=["experiment=vae_cnn", "sweep=latent_dim"], return_hydra_config=True
        )
    assert (
        str(cd_k.hydra.mode) == "RunMode.MULTIRUN"
        and cd_k.hydra.sweeper.params["objective.k"] == "1,5,25"
    )
    assert nz.hydra.sweeper.params["model.latent_dim"] == "2,5,10,20"


@pytest.fixture(scope="module")
def trained_vae(tmp_path_factory):
    from hydra import compose, initialize_config_dir

    from dgm_runner import CONFIG_DIR

    run_dir = tmp_path_factory.mktemp("vae_run")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=vae_cnn", *SMALL])
    return run_dir, train(cfg, run_dir)


def test_dgm_eval_recomputes_the_final_metrics(trained_vae):
    run_dir, final = trained_vae
    proc = subprocess.run(
        [_script("dgm-eval"), str(run_dir)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    recomputed = json.loads(RunPaths(run_dir).evaluation().read_text())
    for key in ("test/recon_mse_sum", "test/kl", "test/elbo_loss"):
        assert recomputed[key] == pytest.approx(final[key], rel=1e-6)
        assert key in proc.stdout
    assert recomputed["n_test"] == 200 and recomputed["epoch"] == 1


def test_dgm_eval_of_a_sweep_root_evaluates_each_job_and_refreshes_the_summary(
    trained_vae, tmp_path
):
    run_dir, final = trained_vae
    root = tmp_path / "sweep"
    for job, latent in (("0", 20), ("1", 5)):
        shutil.copytree(run_dir, root / job, ignore=shutil.ignore_patterns(RunPaths.EVAL))
        RunPaths(root / job).hydra.mkdir(exist_ok=True)
        RunPaths(root / job).overrides_yaml.write_text(f"- model.latent_dim={latent}\n")
    last = RunPaths(root / "1").last
    last.write_bytes(last.read_bytes()[:1000])  # job 1: a torn checkpoint
    proc = subprocess.run(
        [_script("dgm-eval"), str(root)], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(RunPaths(root / "0").evaluation().read_text())[
        "test/elbo_loss"
    ] == pytest.approx(final["test/elbo_loss"], rel=1e-6)
    assert "job 1 (model.latent_dim=5) not evaluated: CheckpointError" in proc.stderr
    header = next(line for line in proc.stdout.splitlines() if line.startswith("metric"))
    assert header.split() == ["metric", "model.latent_dim=20"]  # job 1 was not evaluated
    summary = (root / "summary.csv").read_text().splitlines()
    assert len(summary) == 3 and "test/elbo_loss" in summary[0]


def test_dgm_eval_of_a_missing_directory_is_one_line_and_creates_nothing(tmp_path):
    missing = tmp_path / "no_such_run"
    proc = subprocess.run(
        [_script("dgm-eval"), str(missing)], capture_output=True, text=True, timeout=60
    )
    assert (
        proc.returncode == 1
        and proc.stderr.strip() == f"dgm-eval: error: CheckpointError: {missing} does not exist"
    )
    assert not missing.exists()


def test_dgm_sample_writes_an_8x8_grid(trained_vae, tmp_path):
    run_dir, _ = trained_vae
    out = tmp_path / "grid.png"
    proc = subprocess.run(
        [_script("dgm-sample"), str(run_dir), "n=64", f"out={out}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Image.open(out).size == (8 * 28 + 9 * 2,) * 2


def test_unsafe_truncated_and_foreign_checkpoints_are_refused(trained_vae, tmp_path):
    run_dir, _ = trained_vae
    good = RunPaths(run_dir).last.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])

    class Evil:
        def __reduce__(self):
            return (exec, ("open('/tmp/dgm_pwned', 'w').write('x')",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "dgm_runner/1", "x": Evil()}))
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    for path, match in (
        (truncated, "not a readable"),
        (evil, "not a readable"),
        (foreign, "not a dgm_runner"),
    ):
        with pytest.raises(CheckpointError, match=match):
            load_checkpoint(path)
    assert not Path("/tmp/dgm_pwned").exists()
    proc = subprocess.run(
        [_script("dgm-eval"), str(run_dir), f"checkpoint={truncated}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and proc.stderr.strip().startswith(
        "dgm-eval: error: CheckpointError"
    )
    assert (
        "dgm-eval: error: CheckpointError" in (run_dir / "eval.log").read_text()
    )  # the log says why, too


def test_a_checkpoint_without_per_group_optimisers_is_refused(compose_cfg, tmp_path):
    """A checkpoint holding one ``optimizer`` (the layout before per-group optimisers) and
    no ``optimizers`` is refused with a one-line CheckpointError, not resumed."""
    from dgm_runner.io.checkpoint import save_checkpoint

    common = ["experiment=vae_mlp", *SMALL, "logger=none", "~sample_metrics.fid"]
    train(compose_cfg(*common, "trainer.epochs=1"), tmp_path / "b")
    last = RunPaths(tmp_path / "b").last
    ckpt = {k: v for k, v in load_checkpoint(last).items() if k != "format"}
    ckpt["optimizer"] = ckpt.pop("optimizers")["model"]
    save_checkpoint(last, ckpt)
    cfg = compose_cfg(*common, "trainer.epochs=2", f"trainer.resume={tmp_path / 'b'}")
    with pytest.raises(CheckpointError, match=r"no optimiser state for parameter group 'model'"):
        train(cfg, tmp_path / "b")


def test_resumed_run_ends_with_the_same_metrics(compose_cfg, tmp_path):
    common = ["experiment=vae_mlp", *SMALL, "logger=none"]
    straight = train(compose_cfg(*common, "trainer.epochs=2"), tmp_path / "a")
    train(compose_cfg(*common, "trainer.epochs=1"), tmp_path / "b")
    resumed = train(
        compose_cfg(*common, "trainer.epochs=2", f"trainer.resume={tmp_path / 'b'}"), tmp_path / "b"
    )
    for key in ("test/elbo_loss", "test/recon_mse_sum", "test/kl", "train/elbo_loss"):
        assert resumed[key] == straight[key]


def test_resume_refuses_a_different_model(compose_cfg, tmp_path):
    train(compose_cfg("experiment=vae_mlp", *SMALL, "logger=none"), tmp_path / "a")
    cfg = compose_cfg(
        "experiment=vae_mlp", *SMALL, "model.latent_dim=3", f"trainer.resume={tmp_path / 'a'}"
    )
    with pytest.raises(CheckpointError, match=r"^model\.latent_dim: 20 in the run, 3 given"):
        train(cfg, tmp_path / "a")


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    compose_cfg, tmp_path, monkeypatch
):
    calls = {"n": 0}
    original = ELBO.loss

    def poisoned(self, model, batch):
        calls["n"] += 1
        loss, terms = original(self, model, batch)
        if calls["n"] > 4:  # SMALL: 4 steps per epoch, so epoch 2 diverges
            loss = loss * float("nan")
            terms = {**terms, "elbo_loss": loss.detach()}
        return loss, terms

    monkeypatch.setattr(ELBO, "loss", poisoned)
    cfg = compose_cfg(
        "experiment=vae_mlp", *SMALL, "trainer.epochs=3", "logger=none", "trainer.log_every=1"
    )
    with pytest.raises(DivergedError, match="non-finite"):
        train(cfg, tmp_path)
    status = json.loads(RunPaths(tmp_path).metrics.read_text())
    assert status["status"] == "diverged" and status["epoch"] == 2
    ckpt = load_checkpoint(RunPaths(tmp_path).last)
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_dgm_sample_overrides_the_sampler(trained_vae, tmp_path, monkeypatch):
    from dgm_runner.cli import sample

    run_dir, _ = trained_vae
    seen = {}
    monkeypatch.setattr(
        sys,
        "argv",
        ["dgm-sample", str(run_dir), "n=4", f"out={tmp_path / 'g.png'}", "sampler.foo=1"],
    )
    monkeypatch.setattr(sample, "_app", lambda: seen.setdefault("argv", list(sys.argv)))
    sample.main()
    assert "+sampler.foo=1" in seen["argv"] and "n=4" in seen["argv"]


def test_resume_config_check_tolerates_only_new_options_at_their_defaults():
    from dgm_runner.io.resume import _same_config

    saved = {
        "_target_": "dgm_runner.objectives.cd.ContrastiveDivergence",
        "k": 1,
        "persistent": False,
    }
    assert _same_config(saved, {**saved, "log_every": 10})  # added later, at its default
    assert not _same_config(saved, {**saved, "log_every": 3})  # added later, changed
    assert not _same_config(saved, {**saved, "k": 5})
    assert not _same_config({**saved, "gone": 1}, saved)  # an option the code no longer has
    assert not _same_config({"lr": 1}, {"lr": 1, "extra": 2})  # no _target_: any new key differs
    # checkpoints from before full module paths named the package re-export: the same class
    assert _same_config(
        {"_target_": "dgm_runner.models.VAEMLP"}, {"_target_": "dgm_runner.models.vae.VAEMLP"}
    )
    assert not _same_config(
        {"_target_": "dgm_runner.models.RBM"}, {"_target_": "dgm_runner.models.vae.VAEMLP"}
    )


def test_a_requeued_slurm_job_resumes_its_own_run(compose_cfg, tmp_path, monkeypatch):
    """hydra/launcher=slurm_ddp: a job requeued into its job directory (SLURM_RESTART_COUNT
    >= 1) continues from its last.pt without trainer.resume; a first launch is refused."""
    from dgm_runner.config import ConfigError

    common = ["experiment=vae_mlp", *SMALL, "logger=none", "~sample_metrics.fid"]
    job = tmp_path / "job"
    train(compose_cfg(*common, "trainer.epochs=1"), job)
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(compose_cfg(*common, "trainer.epochs=2"), job)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    final = train(compose_cfg(*common, "trainer.epochs=2"), job)
    straight = train(compose_cfg(*common, "trainer.epochs=2"), tmp_path / "straight")
    assert final["epoch"] == 2 and final["test/elbo_loss"] == straight["test/elbo_loss"]
