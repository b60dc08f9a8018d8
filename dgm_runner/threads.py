"""``trainer.num_threads=auto``: a CPU thread count that does not collapse on a shared
machine (issue 26, item 3).

torch's default is one thread per core whatever else runs; with two busy neighbours on 2
cores an RBM epoch then took 6.6-14.5 s against 1.8-2.1 s with one thread (its
synchronising kernels wait for threads that the neighbours hold). ``auto`` counts the cores
other processes kept busy while this one was starting: the machine's CPU time from
``/proc/stat`` less this process's own (``time.process_time``), over the seconds since the
last measurement (at least :data:`MIN_WINDOW_S`), and leaves them out:

    threads = clamp(cores - floor(busy + 0.25), 1, cores)

where ``cores`` is the cores this process may run on (its affinity, at most a limit already
set on torch's threads: ``OMP_NUM_THREADS``, a joblib worker's cores / n_jobs) divided by the
processes of a data-parallel run on this host (``LOCAL_WORLD_SIZE``; their own load is not
subtracted then). ``make bench`` (section ``threads``) measures it against torch's default,
on a quiet machine and beside two busy neighbours.

The thread count changes float rounding (a matrix product splits its sums by thread), so a
run records the count it used (``num_threads`` in ``metrics.json`` and ``last.pt``) and a
resume with ``auto`` keeps it: resumed runs stay bit-identical. Give a number to reproduce
another run exactly.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, Optional

import torch

#: Shortest window the load is measured over; a shorter one is waited out.
MIN_WINDOW_S = 0.2


@dataclass(frozen=True)
class _Sample:
    wall: float  # time.monotonic()
    busy: float  # CPU seconds of every process on the machine (None fields: unknown)
    own: float  # CPU seconds of this process


def _machine_busy_s() -> Optional[float]:
    """CPU seconds all processes spent busy since boot (``/proc/stat``: every field of the
    ``cpu`` line but idle and iowait), or ``None`` without ``/proc/stat``."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _sample() -> Optional[_Sample]:
    busy = _machine_busy_s()
    return None if busy is None else _Sample(time.monotonic(), busy, time.process_time())


_LAST: list[Optional[_Sample]] = [_sample()]  # the previous measurement (import time first)


def others_busy_cores() -> Optional[float]:
    """How many cores other processes kept busy, on average, since the last call (or since
    this module was imported); waits until :data:`MIN_WINDOW_S` has passed. ``None`` where
    ``/proc/stat`` does not exist (not Linux)."""
    last = _LAST[0]
    now = _sample()
    if last is None or now is None:
        return None
    if now.wall - last.wall < MIN_WINDOW_S:
        time.sleep(MIN_WINDOW_S - (now.wall - last.wall))
        now = _sample()
    _LAST[0] = now
    others = (now.busy - last.busy) - (now.own - last.own)
    return max(0.0, others / (now.wall - last.wall))


def usable_cores() -> int:
    """The cores this process may use: those it may run on (its CPU affinity;
    ``os.cpu_count`` elsewhere), at most the limit already set on torch's threads
    (``OMP_NUM_THREADS``, or cores / n_jobs in a joblib worker: ``auto`` never raises it)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, torch.get_num_threads()))


def choose_threads(setting: Any, recorded: Optional[int] = None) -> tuple[int, str]:
    """The thread count for ``trainer.num_threads`` = ``setting`` and why, for the log.

    Args:
        setting: a positive int (used as it is), ``None`` (torch's default) or ``"auto"``;
        recorded: the count a resumed run started with (``auto`` keeps it).

    Returns:
        ``(threads, reason)``, e.g. ``(1, "auto: 2 cores, 1.8 busy with other work")``.
    """
    if setting is None:
        return torch.get_num_threads(), "torch's default"
    if setting != "auto":
        return int(setting), "trainer.num_threads"
    if recorded:
        return int(recorded), "auto: the count this run started with (resumed)"
    cores = usable_cores()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    if local > 1:
        per = max(1, cores // local)
        return per, f"auto: {cores} cores shared by {local} processes"
    busy = others_busy_cores()
    if busy is None:
        return torch.get_num_threads(), "auto: load unknown here, torch's default"
    threads = min(cores, max(1, cores - math.floor(busy + 0.25)))
    return threads, f"auto: {cores} cores, {busy:.1f} busy with other work"
