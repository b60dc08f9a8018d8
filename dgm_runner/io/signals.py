"""Graceful stop on SIGINT / SIGTERM: the loop finishes its step, writes ``last.pt``
and exits with one line. A second signal of the same kind aborts at once.

Outside the optimiser steps (evaluation, figures, exports) nothing needs finishing: inside
:meth:`GracefulStop.interruptible` a signal raises :class:`StopRequested` at once, with the
same one-line message, and ``trainer.resume`` redoes only what is missing.

:func:`watch_parent` covers the sweep workers of Hydra's joblib launcher: when the driver
dies (SIGTERM, SIGKILL), a loky worker is re-parented; the watchdog then sends SIGTERM to
its own process, so the job stops as after a signal (``last.pt`` with the position)
instead of training on, unobserved, for minutes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import FrameType
from typing import Any, Iterator


class StopRequested(RuntimeError):
    """Raised by the loop after it saved ``last.pt`` because a stop signal arrived."""


class GracefulStop:
    """Context manager that turns SIGINT/SIGTERM into a flag (:attr:`requested`) the loop
    polls after each optimiser step; the previous handlers come back on exit. Outside
    the main thread (where Python cannot install handlers) it does nothing.

    Attributes:
        requested: the name of the first signal received (``"SIGTERM"``), or None.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}
        self._during: str | None = None  # inside interruptible(): what is running

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested == name:  # pressed twice: give up on the clean stop
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt(f"second {name}: aborting without a checkpoint")
        self.requested = name
        if self._during is not None:
            during, self._during = self._during, None
            raise StopRequested(f"{name} received during {during}")

    @contextlib.contextmanager
    def interruptible(self, what: str) -> Iterator[None]:
        """A block that a stop signal interrupts at once (evaluation, figures): raises
        :class:`StopRequested` ``"<SIGNAL> received during <what>"`` from wherever the block
        is, or on entry if a signal arrived before it. Only for blocks whose writes are
        atomic (a half-done block leaves nothing torn).

        Args:
            what: what the block does, for the message (``"the evaluation of epoch 3"``).

        Raises:
            StopRequested: a stop signal arrived before or inside the block.
        """
        if self.requested:
            raise StopRequested(f"{self.requested} received before {what}")
        self._during = what
        try:
            yield
        finally:
            self._during = None

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


_WATCHERS: dict[int, threading.Thread] = {}


def watch_parent(parent_pid: int, interval_s: float = 1.0) -> threading.Thread:
    """Start (once per process and parent) a daemon thread that sends one SIGTERM to this
    process once its parent is no longer ``parent_pid`` (the parent died and the process
    was re-parented).

    For sweep workers (Hydra's joblib launcher runs jobs in loky worker processes whose
    parent is the driver): a killed driver then stops its workers' jobs the way a signal
    does (the loop saves ``last.pt`` with its position and exits), within ``interval_s``
    seconds plus one optimiser step.

    Args:
        parent_pid: the PID of the process whose death should stop this one.
        interval_s: polling period, seconds.

    Returns:
        The started thread.
    """

    def poll() -> None:
        while os.getppid() == parent_pid:
            threading.Event().wait(interval_s)
        os.kill(os.getpid(), signal.SIGTERM)

    if parent_pid not in _WATCHERS:
        _WATCHERS[parent_pid] = threading.Thread(target=poll, name="dgm-parent-watch", daemon=True)
        _WATCHERS[parent_pid].start()
    return _WATCHERS[parent_pid]
