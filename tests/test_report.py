"""dgm-report: sections per experiment, metrics merged with a current dgm-eval's, references,
pictures, and every name escaped."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dgm_runner.cli.report import build_report, find_run_dirs
from dgm_runner.io.checkpoint import file_sha256


def _fake_run(
    root: Path, name: str, overrides: list[str], metrics: dict, evaluated: dict | None = None
) -> Path:
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(name.encode())  # hashed, never loaded
    (run / "samples").mkdir()
    (run / "samples" / "final.png").write_bytes(b"\x89PNG fake")
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run / "metrics.json").write_text(json.dumps({"status": "completed", "epoch": 3, **metrics}))
    if evaluated is not None:
        (run / "eval").mkdir()
        stamp = {"checkpoint_sha256": file_sha256(run / "checkpoints" / "last.pt")}
        (run / "eval" / "metrics.json").write_text(json.dumps({**stamp, **evaluated}))
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


def test_names_and_overrides_are_escaped_in_the_report(tmp_path):
    """Issue 25, finding 8: a run directory named like an HTML tag and a ``|`` in an
    override land in REPORT.md as text, and every table row keeps its columns."""
    runs = tmp_path / "outputs"
    evil = "<img src=x onerror=alert(1)>"
    _fake_run(runs, f"vae/{evil}", ["experiment=vae_bce", "model.note=a|b"], {"test/nll": 80.5})
    _fake_run(runs, "vae/plain", ["experiment=vae_bce"], {"test/nll": 81.5})
    text = build_report([runs], runs / "REPORT.md").read_text()
    assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "model.note=a\\|b" in text
    table = [line for line in text.split("## vae_bce")[1].splitlines() if line.startswith("|")]
    table = table[: table.index("| model | value | source |")]  # not the references
    columns = {len(line.replace("\\|", "").split("|")) for line in table}
    assert len(table) >= 3 and columns == {5}, table  # "", metric, 2 runs, ""
    links = [line.split("](")[1][:-1] for line in text.splitlines() if line.startswith("![")]
    assert links and all(" " not in link and "<" not in link for link in links)
