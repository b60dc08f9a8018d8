"""The processes a test (or the whole session) started, read from Linux's ``/proc`` (psutil
is no dependency): the tree under a process, whether one is still alive, and the ones that
carry a marker in their environment. A process is named by its PID *and* its start time,
so a PID reused by an unrelated process after ours ended is never taken for ours (nor
killed)."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class Proc:
    """One process as ``/proc/<pid>/stat`` described it when read.

    Attributes:
        pid: its PID.
        ppid: its parent's PID then.
        start: its start time (clock ticks after boot): with ``pid``, one process for good.
        cmdline: its command line, arguments joined by spaces.
    """

    pid: int
    ppid: int
    start: int
    cmdline: str

    def __str__(self) -> str:
        return f"PID {self.pid} (parent {self.ppid}): {self.cmdline[:200]}"


def read(pid: int) -> Proc | None:
    """The live process ``pid``, or None when it is gone or a zombie (it has exited: only
    its exit status waits to be collected)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        cmdline = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after it
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return Proc(pid, int(fields[1]), int(fields[19]), cmdline.replace(b"\0", b" ").decode().strip())


def alive(proc: Proc) -> bool:
    """Whether ``proc`` still runs (the same PID with the same start time, not a zombie)."""
    now = read(proc.pid)
    return now is not None and now.start == proc.start


def processes() -> list[Proc]:
    """Every live process this user can see."""
    found = (read(int(p.name)) for p in PROC.iterdir() if p.name.isdigit())
    return [p for p in found if p is not None]


def descendants(pid: int) -> list[Proc]:
    """The live processes whose parent chain leads to ``pid`` (children, grandchildren...).
    A process whose parent died was re-parented and is no longer found this way."""
    children: dict[int, list[Proc]] = {}
    for p in processes():
        children.setdefault(p.ppid, []).append(p)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return found


def carrying(entry: str) -> list[Proc]:
    """The live processes whose environment holds ``entry`` (``"NAME=value"``): the ones a
    process that set it started, however deep, and even after they were re-parented
    (children inherit the environment). Other users' processes cannot be read: skipped."""
    needle = entry.encode()
    found = []
    for p in processes():
        try:
            env = (PROC / str(p.pid) / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in env:
            found.append(p)
    return found


def still_alive(procs: list[Proc], within_s: float) -> list[Proc]:
    """Those of ``procs`` still running after waiting up to ``within_s`` seconds for all of
    them to end (polled every 0.1 s; returns as soon as none is left)."""
    deadline = time.monotonic() + within_s
    left = [p for p in procs if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if alive(p)]
    return left


def kill(procs: list[Proc]) -> None:
    """SIGKILL those of ``procs`` that still run (checked by start time just before)."""
    for p in procs:
        if alive(p):
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# Helpers the interpreter starts for itself once (multiprocessing's resource tracker and
# forkserver, e.g. after torch.multiprocessing.spawn): they end when their parent ends.
INTERPRETER_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def started_by(root: int, entry: str) -> list[Proc]:
    """The live processes that ``root`` started: its descendants, and those carrying
    ``entry`` in their environment (``root`` set it before starting any, so it also finds
    the ones re-parented after their parent died), less ``root`` itself and its own
    interpreter helpers (:data:`INTERPRETER_HELPERS`, direct children that end with it)."""
    found = {p.pid: p for p in [*descendants(root), *carrying(entry)]}
    return [
        p
        for p in found.values()
        if p.pid != root
        and not (p.ppid == root and any(helper in p.cmdline for helper in INTERPRETER_HELPERS))
    ]
