"""Evaluations say what they are (issue 25, findings 2 and 5): every ``eval/*.json`` record
names the epoch, step and checkpoint hash it was computed from; ``dgm-report`` shows a
run's final metrics and labels an evaluation of an older checkpoint as stale, never
letting it (or a subset evaluation, or NaN) replace the final numbers; ``dgm-eval``
honours ``fid.<key>=`` (and its alias ``sample_metrics.fid.<key>=``) for runs trained
with FID and records which classifier it used."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from dgm_runner import CONFIG_DIR
from dgm_runner.cli import eval as evaluate
from dgm_runner.cli.report import build_report
from dgm_runner.io.atomic import write_json
from dgm_runner.io.checkpoint import file_sha256, load_checkpoint
from dgm_runner.loop import train
from dgm_runner.metrics.features import shipped_path
from tests.helpers import SMALL, VAE, needs_mnist

pytestmark = needs_mnist


def _eval_cfg(run_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            "eval", overrides=[f"run_dir={run_dir}", "device=cpu", "fid.n_samples=200", *overrides]
        )


def _cells(text: str, key: str) -> list[str]:
    """The cells of the report's table row ``key`` (the first one), split on unescaped |."""
    row = next(line for line in text.splitlines() if line.startswith(f"| {key} |"))
    return [c.strip() for c in row.strip().strip("|").split(" | ")]


def test_an_evaluation_of_an_older_checkpoint_is_labelled_stale_and_never_the_result(
    compose_cfg, tmp_path
):
    run_dir = tmp_path / "run"
    train(compose_cfg(*VAE), run_dir)
    first = evaluate.evaluate_run(run_dir, _eval_cfg(run_dir))
    last = run_dir / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(last)
    assert first["epoch"] == 1 and first["step"] == ckpt["step"] > 0
    assert first["checkpoint_sha256"] == file_sha256(last) and "test_subset" not in first

    final = train(compose_cfg(*VAE, "trainer.epochs=2", f"trainer.resume={run_dir}"), run_dir)
    text = build_report([tmp_path], tmp_path / "REPORT.md").read_text()
    header = _cells(text, "metric")
    assert len(header) == 3 and "stale (epoch 1)" in header[2], header
    row = _cells(text, "test/elbo_loss")
    assert row[1] == f"{final['test/elbo_loss']:.4g}" != f"{first['test/elbo_loss']:.4g}"
    assert row[2] == f"{first['test/elbo_loss']:.4g}"
    assert _cells(text, "epoch")[1] == "2"

    # the current checkpoint, but 50 test images, and a NaN record: neither is the result
    subset = evaluate.evaluate_run(run_dir, _eval_cfg(run_dir, "test_subset=50"))
    assert subset["test_subset"] == 50 and subset["checkpoint_sha256"] == file_sha256(last)
    nan = {**subset, "test/elbo_loss": float("nan"), "test_subset": None}
    write_json(run_dir / "eval" / "metrics.json", nan)
    text = build_report([tmp_path], tmp_path / "REPORT.md").read_text()
    assert _cells(text, "test/elbo_loss")[1] == f"{final['test/elbo_loss']:.4g}"
    assert any("test_subset=50" in c for c in _cells(text, "metric"))


@pytest.fixture(scope="module")
def fid_run(tmp_path_factory) -> Path:
    """A 1-epoch vae_mlp run trained with FID (200 samples, the shipped classifier)."""
    run_dir = tmp_path_factory.mktemp("fid") / "run"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["experiment=vae_mlp", *SMALL, "logger=none", "trainer.export_name=null"],
        )
    final = train(cfg, run_dir)
    assert final["test/fid_classifier_shipped"] == 1.0
    return run_dir


@pytest.mark.parametrize("spelling", ["fid.classifier", "sample_metrics.fid.classifier"])
def test_dgm_eval_uses_the_classifier_it_is_given_for_a_run_trained_with_fid(
    fid_run, tmp_path, monkeypatch, spelling
):
    copy = tmp_path / "my_classifier.pt"  # the shipped weights under another name: not shipped
    shutil.copy(shipped_path("mnist"), copy)
    monkeypatch.setattr(sys, "argv", ["dgm-eval", str(fid_run), f"{spelling}={copy}", "device=cpu"])
    evaluate.main()
    record = json.loads((fid_run / "eval" / "metrics.json").read_text())
    assert record["test/fid_classifier_shipped"] == 0.0
    assert record["fid_classifier"] == str(copy)
    assert record["fid_classifier_sha256"] == file_sha256(copy)
