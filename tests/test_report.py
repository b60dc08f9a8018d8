"""dgm-report: sections per experiment, metrics merged with dgm-eval's, references, pictures."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dgm_runner.cli.report import build_report, find_run_dirs


def _fake_run(
    root: Path, name: str, overrides: list[str], metrics: dict, evaluated: dict | None = None
) -> Path:
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "samples").mkdir()
    (run / "samples" / "final.png").write_bytes(b"\x89PNG fake")
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run / "metrics.json").write_text(json.dumps({"status": "completed", "epoch": 3, **metrics}))
    if evaluated is not None:
        (run / "eval").mkdir()
        (run / "eval" / "metrics.json").write_text(json.dumps(evaluated))
    return run


def test_report_has_one_section_per_experiment_with_merged_metrics_and_references(tmp_path):
    runs = tmp_path / "outputs"
    _fake_run(
        runs,
        "rbm/0",
        ["experiment=rbm_cdk", "objective.k=1"],
        {"test/free_energy": -400.0},
        {"test/log_likelihood_ais": -150.5, "test/fid": 12.5, "epoch": 3},
    )
    _fake_run(runs, "rbm/1", ["experiment=rbm_cdk", "objective.k=25"], {"test/free_energy": -404.0})
    _fake_run(runs, "bce", ["experiment=vae_bce"], {"test/nll_iwae_k1000": 80.5})
    (runs / "rbm" / "0" / "eval" / "metrics.json").touch()  # eval/ dirs are not runs themselves
    assert [p.name for p in find_run_dirs([runs])] == ["bce", "0", "1"]

    out = build_report([runs], runs / "REPORT.md")
    text = out.read_text()
    assert text.count("## rbm_cdk") == 1 and text.count("## vae_bce") == 1
    rbm = text.split("## rbm_cdk")[1].split("## ")[0]
    assert (
        "| test/log_likelihood_ais | -150.5 | - |" in rbm
    )  # dgm-eval's value beside the final metrics
    assert "| test/free_energy | -400 | -404 |" in rbm and "objective.k=25" in rbm
    assert "-86.34 nats" in rbm and "Salakhutdinov & Murray 2008" in rbm
    assert "86.76 nats" in text and "Burda et al. 2015" in text
    for link in [line.split("](")[1][:-1] for line in text.splitlines() if line.startswith("![")]:
        assert (runs / link).is_file(), link


def test_report_without_runs_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run directories"):
        build_report([tmp_path], tmp_path / "REPORT.md")
    proc = subprocess.run(
        [sys.executable, "scripts/report.py", str(tmp_path), "--out", str(tmp_path / "R.md")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert proc.returncode == 1 and proc.stderr.startswith("dgm-report: error: no run directories")
    assert not (tmp_path / "R.md").exists()
