"""Graceful stop on SIGINT / SIGTERM: the loop finishes its step, writes ``last.pt``
and exits with one line (issue 9). A second signal of the same kind aborts at once."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any


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

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested == name:  # pressed twice: give up on the clean stop
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt(f"second {name}: aborting without a checkpoint")
        self.requested = name

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
