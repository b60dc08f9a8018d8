"""Progress of every step that can take more than a few seconds, with one bar library (tqdm)
and one convention everywhere (epochs, test metrics, FID sampling, sampler steps, AIS,
bits/dim, ``dgm-eval`` over a sweep, ``dgm-sample``).

* On a terminal (``sys.stderr`` is a TTY): a tqdm bar on stderr, shown once the step has
  run :data:`DELAY_S` seconds and cleared when it ends (``leave=False``); nested steps get
  the next free line (tqdm's own positions), so an outer bar (FID batches) and an inner one
  (Gibbs sweeps of a batch) do not overwrite each other.
* Otherwise (a log file, a pipe, a batch job, pytest's capture): no bar at all, nothing on
  stderr; one ``dgm_runner`` log line each time the step passes another ``every`` percent,
  once it has run :data:`DELAY_S` seconds. Only the outermost step that moves logs (an
  inner step logs when every step around it is a single item), so a sweep of 10 000
  chains x 1000 Gibbs sweeps gives ten lines, not ten thousand.

A bar never touches an RNG or a tensor: results are the same with progress on or off.
``trainer.progress=false`` (and processes other than 0 of a data-parallel run) switch it
off for a whole run (:func:`enabled`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import Any, Iterable, Iterator, Optional, TypeVar

from tqdm import tqdm

log = logging.getLogger("dgm_runner")

T = TypeVar("T")

#: Seconds a step runs before its bar appears (TTY) or its first line is logged (not a TTY).
DELAY_S = 2.0
#: Percent of a step between two log lines when stderr is not a TTY.
EVERY_PERCENT = 10

_ENABLED = [True]  # the innermost :func:`enabled` setting
_ACTIVE: list["Bar"] = []  # the open steps, outermost first


@contextlib.contextmanager
def enabled(flag: bool) -> Iterator[None]:
    """Progress on (``True``) or off inside the block (e.g. ``trainer.progress`` for a run).
    Bars the block left open (a step that raised) are closed at its end."""
    _ENABLED.append(bool(flag))
    depth = len(_ACTIVE)
    try:
        yield
    finally:
        _ENABLED.pop()
        for bar in _ACTIVE[depth:]:
            bar.close()


def is_enabled() -> bool:
    """Whether bars / log lines are currently on."""
    return _ENABLED[-1]


def is_tty() -> bool:
    """Whether stderr is a terminal (bars) rather than a file or a pipe (log lines)."""
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed stream
        return False


def _width() -> dict[str, Any]:
    """tqdm's size arguments: follow the terminal's width, or 80 x 24 where the terminal
    reports none (a pty without a size, e.g. ``script`` or ``docker -t`` without a
    terminal on its input: tqdm would hide every bar behind a height of 0 rows)."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):  # no descriptor (a test's fake stream)
        return {"dynamic_ncols": True}
    return {"dynamic_ncols": True} if min(size) > 0 else {"ncols": 80, "nrows": 24}


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class Bar:
    """One step of ``total`` items (``unit``), described by ``desc``; use as a context
    manager (closed, and its bar cleared, even when the step raises) and call
    :meth:`update` as items are done.

    Args:
        total: items of the step (0 or less: nothing is shown).
        desc: what runs, e.g. ``"FID samples (gibbs 1000 sweeps)"``.
        unit: the items' name (``"sweep"``, ``"batch"``, ...).
        every: percent between two log lines (not a TTY).
        show: ``False`` switches this step off (e.g. on processes other than 0).
        initial: items already done (a resumed epoch).
    """

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "it",
        every: float = EVERY_PERCENT,
        show: bool = True,
        initial: int = 0,
    ) -> None:
        self.total, self.desc, self.unit, self.every = int(total), desc, unit, every
        self.n = initial
        self.start = time.monotonic()
        self.postfix = ""
        self._bar: Optional[tqdm] = None
        self._logs = False
        self._next = self.total + 1  # the item count of the next log line
        on = show and is_enabled() and self.total > 0
        if on and is_tty():
            self._bar = tqdm(
                total=self.total,
                desc=desc,
                unit=unit,
                leave=False,
                **_width(),
                delay=DELAY_S,
                initial=initial,
                file=sys.stderr,
            )
        elif on and all(p.total <= 1 for p in _ACTIVE):
            self._logs = True
            self._next = self._threshold(1)
        if on:
            _ACTIVE.append(self)

    def _threshold(self, k: int) -> int:
        """Items done at the ``k``-th multiple of ``every`` percent (at least 1)."""
        return max(1, -(-int(k * self.every * self.total) // 100))

    def update(self, n: int = 1) -> None:
        """``n`` more items done."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._logs and self.n >= self._next:
            self._log()

    def wrap(self, items: Iterable[T]) -> Iterator[T]:
        """``items`` one by one, one :meth:`update` after each; the bar is closed at the end
        (or when the loop is left by an exception)."""
        try:
            for item in items:
                yield item
                self.update()
        finally:
            self.close()

    def set_postfix(self, values: dict[str, Any]) -> None:
        """Values shown after the bar (e.g. the running loss), and in the log lines."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)

    def _log(self) -> None:
        done = min(self.n, self.total)
        percent = 100.0 * done / self.total
        k = int(percent // self.every) + 1
        self._next = self._threshold(k) if done < self.total else self.total + 1
        elapsed = time.monotonic() - self.start
        if elapsed < DELAY_S:
            return
        left = ""
        if done < self.total:
            left = f", ~{_duration(elapsed * (self.total - done) / done)} left"
        log.info(
            "%s: %.0f%% (%d/%d %s), %s%s%s",
            self.desc,
            percent,
            done,
            self.total,
            self.unit,
            _duration(elapsed),
            left,
            f"; {self.postfix}" if self.postfix else "",
        )

    def close(self) -> None:
        """End the step: its bar is cleared (a TTY)."""
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._logs = False
        self._next = self.total + 1

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def track(
    items: Iterable[T],
    desc: str,
    total: Optional[int] = None,
    unit: str = "it",
    every: float = EVERY_PERCENT,
    show: bool = True,
) -> Iterator[T]:
    """``items`` one by one, with a :class:`Bar` of ``total`` (default ``len(items)``)."""
    if total is None:
        total = len(items)  # type: ignore[arg-type]
    yield from Bar(total, desc, unit, every, show).wrap(items)
