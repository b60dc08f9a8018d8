"""The mid-epoch resume check shared by the tests of several families: a run stopped by
SIGTERM inside an epoch and resumed must end with the uninterrupted run's parameters,
buffers and metrics to the last bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dgm_runner.io.checkpoint import load_checkpoint
from dgm_runner.io.signals import StopRequested
from dgm_runner.loop import train
from dgm_runner.testing import compose_train

#: final-metric keys that are wall-clock times, left out of the comparison
WALL_CLOCK = ("time_per_epoch_s", "train_time_s", "eval_time_s", "finished")


def assert_resume_is_bit_exact(
    tmp_path: Path, monkeypatch, overrides: list[str], signal_at: str = "0:6"
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Train ``overrides`` straight through, then again stopped by SIGTERM before step
    ``signal_at`` (``RANK:STEP``, tests/components.py) and resumed; assert the stop left a
    mid-epoch checkpoint and that the resumed run's final metrics (wall-clock times aside)
    and every entry of its model ``state_dict`` equal the straight run's.

    Returns:
        ``(final metrics, model state_dict)`` of the straight run, for further checks.
    """
    straight = train(compose_train(overrides), tmp_path / "straight")
    cut = tmp_path / "cut"
    monkeypatch.setenv("DGM_TEST_SIGNAL_AT", signal_at)
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(StopRequested):
        train(compose_train(overrides), cut)
    partial = load_checkpoint(cut / "checkpoints" / "last.pt")["partial"]
    assert partial is not None and partial["batch"] > 0
    monkeypatch.delenv("DGM_TEST_SIGNAL_AT")
    resumed = train(compose_train([*overrides, f"trainer.resume={cut}"]), cut)
    assert {k: v for k, v in resumed.items() if k not in WALL_CLOCK} == {
        k: v for k, v in straight.items() if k not in WALL_CLOCK
    }
    a = load_checkpoint(cut / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b)
    return straight, b
