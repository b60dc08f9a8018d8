"""Graceful stop on SIGINT / SIGTERM / SIGHUP (a closed terminal or SSH session ends a run
the way ``kill`` does): the loop finishes its step, writes ``last.pt`` and exits with one
line. A second signal of the same kind aborts at once.

Outside the optimiser steps (evaluation, figures, exports) nothing needs finishing: inside
:meth:`GracefulStop.interruptible` a signal raises :class:`StopRequested` at once, with the
same one-line message, and ``trainer.resume`` redoes only what is missing.

:func:`watch_parent` covers the sweep workers of Hydra's joblib launcher: when the driver
dies (SIGTERM, SIGKILL), a loky worker is re-parented; the watchdog then sends SIGTERM to
its own process, so the job stops as after a signal (``last.pt`` with the position)
instead of training on, unobserved, for minutes, and once the job has returned it ends the
worker process, which loky would otherwise keep waiting for work that never comes.
:class:`WorkersEndWithDriver` starts that watch in every worker as it starts, so idle
workers (``n_jobs`` above the number of jobs) end too, and with them loky's resource tracker.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any, Iterator

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class StopRequested(RuntimeError):
    """Raised by the loop after it saved ``last.pt`` because a stop signal arrived."""


class GracefulStop:
    """Context manager that turns SIGINT/SIGTERM/SIGHUP into a flag (:attr:`requested`) the loop
    polls after each optimiser step; the previous handlers come back on exit. Outside
    the main thread (where Python cannot install handlers) it does nothing.

    Attributes:
        requested: the name of the first signal received (``"SIGTERM"``), or None.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

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


class ParentWatch:
    """A daemon thread that ends this process once its parent is no longer ``parent_pid``
    (the parent died and the process was re-parented), started by :func:`watch_parent`.

    For sweep workers: Hydra's joblib launcher runs jobs in loky worker processes whose
    parent is the driver. Nothing in loky or joblib ends a worker whose parent is gone: it
    waits for its next task (an idle one for ``idle_worker_timeout``, 300 s, before it even
    tries to leave; two that had run jobs were found alive 25 minutes later, ~1 GB each,
    issue 25), and loky's resource tracker waits for all of them (it ends at EOF on a pipe
    every worker holds). So, once the parent is gone: a job running in :meth:`job` gets one
    SIGTERM and stops the way a signal stops it (the loop saves ``last.pt`` with its
    position); when no job runs any more, the process flushes its logs and ends with
    ``os._exit`` (the main thread is inside loky's loop, where no exception would reach).
    Polling ``os.getppid()`` rather than ``prctl(PR_SET_PDEATHSIG)``: the latter fires when
    the *thread* that forked the worker ends (loky may fork from a helper thread) and exists
    on Linux only; polling costs one system call per ``interval_s``.

    Attributes:
        parent_pid: the PID of the process whose death ends this one.
    """

    def __init__(self, parent_pid: int, interval_s: float = 1.0) -> None:
        self.parent_pid = parent_pid
        self._interval_s = interval_s
        self._no_new_jobs = threading.Lock()  # taken for good once the parent is gone
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._watch, name="dgm-parent-watch", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def job(self) -> Iterator[None]:
        """A job of this worker: the parent's death stops it with SIGTERM and ends the
        process when the block is left; a job entered after the death never starts."""
        with self._no_new_jobs:
            self._idle.clear()
        try:
            yield
        finally:
            self._idle.set()

    def _watch(self) -> None:
        while os.getppid() == self.parent_pid:
            time.sleep(self._interval_s)
        self._no_new_jobs.acquire()
        if not self._idle.is_set():
            os.kill(os.getpid(), signal.SIGTERM)
            self._idle.wait()
        logging.shutdown()  # flush train.log and the job's other handlers
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(128 + signal.SIGTERM)  # the status of a process that SIGTERM ended


_WATCHES: dict[int, ParentWatch] = {}


def watch_parent(parent_pid: int, interval_s: float = 1.0) -> ParentWatch | None:
    """The :class:`ParentWatch` of ``parent_pid`` in this process, started on the first call
    (one thread per process and parent, whatever the number of jobs the worker runs), or
    None when ``parent_pid`` is not this process's parent at that first call: a process
    that merely inherited the driver's PID in its environment (a submitit job on a cluster
    node) is no worker of it and is left alone. A loky worker is watched from its start
    (:class:`WorkersEndWithDriver`), so a driver that dies before a job starts is noticed.

    Args:
        parent_pid: the PID of the process whose death should end this one.
        interval_s: polling period, seconds: the parent's death is noticed within it.

    Returns:
        The watch (run each job inside its :meth:`ParentWatch.job`), or None.
    """
    if parent_pid not in _WATCHES and os.getppid() == parent_pid:
        _WATCHES[parent_pid] = ParentWatch(parent_pid, interval_s)
    return _WATCHES.get(parent_pid)


class WorkersEndWithDriver(Callback):
    """Registered in ``configs/train.yaml`` under ``hydra.callbacks``: every loky worker of a
    joblib sweep watches this driver from its start (:func:`watch_parent`), so none outlives
    a killed driver, not even one that never got a job (loky starts ``n_jobs`` workers at
    once; an idle one would wait ``idle_worker_timeout``, 300 s). Loky's resource tracker
    then ends by itself (at EOF, once no worker holds its pipe): measured, every process of
    a SIGKILLed driver was gone within 1.1 s.

    How: loky's executor runs an ``initializer`` in each worker before its first task, but
    Hydra's joblib launcher passes ``backend="loky"`` and no initializer to
    ``joblib.Parallel``; so, in the driver only, ``"loky"`` is registered again
    (``joblib.register_parallel_backend``, public though marked experimental) as the same
    backend with that initializer. No joblib or loky option ends workers with their parent.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Before the sweep launches anything: if its launcher is joblib's, register the
        ``"loky"`` backend whose workers watch this process (once per process)."""
        launcher = str(config.hydra.launcher.get("_target_", ""))
        if "joblib" not in launcher:
            return
        try:
            from joblib import parallel

            loky = parallel.BACKENDS["loky"]
            register = parallel.register_parallel_backend
        except (ImportError, AttributeError, KeyError) as err:  # a joblib that changed these
            logging.getLogger("dgm_runner").warning(
                "idle joblib workers will not end with this process: %r", err
            )
            return
        if isinstance(loky, functools.partial) and loky.keywords.get("initializer") is watch_parent:
            return  # registered by an earlier multirun of this process
        register("loky", functools.partial(loky, initializer=watch_parent, initargs=(os.getpid(),)))
