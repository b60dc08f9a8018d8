"""How a run ended is recorded in one place (issue 27, item 1: ``dgm_runner.run.record_outcome``,
through ``dgm_runner.run.Outcome``), the same for ``dgm-train`` and a direct ``train()`` call:
a crash after the run opened is ``failed`` with its line, a stop ``interrupted`` where it
stopped, and a call refused before it took the lock writes nothing at all."""

from __future__ import annotations

import json

import pytest

from dgm_runner import epoch
from dgm_runner.config import ConfigError
from dgm_runner.io.layout import RunPaths
from dgm_runner.loop import train
from tests.helpers import VAE, needs_mnist, snapshot

pytestmark = needs_mnist


def _crash(*args, **kwargs):
    raise RuntimeError("planted bug in the update")


def test_a_crash_inside_an_epoch_is_recorded_as_failed_and_raised_unchanged(
    compose_cfg, tmp_path, monkeypatch
):
    monkeypatch.setattr(epoch, "train_step", _crash)
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="^planted bug in the update$"):
        train(compose_cfg(*VAE), run_dir)
    record = json.loads(RunPaths(run_dir).metrics.read_text())
    assert record == {"status": "failed", "error": "RuntimeError: planted bug in the update"}


def test_a_crash_in_a_resumed_run_keeps_its_completed_results(compose_cfg, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    final = train(compose_cfg(*VAE), run_dir)
    monkeypatch.setattr(epoch, "train_step", _crash)
    with pytest.raises(RuntimeError, match="planted bug"):
        train(compose_cfg(*VAE, "trainer.epochs=2", f"trainer.resume={run_dir}"), run_dir)
    record = json.loads(RunPaths(run_dir).metrics.read_text())
    assert record["status"] == "completed" and record["test/elbo_loss"] == final["test/elbo_loss"]
    assert record["last_attempt"] == {
        "status": "failed",
        "error": "RuntimeError: planted bug in the update",
    }


def test_a_refused_resume_records_nothing(compose_cfg, tmp_path):
    run_dir = tmp_path / "run"
    train(compose_cfg(*VAE, "trainer.epochs=2"), run_dir)
    before = snapshot(run_dir)
    with pytest.raises(ConfigError, match="below the 2 epochs"):
        train(compose_cfg(*VAE, "trainer.epochs=1", f"trainer.resume={run_dir}"), run_dir)
    assert snapshot(run_dir) == before


def test_an_invalid_config_in_a_direct_call_creates_nothing(compose_cfg, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match="trainer.batch_size"):
        train(compose_cfg(*VAE, "trainer.batch_size=0"), run_dir)
    assert not run_dir.exists()


def test_the_completed_record_says_when_and_with_which_code(compose_cfg, tmp_path):
    final = train(compose_cfg(*VAE), tmp_path / "run")
    assert final["status"] == "completed"
    assert final["finished"].endswith("Z") and final["finished"][:4].isdigit()
    code = final["code"]
    assert set(code) == {"version", "commit", "dirty"}
    assert code["commit"] is None or len(code["commit"]) == 40
    # VAE1: 784-500 encoder, 2 x 20 Gaussian heads, 20-500-784 decoder (weights + biases)
    encoder, heads, decoder = 784 * 500 + 500, 500 * 40 + 40, 20 * 500 + 500 + 500 * 784 + 784
    assert final["n_parameters"] == encoder + heads + decoder
