"""Results are never lost or silently wrong around resume (issue 15, items 3-5, 8, 11):
resuming a completed run changes nothing, an extension keeps every record, a failure
never replaces completed results, new optimiser settings are applied (and logged) on
resume, a stop during evaluation keeps the trained epoch and the resume redoes only the
evaluation, and a rerun after a kill before the first checkpoint repeats no line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from dgm_runner.cli.report import main as report_main
from dgm_runner.config import ConfigError
from dgm_runner.io.artifacts import append_jsonl, read_jsonl
from dgm_runner.io.checkpoint import CheckpointError, load_checkpoint
from dgm_runner.io.run_dir import record_outcome
from dgm_runner.io.signals import StopRequested
from dgm_runner.loop import train
from tests.helpers import VAE, lines, needs_mnist, snapshot

pytestmark = needs_mnist

SIGNAL_IN_EVAL = "+sample_metrics.stop={_target_: tests.components.self_signal_metric}"


@pytest.fixture
def completed(compose_cfg, tmp_path):
    """A completed 1-epoch run (in-process) and its metrics.json."""
    run_dir = tmp_path / "run"
    final = train(compose_cfg(*VAE), run_dir)
    return run_dir, final


def test_resuming_a_completed_run_changes_nothing_on_disk(completed, compose_cfg):
    run_dir, final = completed
    before = snapshot(run_dir)
    again = train(compose_cfg(*VAE, f"trainer.resume={run_dir}"), run_dir)
    assert again == final and "train/elbo_loss" in again and again["time_per_epoch_s"] is not None
    assert snapshot(run_dir) == before


def test_extending_a_completed_run_keeps_every_earlier_record(completed, compose_cfg):
    run_dir, first = completed
    history = (run_dir / "train_history.jsonl").read_text()
    extended = train(compose_cfg(*VAE, "trainer.epochs=3", f"trainer.resume={run_dir}"), run_dir)
    assert extended["status"] == "completed" and extended["epoch"] == 3
    assert "train/elbo_loss" in extended and extended["time_per_epoch_s"] > 0
    assert lines(run_dir / "metrics.jsonl", "epoch") == [1, 2, 3]
    assert (run_dir / "train_history.jsonl").read_text().startswith(history)
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert len(ckpt["epoch_times"]) == 3 and ckpt["evaluated"] == 3
    with pytest.raises(
        ConfigError, match="trainer.epochs=2 is below the 3 epochs"
    ):  # no silent truncation
        train(compose_cfg(*VAE, "trainer.epochs=2", f"trainer.resume={run_dir}"), run_dir)


def test_a_failure_is_recorded_beside_completed_results(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    done = {"status": "completed", "epoch": 2, "test/loss": 1.5}
    (run_dir / "metrics.json").write_text(json.dumps(done))
    record_outcome(run_dir, {"status": "failed", "error": "RuntimeError: boom"})
    kept = json.loads((run_dir / "metrics.json").read_text())
    assert kept == {**done, "last_attempt": {"status": "failed", "error": "RuntimeError: boom"}}
    record_outcome(
        run_dir, {"status": "interrupted", "error": "SIGTERM"}
    )  # the latest attempt only
    assert (
        json.loads((run_dir / "metrics.json").read_text())["last_attempt"]["status"]
        == "interrupted"
    )
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    record_outcome(fresh, {"status": "failed", "error": "x"})  # nothing to keep: written as it is
    assert json.loads((fresh / "metrics.json").read_text()) == {"status": "failed", "error": "x"}


def test_a_crashed_extension_keeps_the_completed_metrics(completed, tmp_path):
    """A bug (not a user error) during an extension, through the CLI: the completed metrics
    stay, the failure is under last_attempt, and no traceback line is lost from train.log."""
    import subprocess
    import sys

    run_dir, first = completed
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dgm_runner",
            *VAE,
            "trainer.epochs=2",
            f"trainer.resume={run_dir}",
            "+sample_metrics.boom={_target_: tests.components.failing_metric}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode != 0
    kept = json.loads((run_dir / "metrics.json").read_text())
    assert {k: kept[k] for k in first} == first
    assert kept["last_attempt"]["status"] == "failed" and "boom" in kept["last_attempt"]["error"]


def test_new_optimiser_settings_are_applied_on_resume_and_logged(completed, compose_cfg, caplog):
    run_dir, _ = completed
    caplog.set_level(logging.INFO, logger="dgm_runner")
    train(
        compose_cfg(
            *VAE,
            "trainer.epochs=2",
            "optimizer.lr=5e-4",
            "optimizer.betas=[0.5,0.9]",
            "optimizer.weight_decay=0.01",
            f"trainer.resume={run_dir}",
        ),
        run_dir,
    )
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    group = ckpt["optimizers"]["model"]["param_groups"][0]
    assert (
        group["lr"] == 5e-4
        and tuple(group["betas"]) == (0.5, 0.9)
        and group["weight_decay"] == 0.01
    )
    assert ckpt["config"]["optimizer"]["lr"] == 5e-4  # the config saved is the one used
    assert caplog.text.count("optimizer.lr changed on resume: 0.001 -> 0.0005") == 1
    assert "optimizer.betas changed on resume: [0.9, 0.999] -> [0.5, 0.9]" in caplog.text
    assert "optimizer.weight_decay changed on resume: 0.0 -> 0.01" in caplog.text
    assert "optimizer.eps changed" not in caplog.text  # unchanged settings are not logged
    with pytest.raises(CheckpointError, match="resume with optimizer=adam$") as err:
        train(
            compose_cfg(*VAE, "trainer.epochs=3", "optimizer=sgd", f"trainer.resume={run_dir}"),
            run_dir,
        )
    assert "trained with optimizer=adam (torch.optim.Adam)" in str(err.value)
    assert "continue as optimizer=sgd (torch.optim.SGD)" in str(err.value)
    assert "\n" not in str(err.value)
    before = snapshot(run_dir)
    with pytest.raises(CheckpointError, match=r"^optimizer.amsgrad: False in the run, True given"):
        train(  # Adam's amsgrad state (a running maximum) is not in the saved state
            compose_cfg(
                *VAE, "trainer.epochs=3", "+optimizer.amsgrad=true", f"trainer.resume={run_dir}"
            ),
            run_dir,
        )
    assert snapshot(run_dir) == before  # refused before any work


def test_a_stop_during_the_final_evaluation_keeps_the_epoch_and_resume_only_evaluates(
    compose_cfg, tmp_path
):
    run_dir = tmp_path / "run"
    with pytest.raises(StopRequested) as err:
        train(compose_cfg(*VAE, SIGNAL_IN_EVAL), run_dir)
    line = str(err.value)
    assert (
        "SIGTERM received during the evaluation of epoch 1" in line
        and f"trainer.resume={run_dir}" in line
    )
    assert "\n" not in line
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")  # written before the evaluation
    assert ckpt["epoch"] == 1 and ckpt["evaluated"] == 0 and ckpt["partial"] is None
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"
    assert not (run_dir / "metrics.jsonl").exists()
    history = (run_dir / "train_history.jsonl").read_text()

    resumed = train(
        compose_cfg(*VAE, f"trainer.resume={run_dir}"), run_dir
    )  # without the stopping metric
    assert (
        resumed["status"] == "completed" and resumed["step"] == ckpt["step"]
    )  # no step trained again
    assert (run_dir / "train_history.jsonl").read_text() == history
    assert lines(run_dir / "metrics.jsonl", "epoch") == [1]
    straight = train(compose_cfg(*VAE), tmp_path / "straight")
    times = ("time_per_epoch_s", "train_time_s", "eval_time_s", "finished")  # wall clock
    assert {k: v for k, v in resumed.items() if k not in times} == {
        k: v for k, v in straight.items() if k not in times
    }  # bit-exact


def test_a_stop_while_extending_keeps_the_completed_results(completed, compose_cfg):
    run_dir, first = completed
    with pytest.raises(StopRequested):
        train(
            compose_cfg(*VAE, "trainer.epochs=2", SIGNAL_IN_EVAL, f"trainer.resume={run_dir}"),
            run_dir,
        )
    kept = json.loads((run_dir / "metrics.json").read_text())
    assert {k: kept[k] for k in first} == first and kept["last_attempt"]["status"] == "interrupted"


def test_a_rerun_after_a_kill_before_the_first_checkpoint_repeats_no_line(compose_cfg, tmp_path):
    """``trainer.resume=auto`` (as a requeued SLURM job) into a directory whose launch was
    killed before its first ``last.pt`` (training lines, no results) starts it again; a
    launch without ``trainer.resume`` is refused there (issue 25: any run file marks a run)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    append_jsonl(
        run_dir / "train_history.jsonl", {"step": 4, "train/elbo_loss": 1.0}
    )  # the killed launch's
    (run_dir / ".metrics.json.abc.tmp").write_text("{")  # a torn temp file of a killed writer
    train(compose_cfg(*VAE, "trainer.resume=auto"), run_dir)
    assert lines(run_dir / "metrics.jsonl", "epoch") == [1]
    steps = lines(run_dir / "train_history.jsonl", "step")
    assert steps == sorted(set(steps))
    assert not list(run_dir.glob(".*.tmp"))


