"""Real processes (issue 15, items 6 and 8): one process per run directory (the second is
refused naming the holder's PID, and writes nothing), signals and kills outside the epoch
loop (during the final evaluation), a Ctrl-C that stops a whole basic multirun, and a
killed joblib driver whose workers stop instead of training on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dgm_runner.io.checkpoint import load_checkpoint
from tests import processes
from tests.helpers import REPO, VAE, lines, needs_mnist, snapshot

# signals, kills and locks at moments of a run: alone, not beside another test worker
pytestmark = [needs_mnist, pytest.mark.serial]


def slow(marker: Path, seconds: float = 60.0) -> str:
    """An override adding a final evaluation that takes ``seconds`` and writes ``marker``."""
    return (
        "+sample_metrics.slow={_target_: tests.components.slow_metric, "
        f"seconds: {seconds}, marker: '{marker}'}}"
    )


def launch(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dgm_runner", *args],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, (proc.communicate()[1] or "")[-3000:]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower() or "Traceback" in line]


def test_a_second_process_is_refused_naming_the_holder_and_writes_nothing(tmp_path):
    run_dir, marker = tmp_path / "run", tmp_path / "in_eval"
    first = launch(*VAE, f"hydra.run.dir={run_dir}", slow(marker, 30))
    try:
        wait_for(marker, first)
        before = snapshot(run_dir)
        for extra in (
            [],
            [f"trainer.resume={run_dir}"],
        ):  # a new run into it; a resume while it trains
            second = subprocess.run(
                [sys.executable, "-m", "dgm_runner", *VAE, f"hydra.run.dir={run_dir}", *extra],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=120,
            )
            errors = error_lines(second.stderr)
            assert second.returncode == 1 and len(errors) == 1, second.stderr[-3000:]
            assert errors[0].startswith("dgm-train: error: RunDirLocked:")
            assert f"in use by process {first.pid}" in errors[0]
            assert snapshot(run_dir) == before  # no .hydra/, metrics.json or log line from it
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)


def test_two_launches_at_once_into_one_directory_train_once(tmp_path):
    """Both start together; whichever locks second is refused (or, if it comes after the
    first finished, told that the directory holds a run): one training, no duplicate line."""
    run_dir = tmp_path / "run"
    procs = [
        launch(*VAE, f"hydra.run.dir={run_dir}", slow(tmp_path / f"m{i}", 3)) for i in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes[0] == 0 and codes[1] in (1, 2), [r[1][-2000:] for r in results]
    refused = next(err for p, (_, err) in zip(procs, results) if p.returncode)
    assert "in use by process" in refused or "already holds a run" in refused
    assert lines(run_dir / "metrics.jsonl", "epoch") == [1]
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stop_during_the_final_evaluation_keeps_the_trained_epoch(tmp_path, sig):
    run_dir, marker = tmp_path / "run", tmp_path / "in_eval"
    proc = launch(*VAE, f"hydra.run.dir={run_dir}", slow(marker, 60))
    wait_for(marker, proc)
    start = time.time()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert time.time() - start < 20  # not after the 60 s evaluation
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["evaluated"] == 0
    if sig == signal.SIGTERM:
        errors = error_lines(err)
        assert proc.returncode == 1 and len(errors) == 1, err[-3000:]
        assert (
            "SIGTERM received during the evaluation of epoch 1" in errors[0]
            and "trainer.resume=" in errors[0]
        )
        assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"
    else:
        assert proc.returncode == -signal.SIGKILL
    history = (run_dir / "train_history.jsonl").read_text()
    # a resume continues the run's own config (its slow metric too): this one, given again
    # with 0 s, replaces it (and names tests.components, trusted for the run's config)
    again = slow(tmp_path / "again", 0)
    resumed = subprocess.run(
        [sys.executable, "-m", "dgm_runner", *VAE, f"trainer.resume={run_dir}", again],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = json.loads((run_dir / "metrics.json").read_text())
    assert (
        final["status"] == "completed" and final["step"] == ckpt["step"]
    )  # evaluation redone, not training
    assert (run_dir / "train_history.jsonl").read_text() == history


def test_ctrl_c_stops_a_basic_multirun_not_just_its_current_job(tmp_path):
    sweep_dir, marker = tmp_path / "sweep", tmp_path / "in_eval"
    proc = launch(
        "-m", *VAE, "trainer.seed=1,2,3", f"hydra.sweep.dir={sweep_dir}", slow(marker, 60)
    )
    wait_for(marker, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err[-3000:]
    assert "the sweep stopped" in err and "SIGINT received" in err
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == [
        "0"
    ]  # jobs 1 and 2 never started
    assert json.loads((sweep_dir / "0" / "metrics.json").read_text())["status"] == "interrupted"
    assert (sweep_dir / "summary.md").is_file()


def test_killing_a_joblib_driver_stops_its_workers(tmp_path):
    """SIGKILL of a joblib sweep's driver: each job stops as after a SIGTERM (``last.pt``,
    "interrupted"), and every process the driver started (its loky workers, the idle one
    included, and the resource trackers) ends within seconds instead of staying up as an
    orphan (issue 25, finding 9: two workers and the tracker stayed up for 25 minutes, ~1 GB
    each)."""
    sweep_dir = tmp_path / "sweep"
    # each job waits in its evaluation for 120 s unless stopped; the marker names the job
    log = open(
        tmp_path / "driver.log", "w"
    )  # not a pipe: the workers inherit it and outlive the driver
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dgm_runner",
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=3",  # one worker more than jobs: an idle one must end too
            *VAE,
            "trainer.seed=1,2",
            f"hydra.sweep.dir={sweep_dir}",
            slow(tmp_path / "in_eval_${trainer.seed}", 120),
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    started = []  # what the driver started, read while it lives (they are re-parented after)
    try:
        workers = []
        for seed in (1, 2):
            wait_for(tmp_path / f"in_eval_{seed}", proc, timeout=180)
            workers.append(int((tmp_path / f"in_eval_{seed}").read_text()))
        assert proc.pid not in workers  # the jobs run in loky worker processes
        started = processes.descendants(proc.pid)
        assert set(workers) <= {p.pid for p in started}, started
        assert sum("loky" in p.cmdline and "--process-name" in p.cmdline for p in started) == 3
        assert any("resource_tracker" in p.cmdline for p in started), started
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        killed = time.monotonic()
        log.close()
        deadline = time.time() + 30
        statuses = {}
        while time.time() < deadline and len(statuses) < 2:
            for job in ("0", "1"):
                try:
                    statuses[job] = json.loads((sweep_dir / job / "metrics.json").read_text())[
                        "status"
                    ]
                except (OSError, ValueError, KeyError):
                    pass
            time.sleep(0.2)
        assert statuses == {
            "0": "interrupted",
            "1": "interrupted",
        }  # stopped like a SIGTERM, not after 120 s
        for job in ("0", "1"):
            assert load_checkpoint(sweep_dir / job / "checkpoints" / "last.pt")["epoch"] == 1
        orphans = processes.still_alive(started, within_s=max(0.0, killed + 20 - time.monotonic()))
        assert not orphans, "still running 20 s after the driver's SIGKILL:\n" + "\n".join(
            map(str, orphans)
        )
    finally:
        processes.kill(started)
        proc.kill()
        proc.wait(timeout=30)
