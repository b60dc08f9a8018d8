"""``trainer.num_threads=auto`` (issue 26, item 3): the load it measures, the count it
picks, and a resume keeping the count its run started with."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

from dgm_runner import threads
from dgm_runner.loop import train
from dgm_runner.testing import compose_train
from tests.helpers import needs_mnist

SPIN = "import time\nend = time.time() + 30\nwhile time.time() < end: pass"


def test_other_work_is_the_machines_cpu_time_less_our_own(monkeypatch):
    """The arithmetic on fake clocks: 1.5 s of the machine's CPU time in 0.5 s of wall time,
    0.5 s of it this process's own: 2 cores' worth of other work."""
    from dgm_runner.threads import _Sample

    readings = iter([_Sample(10.0, 100.0, 3.0), _Sample(10.5, 101.5, 3.5)])
    monkeypatch.setattr(threads, "_sample", lambda: next(readings))
    threads._LAST[0] = threads._sample()
    assert threads.others_busy_cores() == pytest.approx(2.0)
    assert threads._LAST[0] == _Sample(10.5, 101.5, 3.5)  # the next window starts here


@pytest.mark.serial  # the machine's load: alone, not beside another test worker
@pytest.mark.skipif(threads._machine_busy_s() is None, reason="no /proc/stat")
def test_the_load_of_another_process_is_counted_and_our_own_is_not():
    """On the real /proc/stat: a spinning neighbour counts about one core, this process's
    own spinning none. Needs a machine otherwise quiet (skipped beside another test worker)."""
    threads.others_busy_cores()  # a fresh window
    time.sleep(0.4)
    if threads.others_busy_cores() > 0.3:
        pytest.skip("other work on the machine (e.g. another test worker): nothing to compare")
    start = time.monotonic()
    while time.monotonic() - start < 0.4:  # this process busy: not "other work"
        pass
    own = threads.others_busy_cores()
    neighbour = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        time.sleep(0.3)  # its interpreter started
        threads.others_busy_cores()
        time.sleep(0.6)
        other = threads.others_busy_cores()
    finally:
        neighbour.kill()
        neighbour.wait()
    assert own < 0.5, own
    assert other > 0.6, other


@pytest.mark.parametrize(
    "busy, cores, expected", [(0.0, 2, 2), (0.7, 2, 2), (0.8, 2, 1), (1.9, 2, 1), (5.0, 4, 1)]
)
def test_auto_leaves_out_the_cores_other_work_keeps_busy(monkeypatch, busy, cores, expected):
    monkeypatch.setattr(threads, "others_busy_cores", lambda: busy)
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    n, why = threads.choose_threads("auto")
    assert n == expected and why == f"auto: {cores} cores, {busy:.1f} busy with other work"


def test_the_other_settings(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    assert threads.choose_threads(3) == (3, "trainer.num_threads")
    assert threads.choose_threads(None) == (torch.get_num_threads(), "torch's default")
    assert threads.choose_threads("auto", recorded=1)[0] == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # 4 processes of a data-parallel run
    assert threads.choose_threads("auto") == (2, "auto: 8 cores shared by 4 processes")


@needs_mnist
def test_a_run_records_its_count_and_a_resume_with_auto_keeps_it(tmp_path, caplog):
    before = torch.get_num_threads()
    run_dir = tmp_path / "run"
    small = ["experiment=vae_mlp", "+debug=smoke", "logger=none", "~sample_metrics.fid"]
    train(compose_train([*small, "trainer.num_threads=1"]), run_dir)
    assert json.loads((run_dir / "metrics.json").read_text())["num_threads"] == 1
    assert torch.get_num_threads() == before  # the run's setting ends with the run
    caplog.set_level("INFO", logger="dgm_runner")
    resumed = [*small, "trainer.epochs=2", f"trainer.resume={run_dir}", "trainer.num_threads=auto"]
    train(compose_train(resumed), run_dir)
    assert json.loads((run_dir / "metrics.json").read_text())["num_threads"] == 1
    assert "1 CPU thread (auto: the count this run started with (resumed))" in caplog.text


def test_auto_never_raises_a_limit_already_set_on_torchs_threads():
    """A joblib worker (cores / n_jobs) or OMP_NUM_THREADS: auto stays within it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert threads.usable_cores() == 1
        assert threads.choose_threads("auto")[0] == 1
    finally:
        torch.set_num_threads(before)
