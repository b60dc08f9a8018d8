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


def _saved_config(run: Path, config: dict) -> None:
    import yaml

    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))


def test_report_shows_the_leaderboard_rows_its_runs_match(tmp_path):
    """Issue 28, item 6: a run whose saved config matches a leaderboard row (configs/
    leaderboard.yaml) fills that row, with the published number and the gap beside it;
    a run of another protocol (threshold instead of dynamic binarization) fills none."""
    runs = tmp_path / "outputs"
    k5 = _fake_run(
        runs,
        "iwae5",
        ["experiment=vae_burda", "objective.k=5"],
        {"test/nll_iwae_k5000": 87.04, "test/nll_iwae_k5000_se": 0.2},
    )
    _saved_config(
        k5,
        {"experiment_name": "vae_burda", "objective": {"k": 5}, "dataset": {"binarize": "dynamic"}},
    )
    thresholded = _fake_run(
        runs, "thr", ["experiment=vae_burda", "dataset.binarize=threshold"], {"test/nll": 1.0}
    )
    _saved_config(
        thresholded,
        {
            "experiment_name": "vae_burda",
            "objective": {"k": 1},
            "dataset": {"binarize": "threshold"},
        },
    )
    text = build_report([runs], runs / "REPORT.md").read_text()
    board = text.split("## Leaderboard")[1]
    assert "### leaderboard_binarized_dynamic" in board
    assert "### leaderboard_rbm" not in board  # no row of that table matched
    row = next(line for line in board.splitlines() if line.startswith("| IWAE, k = 5"))
    assert "| 87.04 ± 0.20 | 85.54 | +1.50 | Burda et al. 2016, Table 1" in row
    vae = next(line for line in board.splitlines() if line.startswith("| VAE, k = 1"))
    assert "| not run |" in vae
    assert "Generated by `dgm-report` from 1 run directory" in board
    assert "- IWAE, k = 5 (objective=iwae objective.k=5): iwae5" in board


def test_report_without_leaderboard_runs_says_so(tmp_path):
    runs = tmp_path / "outputs"
    _fake_run(runs, "bce", ["experiment=vae_bce"], {"test/nll_iwae_k1000": 80.5})
    board = build_report([runs], runs / "REPORT.md").read_text().split("## Leaderboard")[1]
    assert "No run here is one of the leaderboard's" in board and "|" not in board


def test_every_leaderboard_row_matches_keys_its_experiment_has():
    """The shipped spec's rows name real experiments and real config keys (a renamed key
    would silently match nothing)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from dgm_runner import CONFIG_DIR
    from dgm_runner.cli.report import LEADERBOARD_SPEC
    from dgm_runner.io.results_tables import MISSING_KEY, config_value, load_spec

    rows = [row for spec in load_spec(LEADERBOARD_SPEC).values() for row in spec.rows]
    matched = [row for row in rows if row.match]
    assert len(matched) >= 8
    experiments = {dict(row.match)["experiment_name"] for row in matched}
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        composed = {
            name: OmegaConf.to_container(
                compose("train", overrides=[f"experiment={name}"]), resolve=False
            )
            for name in experiments
        }
    for row in matched:
        config = composed[dict(row.match)["experiment_name"]]
        for key, _ in row.match:
            assert config_value(config, key) is not MISSING_KEY, (row.label, key)
