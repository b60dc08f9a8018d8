"""Progress of long steps (issue 26, item 1; :mod:`dgm_runner.progress`): a bar on a
terminal, a log line every N % otherwise, never a change in a result, never a bar left
before an error line; the final evaluation's plan line and the run's wall times."""

from __future__ import annotations

import functools
import json
import logging
import re
from types import SimpleNamespace

import pytest
import torch

from dgm_runner import progress
from dgm_runner.cli.summary import run_summary
from dgm_runner.distributions import sample_bernoulli
from dgm_runner.evaluation import evaluation_plan
from dgm_runner.loop import train
from dgm_runner.metrics.ais import ais_log_partition, rbm_ais_log_likelihood
from dgm_runner.metrics.fid import classifier_fid
from dgm_runner.models.rbm import RBM
from dgm_runner.samplers.base import draw_samples
from dgm_runner.samplers.gibbs import GibbsSampler
from tests.helpers import SMALL, needs_mnist


@pytest.fixture
def at_once(monkeypatch):
    """No delay: every step shows its progress from its first item."""
    monkeypatch.setattr(progress, "DELAY_S", 0.0)


@pytest.fixture
def terminal(monkeypatch, at_once) -> None:
    """stderr counts as a terminal: bars (on pytest's captured stderr, ``capsys``)."""
    monkeypatch.setattr(progress, "is_tty", lambda: True)


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dgm_runner"]


def test_not_a_tty_logs_a_line_every_ten_percent_and_prints_nothing(at_once, caplog, capsys):
    caplog.set_level(logging.INFO, logger="dgm_runner")
    for _ in progress.track(range(20), "AIS (3 runs x 21 temperatures)", unit="temperature"):
        pass
    lines = _lines(caplog)
    assert len(lines) == 10, lines
    assert lines[0].startswith("AIS (3 runs x 21 temperatures): 10% (2/20 temperature), ")
    assert lines[-1].startswith("AIS (3 runs x 21 temperatures): 100% (20/20 temperature), ")
    assert "left" in lines[0] and "left" not in lines[-1]
    out = capsys.readouterr()
    assert out.err == "" and out.out == ""


def test_short_steps_and_switched_off_steps_log_nothing(caplog):
    caplog.set_level(logging.INFO, logger="dgm_runner")
    for _ in progress.track(range(50), "quick"):  # well under DELAY_S
        pass
    with progress.enabled(False):
        with progress.Bar(10, "off") as bar:
            bar.update(10)
    assert _lines(caplog) == []


def test_only_the_outermost_moving_step_logs(at_once, caplog):
    caplog.set_level(logging.INFO, logger="dgm_runner")
    for _ in progress.track(range(4), "FID samples", unit="batch"):
        for _ in progress.track(range(10), "Gibbs sweeps", unit="sweep"):
            pass
    for _ in progress.track(range(1), "one batch"):  # a single item: its inner step logs
        for _ in progress.track(range(10), "inner sweeps"):
            pass
    lines = _lines(caplog)
    assert lines and not any(line.startswith("Gibbs sweeps") for line in lines)
    assert sum(line.startswith("FID samples") for line in lines) == 4
    assert sum(line.startswith("inner sweeps") for line in lines) == 10


def test_a_terminal_gets_nested_bars_on_stderr_and_no_log_lines(terminal, caplog, capsys):
    caplog.set_level(logging.INFO, logger="dgm_runner")
    for _ in progress.track(range(3), "FID samples", unit="batch"):
        for _ in progress.track(range(5), "Gibbs sweeps", unit="sweep"):
            pass
    text = capsys.readouterr().err
    assert "FID samples" in text and "Gibbs sweeps" in text
    assert _lines(caplog) == [] and progress._ACTIVE == []


def test_a_step_that_raises_leaves_no_bar_open(terminal, capsys):
    with pytest.raises(ValueError):
        with progress.enabled(True):
            bar = progress.Bar(10, "doomed")
            bar.update(3)
            raise ValueError("boom")
    assert progress._ACTIVE == [] and bar._bar is None  # closed: its line was cleared
    assert capsys.readouterr().err.endswith("\r")  # the cleared line: the cursor at its start


def _rbm() -> RBM:
    torch.manual_seed(0)
    return RBM((1, 28, 28), hidden_dim=16, init_std=0.05)


@pytest.mark.parametrize("where", ["terminal", "log"])
def test_results_are_the_same_with_progress_on_and_off(where, request, at_once):
    if where == "terminal":
        request.getfixturevalue("terminal")
    rbm, sampler = _rbm(), GibbsSampler(steps=23)  # not a multiple of the sweeps per update

    def results():
        images = draw_samples(rbm, sampler, 30, 5, torch.device("cpu"), batch_size=8)
        betas = torch.linspace(0, 1, 51, dtype=torch.float64)
        ais = ais_log_partition(rbm, torch.zeros(784), 4, betas, torch.Generator().manual_seed(3))
        return images, ais

    with progress.enabled(False):
        off_images, off_ais = results()
    with progress.enabled(True):
        on_images, on_ais = results()
    assert torch.equal(on_images, off_images) and on_ais == off_ais
    # ... and the same as one uninterrupted chain (the sampler's pieces are the same draws)
    gen = torch.Generator().manual_seed(5)
    v = sample_bernoulli(torch.full((8, 784), 0.5), gen)
    _, probs = rbm.gibbs_chain(v, 23, gen)
    assert torch.equal(off_images[:8], probs.reshape(8, 1, 28, 28))


