"""Sample metrics for tests of what happens around evaluation (config targets
``tests.components.<name>``, usable from a subprocess started in the repository root)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from dgm_runner.objectives.dsm import DiffusionDSM
from dgm_runner.objectives.elbo import ELBO
from dgm_runner.objectives.flow import FlowNLL
from dgm_runner.samplers.base import Sampler


def slow_metric(
    model: Any,
    sampler: Any,
    data: Any,
    seed: int,
    final: bool,
    seconds: float = 30.0,
    marker: str = "",
) -> dict[str, float]:
    """Write this process's PID to ``marker`` (when given), then wait ``seconds``: a long
    evaluation (AIS, FID) to stop, kill or lock against. Returns ``{"slow": 0.0}``."""
    if marker:
        Path(marker).write_text(str(os.getpid()))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.02)
    return {"slow": 0.0}


def failing_metric(model: Any, sampler: Any, data: Any, seed: int, final: bool) -> dict[str, float]:
    """A metric with a bug (not one of the user's errors): raises RuntimeError."""
    raise RuntimeError("boom: a bug inside a metric")


def self_signal_metric(
    model: Any, sampler: Any, data: Any, seed: int, final: bool, signame: str = "SIGTERM"
) -> dict[str, float]:
    """Send ``signame`` to this very process, then wait up to 10 s for it to act: a stop
    arriving in the middle of an evaluation, deterministically, in-process."""
    os.kill(os.getpid(), getattr(signal, signame))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return {"not_interrupted": 1.0}


def _signal_if_asked(step: int) -> None:
    """SIGTERM to this process when ``$DGM_TEST_SIGNAL_AT`` is ``"<$RANK>:<step>"``."""
    at = os.environ.get("DGM_TEST_SIGNAL_AT", "")
    if at and at == f"{os.environ.get('RANK', '0')}:{step}":
        os.kill(os.getpid(), signal.SIGTERM)


class SignallingELBO(ELBO):
    """The ELBO, plus a stop signal to this process before training step ``step`` when
    ``$DGM_TEST_SIGNAL_AT`` is ``"<rank>:<step>"`` and ``$RANK`` is that rank: a SIGTERM that
    reaches one process of a data-parallel run in the middle of an epoch, deterministically.
    Without the variable it is the ELBO (so runs with and without the signal share a config
    and resume one another)."""

    def steps(self, model, batch, step):
        _signal_if_asked(step)
        yield from super().steps(model, batch, step)


class SignallingDSM(DiffusionDSM):
    """A diffusion model's denoising objective (``objective=edm``, ``ddpm``, ``dsm``) with
    the stop signal of :class:`SignallingELBO`; without the variable it is the objective."""

    def steps(self, model, batch, step):
        _signal_if_asked(step)
        yield from super().steps(model, batch, step)


class SignallingFlowNLL(FlowNLL):
    """``objective=flow_nll`` with the stop signal of :class:`SignallingELBO` (a SIGTERM before
    training step ``step`` when ``$DGM_TEST_SIGNAL_AT`` is ``"<rank>:<step>"``); without the
    variable it is the flows' objective."""

    def steps(self, model, batch, step):
        _signal_if_asked(step)
        yield from super().steps(model, batch, step)


class ReplaySampler(Sampler):
    """Returns the given ``(N, ...)`` images in order, ``n`` at a time: a "model" whose samples
    are known (tests: a FID of the test split against itself, or of chosen images)."""

    def __init__(self, images):
        self.images, self.pos = images, 0

    def sample(self, model, n, generator):
        out = self.images[self.pos : self.pos + n]
        self.pos += n
        return out
