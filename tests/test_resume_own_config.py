"""Issue 26, item 4: ``dgm-train trainer.resume=RUN`` takes the run's own config; only the
keys that may change are given, and a key of the run's identity given with another value is
named in one line."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dgm_runner.io.checkpoint import CheckpointError, load_checkpoint
from dgm_runner.io.resume import check_resume, first_difference
from tests.helpers import REPO, SMALL, needs_mnist, snapshot
from tests.helpers import cli as _cli
from tests.helpers import error_lines as _error_lines


def _quick_start_commands() -> tuple[list[str], list[str]]:
    """The README Quick start's first ``dgm-train`` command and its resume command, as
    argument lists (without ``dgm-train``)."""
    text = (REPO / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [
        line.split("#", 1)[0].strip()
        for line in block.splitlines()
        if line.strip().startswith("dgm-train ")
    ]
    first = shlex.split(commands[0])[1:]
    resume = [c for c in commands if "trainer.resume=" in c]
    assert "-m" not in first and not any(a.startswith("trainer.resume=") for a in first)
    assert len(resume) == 1, resume
    return first, shlex.split(resume[0])[1:]


@pytest.fixture(scope="module")
def quick_start_run(tmp_path_factory):
    """The README's first command, run in a fresh directory: (cwd, run directory)."""
    cwd = tmp_path_factory.mktemp("quick_start")
    first, _ = _quick_start_commands()
    # shrunk: the README's command trains a CNN VAE on all of MNIST (minutes on 2 cores);
    # +debug=smoke (256 training / 200 test images, small FID) keeps its own overrides
    proc = _cli(*first, *SMALL, cwd=cwd, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [p for p in (cwd / "outputs").glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    return cwd, runs[0]


@needs_mnist
def test_readme_resume_line_works_verbatim_after_the_first_command(quick_start_run):
    """The Quick start's ``dgm-train experiment=vae_cnn trainer.epochs=8
    trainer.resume=outputs/vae_cnn/<time>`` continues the run of its first command (which
    set ``model.latent_dim=10``) without repeating that override: the run's config is the
    base, the command line's keys go on top."""
    cwd, run = quick_start_run
    first, resume = _quick_start_commands()
    before = load_checkpoint(run / "checkpoints" / "last.pt")["config"]
    argv = [a.replace("<time>", run.name) for a in resume]
    epochs = int(next(a for a in argv if a.startswith("trainer.epochs=")).split("=")[1])
    assert f"trainer.resume={run.relative_to(cwd)}" in argv  # the README's path, as written
    proc = _cli(*argv, cwd=cwd, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"run completed after {epochs} epochs: {run.relative_to(cwd)}" in proc.stdout
    after = load_checkpoint(run / "checkpoints" / "last.pt")
    assert after["epoch"] == epochs
    config = after["config"]
    for section in ("model", "objective", "dataset", "sample_metrics"):
        assert config[section] == before[section], section  # the run's own: latent_dim 10, ...
    assert config["model"]["latent_dim"] == 10 and "model.latent_dim=10" in first
    assert config["trainer"]["epochs"] == epochs  # the command line's, on top
    assert config["trainer"]["resume"] == str(run.relative_to(cwd))
    assert [p for p in (cwd / "outputs").glob("*/*") if p.is_dir()] == [run]  # no new run


@needs_mnist
def test_a_changed_identity_key_is_named_in_one_line(quick_start_run):
    """``model.latent_dim=20`` on a resume of a ``latent_dim=10`` run: one line naming the
    key and both values, never the two configs; nothing in the run changes."""
    cwd, run = quick_start_run
    before = snapshot(run)
    proc = _cli(
        "experiment=vae_cnn", "model.latent_dim=20", "trainer.epochs=50", f"trainer.resume={run}"
    )
    assert proc.returncode == 1
    errors = _error_lines(proc.stderr)
    assert errors == [
        "dgm-train: error: CheckpointError: model.latent_dim: 10 in the run, 20 given "
        "(a resume continues the run as it was; train a new run to change it)"
    ], proc.stderr[-3000:]
    assert snapshot(run) == before


@needs_mnist
def test_another_experiment_on_a_resume_is_one_line(quick_start_run):
    """An experiment other than the run's (a group that sets keys everywhere) is refused in
    one line naming both choices."""
    _, run = quick_start_run
    before = snapshot(run)
    proc = _cli("experiment=vae_mlp", "trainer.epochs=50", f"trainer.resume={run}")
    assert proc.returncode == 2
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and errors[0].startswith("dgm-train: error: ConfigError: ")
    assert "experiment=vae_mlp" in errors[0] and "experiment=vae_cnn" in errors[0]
    assert snapshot(run) == before


def test_first_difference_names_the_dotted_key():
    saved = {"model": {"_target_": "dgm_runner.models.VAEMLP", "latent_dim": 10, "h": [1, 2]}}
    assert first_difference(saved, saved) is None
    key, a, b = first_difference(saved, {"model": {**saved["model"], "latent_dim": 20}})
    assert (key, a, b) == ("model.latent_dim", 10, 20)
    assert first_difference(saved, {"model": {**saved["model"], "h": [1, 3]}})[0] == "model.h"


def test_check_resume_message_is_one_line_without_the_sections():
    saved = {
        "model": {"_target_": "dgm_runner.models.VAEMLP", "latent_dim": 10, "hidden": 400},
        "objective": {},
        "dataset": {},
        "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True},
    }
    current = OmegaConf.create({**saved, "model": {**saved["model"], "latent_dim": 20}})
    with pytest.raises(CheckpointError) as err:
        check_resume(current, {"config": saved}, Path("run/checkpoints/last.pt"))
    assert str(err.value) == (
        "model.latent_dim: 10 in the run, 20 given (a resume continues the run as it was; "
        "train a new run to change it)"
    )