def test_resume_removes_temp_files_a_killed_writer_left(completed, compose_cfg):
    run_dir, _ = completed
    stale = [
        run_dir / "checkpoints" / ".last.pt.k1ll3d.tmp",
        run_dir / "samples" / ".final.png.x.tmp",
    ]
    for p in stale:
        p.write_bytes(b"torn")
    train(compose_cfg(*VAE, "trainer.epochs=2", f"trainer.resume={run_dir}"), run_dir)
    assert not any(p.exists() for p in stale)


def test_dgm_report_survives_a_torn_metrics_json_and_writes_under_its_root(
    completed, tmp_path, monkeypatch
):
    run_dir, _ = completed
    torn = tmp_path / "torn"
    (torn / "checkpoints").mkdir(parents=True)
    (torn / "metrics.json").write_text('{"status": "compl')
    monkeypatch.chdir(tmp_path / "run" / "samples")  # somewhere else: nothing may land here
    report_main([str(tmp_path)])
    report = (tmp_path / "REPORT.md").read_text()
    assert "unreadable metrics.json" in report and "test/elbo_loss" in report
    assert not (Path.cwd() / "outputs").exists()


def test_an_export_name_is_a_file_name_inside_the_run(compose_cfg, tmp_path):
    for bad in (
        "checkpoints/last.pt",
        str(tmp_path / "elsewhere.pt"),
        "../up.pt",
        "metrics.json",
        ".hidden",
    ):
        with pytest.raises(ConfigError, match="trainer.export_name=.*plain file name"):
            train(compose_cfg(*VAE, f"trainer.export_name='{bad}'"), tmp_path / "never")
    assert not (tmp_path / "never").exists()  # refused before anything was created
    ok = train(compose_cfg(*VAE, "trainer.export_name=weights.pt"), tmp_path / "ok")
    assert ok["status"] == "completed" and isinstance(
        torch.load(tmp_path / "ok" / "weights.pt"), dict
    )


