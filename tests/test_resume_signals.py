"""Crash safety of the loop in real processes: SIGTERM finishes the step and saves the
position inside the epoch; SIGKILL loses at most the epoch in progress; either way the
resumed run ends with the same metrics, to the last bit, as an uninterrupted one
(CPU). Also trainer.resume=auto."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dgm_runner.io.checkpoint import load_checkpoint
from tests.helpers import needs_mnist

# signals sent at moments of a run: alone, not beside another test worker (make test)
pytestmark = [needs_mnist, pytest.mark.serial]

RUN = [
    "experiment=vae_mlp",
    "dataset.subset=4096",
    "dataset.test_subset=200",
    "trainer.batch_size=16",
    "trainer.epochs=2",
    "trainer.progress=false",
    "trainer.n_samples=16",
    "logger=none",
    "trainer.log_every=20",
    "~sample_metrics.fid",
    "trainer.export_name=null",
]
KEYS = ("test/elbo_loss", "test/recon_mse_sum", "test/kl", "train/elbo_loss")


def _launch(run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dgm_runner", *RUN, f"hydra.run.dir={run_dir}", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(run_dir: Path, *extra: str) -> dict:
    proc = _launch(run_dir, *extra)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    return json.loads((run_dir / "metrics.json").read_text())


def _interrupt(run_dir: Path, sig: int) -> subprocess.CompletedProcess:
    """Start a run, wait for the first epoch's evaluation record (its checkpoint is written
    before the evaluation, which may take a while: the first grid imports torchvision), then
    send ``sig`` in epoch 2's training."""
    proc = _launch(run_dir)
    record = run_dir / "metrics.jsonl"
    deadline = time.time() + 240
    while (
        not (record.exists() and record.read_text().strip())
        and proc.poll() is None
        and time.time() < deadline
    ):
        time.sleep(0.05)
    time.sleep(0.2)  # into epoch 2
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict:
    return _run(tmp_path_factory.mktemp("straight") / "run")


def test_sigterm_saves_the_position_and_the_resumed_run_is_bit_exact(straight, tmp_path):
    run_dir = tmp_path / "run"
    stopped = _interrupt(run_dir, signal.SIGTERM)
    assert stopped.returncode == 1, stopped.stderr[-2000:]
    lines = [line for line in stopped.stderr.splitlines() if line.startswith("dgm-train: error:")]
    assert len(lines) == 1 and "SIGTERM received" in lines[0] and "trainer.resume=" in lines[0]
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert ckpt["partial"]["batch"] > 0 and ckpt["partial"]["epoch"] == ckpt["epoch"] + 1

    resumed = _run(run_dir, f"trainer.resume={run_dir}")
    assert resumed["status"] == "completed"
    for key in KEYS:
        assert resumed[key] == straight[key], key  # bit-exact


def test_sighup_stops_the_run_like_sigterm(tmp_path):
    """A closed terminal (SIGHUP) saves the position and ends with one line, as SIGTERM does
    (issue 25: it used to kill the run with nothing saved and no status)."""
    run_dir = tmp_path / "run"
    stopped = _interrupt(run_dir, signal.SIGHUP)
    assert stopped.returncode == 1, stopped.stderr[-2000:]
    lines = [line for line in stopped.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "SIGHUP received" in lines[0] and "trainer.resume=" in lines[0]
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["partial"]["batch"] > 0


def test_sigkill_mid_epoch_then_resume_auto_is_bit_exact(straight, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # resume=auto searches outputs/<experiment>/ under the cwd
    run_dir = tmp_path / "outputs" / "vae_mlp" / "2026-01-01_00-00-00_000000"
    killed = _interrupt(run_dir, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")  # never torn: written atomically
    assert ckpt.get("partial") is None and ckpt["epoch"] >= 1
    # the same overrides + trainer.resume=auto find the killed run (hydra.run.dir not given)
    proc = subprocess.run(
        [sys.executable, "-m", "dgm_runner", *RUN, "trainer.resume=auto"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert (
        resumed["status"] == "completed"
        and len(list((tmp_path / "outputs" / "vae_mlp").iterdir())) == 1
    )
    for key in KEYS:
        assert resumed[key] == straight[key], key
    # no line twice: what the killed process wrote after its last.pt was dropped on resume
    epochs = [
        json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    steps = [
        json.loads(line)["step"]
        for line in (run_dir / "train_history.jsonl").read_text().splitlines()
    ]
    assert epochs == [1, 2] and steps == sorted(set(steps))


def test_truncate_jsonl_drops_lines_after_the_checkpoint_and_torn_ones(tmp_path):
    from dgm_runner.io.artifacts import append_jsonl, truncate_jsonl

    path = tmp_path / "metrics.jsonl"
    assert truncate_jsonl(path, "epoch", 1) == 0  # no file yet: nothing to do
    append_jsonl(path, {"epoch": 1, "x": 0.5}, {"epoch": 2, "x": 0.25})
    with open(path, "a") as f:
        f.write('{"epoch": 3, "x"')  # torn by a kill
    assert truncate_jsonl(path, "epoch", 1) == 2
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"epoch": 1, "x": 0.5}]
    assert truncate_jsonl(path, "epoch", 1) == 0
