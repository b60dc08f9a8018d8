"""Hostile checkpoints (issue 9): a resume with another config, a truncated checkpoint and
weights that do not fit their config are one-line errors that change nothing on disk.
The finished run they start from is the ``cli_run`` fixture (conftest.py)."""

from __future__ import annotations

import subprocess

import pytest
import torch

from dgm_runner.io.checkpoint import CheckpointError, load_checkpoint
from dgm_runner.loop import train
from tests.helpers import SMALL, needs_mnist
from tests.helpers import cli as _cli
from tests.helpers import error_lines as _error_lines
from tests.helpers import script as _script
from tests.helpers import snapshot as _snapshot


@needs_mnist
def test_resume_with_another_config_is_one_line_and_changes_nothing(cli_run):
    before = _snapshot(cli_run)
    proc = _cli(
        "experiment=vae_mlp",
        *SMALL,
        "logger=none",
        "model.latent_dim=3",
        "trainer.epochs=2",
        f"trainer.resume={cli_run}",
    )
    assert proc.returncode == 1
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and errors[0].startswith("dgm-train: error: CheckpointError")
    assert errors[0].startswith(  # the key, both values, never the two configs (issue 26)
        "dgm-train: error: CheckpointError: model.latent_dim: 20 in the run, 3 given"
    )
    assert _snapshot(cli_run) == before  # not even .hydra/ or metrics.json


@needs_mnist
def test_resume_from_a_truncated_checkpoint_changes_nothing(cli_run, compose_cfg, tmp_path):
    broken = tmp_path / "broken"
    (broken / "checkpoints").mkdir(parents=True)
    good = (cli_run / "checkpoints" / "last.pt").read_bytes()
    (broken / "checkpoints" / "last.pt").write_bytes(good[: len(good) // 3])
    (broken / "metrics.json").write_text('{"status": "completed"}\n')
    before = _snapshot(broken)
    cfg = compose_cfg(
        "experiment=vae_mlp", *SMALL, "logger=none", "trainer.epochs=2", f"trainer.resume={broken}"
    )
    with pytest.raises(CheckpointError) as err:
        train(cfg, broken)
    assert "not a readable safe checkpoint" in str(err.value) and "\n" not in str(err.value)
    assert _snapshot(broken) == before


@needs_mnist
def test_dgm_eval_of_a_checkpoint_that_does_not_fit_its_config(cli_run, compose_cfg, tmp_path):
    """A checkpoint whose weights belong to another model (latent_dim 3) but whose config
    says latent_dim 20: one error line, the run directory untouched (no eval.json)."""
    other = tmp_path / "other"
    train(compose_cfg("experiment=vae_mlp", *SMALL, "logger=none", "model.latent_dim=3"), other)
    mine = load_checkpoint(cli_run / "checkpoints" / "last.pt")
    theirs = load_checkpoint(other / "checkpoints" / "last.pt")
    frankenstein = tmp_path / "frankenstein.pt"
    torch.save({**mine, "model": theirs["model"]}, frankenstein)
    before = _snapshot(cli_run)
    proc = subprocess.run(
        [_script("dgm-eval"), str(cli_run), f"checkpoint={frankenstein}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and errors[0].startswith("dgm-eval: error: CheckpointError")
    assert "do not fit" in errors[0]
    after = _snapshot(cli_run)
    assert {
        k: v for k, v in after.items() if k != "eval.log"
    } == before  # Hydra's own (empty) job log