def test_the_final_evaluation_plan_names_every_step():
    data = SimpleNamespace(test_x=torch.zeros(7, 1, 28, 28), is_image=True)
    comps = SimpleNamespace(
        objective=SimpleNamespace(iwae_k=1000), data=data, sampler=GibbsSampler(1000)
    )
    fns = [
        functools.partial(classifier_fid, n_samples=10000),
        functools.partial(rbm_ais_log_likelihood, n_runs=100),
        functools.partial(rbm_ais_log_likelihood, n_runs=5, schedule_steps=200),
        functools.partial(json.dumps),  # no describe: its name
    ]
    assert evaluation_plan(_rbm(), comps, fns) == (
        "final evaluation: test metrics (7 images, IWAE k=1000), FID (10000 samples, gibbs "
        "1000 sweeps), AIS (100 runs x 14501 temperatures), AIS (5 runs x 201 temperatures), "
        "dumps"
    )


def test_a_step_timed_before_is_estimated_at_its_size_or_one_near_it(tmp_path, monkeypatch):
    from dgm_runner import eval_times

    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path))
    where = "RBM 100480 cpu 2"
    full = "FID (10000 samples, gibbs 1000 sweeps)"
    assert eval_times.estimate(full, where) is None
    eval_times.record("FID (200 samples, gibbs 10 sweeps)", where, 2.0)  # a smoke run's
    assert eval_times.estimate(full, where) is None  # 5000x the size: not extrapolated
    eval_times.record(full, where, 73.0)
    assert eval_times.estimate(full, where) == 73.0
    assert eval_times.estimate("FID (15000 samples, gibbs 1000 sweeps)", where) == 109.5
    assert eval_times.estimate("FID (200 samples, gibbs 10 sweeps)", where) == 2.0
    assert eval_times.estimate(full, "RBM 9 cpu 1") is None  # another model / threads
    assert eval_times.estimate("AIS (10000 runs x 1000 temperatures)", where) is None
    assert eval_times.duration(10000.0) == "~2.8 h" and eval_times.duration(0.2) == "~1 s"
    (tmp_path / eval_times.FILE).write_text("{torn")  # an unreadable store is an empty one
    assert eval_times.estimate(full, where) is None


def test_the_summary_gives_training_and_evaluation_time_apart(tmp_path):
    final = {"status": "completed", "epoch": 2, "train_time_s": 61.25, "eval_time_s": 1830.0}
    lines = run_summary(tmp_path, final).splitlines()
    assert lines[-1] == "  wall time: training 61.2 s, evaluation 30.5 min"


RBM_RUN = [
    "experiment=rbm_cdk",
    *SMALL,
    "dataset.test_subset=200",
    "logger=none",
    "trainer.export_name=null",
    "sampler.steps=30",
    "sample_metrics.fid.n_samples=100",
    "sample_metrics.fid.batch_size=25",
    "sample_metrics.ais.n_runs=4",
    "sample_metrics.ais.schedule_steps=100",
]


@needs_mnist
def test_a_run_with_progress_has_the_numbers_of_a_run_without(
    compose_cfg, tmp_path, at_once, caplog, capsys
):
    caplog.set_level(logging.INFO, logger="dgm_runner")
    quiet = train(compose_cfg(*RBM_RUN, "trainer.progress=false"), tmp_path / "quiet")
    assert not any("%" in line for line in _lines(caplog))
    caplog.clear()
    shown = train(compose_cfg(*RBM_RUN, "trainer.progress=true"), tmp_path / "shown")
    lines = _lines(caplog)
    metrics = {k for k in quiet if k.startswith(("test/", "train/"))}
    assert "test/fid" in metrics and "test/log_likelihood_ais" in metrics
    assert {k: shown[k] for k in metrics} == {k: quiet[k] for k in metrics}
    # the quiet run timed the same steps on this machine: the plan says roughly how long
    plan = re.compile(
        r"final evaluation \(~\d+ s\): test metrics \(200 images\) ~\d+ s, FID \(100 samples, "
        r"gibbs 30 sweeps\) ~\d+ s, AIS \(4 runs x 101 temperatures\) ~\d+ s"
    )
    assert any(plan.fullmatch(line) for line in lines), [x for x in lines if "final" in x]
    for step in ("epoch 1/1: ", "test metrics: ", "FID samples (gibbs 30 sweeps): ", "AIS ("):
        assert any(line.startswith(step) and "100%" in line for line in lines), step
    assert capsys.readouterr().err == ""  # not a terminal: log lines, no bar
    for final in (quiet, shown):
        assert final["train_time_s"] > 0 and final["eval_time_s"] > 0
    record = json.loads((tmp_path / "shown" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["eval_time_s"] == shown["eval_time_s"]  # one evaluation


BAR_SCRIPT = """
from dgm_runner import progress
progress.DELAY_S = 0.0
with progress.Bar(4, "sized bar", "it") as bar:
    for _ in range(4):
        bar.update()
"""


def test_a_terminal_that_reports_no_size_still_gets_its_bar():
    """A pty of 0 x 0 (``script`` without a terminal on its input, ``docker -t``): tqdm
    alone would hide every bar (found recording ``make run`` for issue 26)."""
    import os
    import pty
    import subprocess
    import sys

    master, slave = pty.openpty()  # a new pty reports 0 columns and 0 rows
    assert os.get_terminal_size(slave) == (0, 0)
    proc = subprocess.Popen(
        [sys.executable, "-c", BAR_SCRIPT], stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the pty
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0
    assert b"sized bar:" in out and b"0/4" in out, out[-500:]