def test_resume_auto_over_a_finished_sweep_leaves_every_job_as_it_was(tmp_path):
    import subprocess
    import sys

    sweep = tmp_path / "sweep"
    args = [
        sys.executable,
        "-m",
        "dgm_runner",
        "-m",
        *VAE,
        "model.latent_dim=2,3",
        f"hydra.sweep.dir={sweep}",
    ]
    first = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    jobs = {job: snapshot(sweep / job) for job in ("0", "1")}
    again = subprocess.run(
        [*args, "trainer.resume=auto"], capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("nothing to do") == 2
    for job, before in jobs.items():
        assert snapshot(sweep / job) == before, job


def test_torn_and_garbage_lines_are_kept_aside_with_one_warning_on_resume(
    compose_cfg, tmp_path, caplog
):
    """Issue 25, finding 10: a torn last line of metrics.jsonl and undecodable garbage in
    train_history.jsonl are moved to ``<file>.corrupt`` with one warning line per file, the
    resume neither crashes nor drops a line without a word, and the good records stay."""
    run_dir = tmp_path / "run"
    train(compose_cfg(*VAE, "trainer.epochs=2"), run_dir)
    metrics, history = run_dir / "metrics.jsonl", run_dir / "train_history.jsonl"
    good, second = metrics.read_bytes().splitlines(keepends=True)
    torn = second[: len(second) // 2]  # epoch 2's record cut short (a copy, a bad disk)
    metrics.write_bytes(good + torn)
    steps = lines(history, "step")
    garbage = b"\xff\xfe\x00 not json at all\n"
    head, *rest = history.read_bytes().splitlines(keepends=True)
    history.write_bytes(head + garbage + b"".join(rest))
    caplog.set_level(logging.WARNING, logger="dgm_runner")
    final = train(compose_cfg(*VAE, "trainer.epochs=3", f"trainer.resume={run_dir}"), run_dir)
    assert final["status"] == "completed" and final["epoch"] == 3
    assert lines(metrics, "epoch") == [1, 3]
    assert lines(history, "step")[: len(steps)] == steps
    assert Path(f"{metrics}.corrupt").read_bytes() == torn + b"\n"
    assert Path(f"{history}.corrupt").read_bytes() == garbage
    for path in (metrics, history):
        said = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
        assert len(said) == 1 and f"{path}.corrupt" in said[0] and "\n" not in said[0], said
    records = [json.loads(line) for line in history.read_text().splitlines()]
    with open(history, "ab") as f:  # a reader (figures, the benchmark) skips them, and says so
        f.write(garbage)
    caplog.clear()
    assert read_jsonl(history) == records
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and str(history) in said[0] and "skipped" in said[0], said
