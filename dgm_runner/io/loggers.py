"""Experiment loggers (see ``configs/logger``): TensorBoard, MLflow, Weights & Biases or nothing.

The loop builds one per run (process 0) with :func:`start_logger`, i.e.
``instantiate(cfg.logger, run_dir=run_dir, config=config)`` (``config``: the run's resolved
config as a plain dict) guarded by :class:`GuardedLogger`, and calls :meth:`NullLogger.scalars`
after every ``trainer.log_every`` steps and evaluation, :meth:`NullLogger.image` with each
evaluation's 8x8 grid, :meth:`NullLogger.hparams` once with the final test metrics of a
completed run, and :meth:`NullLogger.close` at the end (also after a failure or a stop). A
resumed run (``trainer.resume``) builds a new logger on the same ``run_dir``.

* ``logger=none``: :class:`NullLogger`; ``logger=tensorboard`` (the default):
  :class:`TensorBoardLogger`, event files in ``<run_dir>/tb``.
* ``logger=mlflow``: :class:`dgm_runner.io.loggers_mlflow.MLflowLogger` (extra
  ``dgm-runner[mlflow]``), a run of an MLflow experiment, by default in ``./mlruns``.
* ``logger=wandb``: :class:`dgm_runner.io.loggers_wandb.WandbLogger` (extra
  ``dgm-runner[wandb]``), offline by default, files in ``<run_dir>/wandb``.

The MLflow and W&B loggers keep their run id in ``<run_dir>/mlflow_run.json`` /
``<run_dir>/wandb_run.json``, so a resumed run appends to the same tracked run, and name
runs after their directory (:func:`run_name`); the jobs of one sweep share a group
(:func:`sweep_group`).

A logger never ends a run: the loop starts it with :func:`start_logger`, which wraps it in
a :class:`GuardedLogger`. Any exception of the logger, when it starts (a store that cannot
be written or reached, W&B online without a login, a file where ``<run_dir>/wandb``
should be) or later (a store that turns read-only, a full disk), is one warning line
``logger <name> disabled after <call> failed: <error>; training goes on (...)``, and the
rest of the run logs nothing there (its results are in the run directory as always). A
failing ``close`` is one warning line too and never hides the error that ended the run.
Stop signals are not logger failures: they pass through as the run's own stop.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dgm_runner.config import ConfigError
from dgm_runner.io.atomic import exception_in_chain, read_json
from dgm_runner.io.layout import RunPaths

log = logging.getLogger("dgm_runner")


class NullLogger:
    """A logger that records nothing (``logger=none``)."""

    #: The name warnings use (``logger=<name>``); other loggers: their class name.
    name = "none"
    #: ``(module, extra)``: the package a logger needs and the extra that installs it.
    requires: tuple[str, str] | None = None

    @classmethod
    def check_available(cls) -> None:
        """Check, before a run does any work, that the package this logger needs is
        installed (the loop calls it right after validating the config).

        Raises:
            ConfigError: it is not; the message names the extra to install.
        """
        if cls.requires is None:
            return
        module, extra = cls.requires
        if importlib.util.find_spec(module) is None:
            raise ConfigError(missing_extra(module, extra))

    def __init__(self, run_dir: str | Path | None = None, config: dict[str, Any] | None = None):
        self.check_available()  # ConfigError naming the extra when the package is missing
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.config = config or {}

    def stored_run(self, run_file: str) -> dict[str, Any] | None:
        """For a logger that tracks the run elsewhere (MLflow, W&B): create the run
        directory and return what ``<run_dir>/<run_file>`` recorded of the tracked run (a
        resumed run's id), or None when nothing usable is there. ``run_file``: one of
        :attr:`RunPaths.TRACKER_FILES` (``RunPaths.MLFLOW_RUN``, ``RunPaths.WANDB_RUN``).

        Raises:
            ConfigError: the logger was built without a run directory.
        """
        if self.run_dir is None:
            raise ConfigError(f"{type(self).__name__} needs a run directory")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        stored = read_json(self.run_dir / run_file)
        return stored if isinstance(stored, dict) and stored.get("run_id") else None

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Log ``{tag: value}`` at global step ``step``."""

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        """Log a ``(C, H, W)`` image in [0, 1]."""

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """Log the run's hyper-parameters with its final metrics."""

    def close(self) -> None:
        """Flush and release files."""


class TensorBoardLogger(NullLogger):
    """TensorBoard event files in ``<run_dir>/tb`` via ``torch.utils.tensorboard``.

    Args:
        run_dir, config: set by the runner.
        flush_secs: how often pending events are written.
    """

    name = "tensorboard"

    def __init__(
        self,
        run_dir: str | Path | None = None,
        config: dict[str, Any] | None = None,
        flush_secs: int = 30,
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter

        super().__init__(run_dir, config)
        self.writer = SummaryWriter(log_dir=str(RunPaths(run_dir).tb), flush_secs=flush_secs)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        self.writer.add_image(tag, grid, step)

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        clean = {
            k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()
        }
        self.writer.add_hparams(clean, {f"hparam/{k}": v for k, v in metrics.items()}, run_name=".")

    def close(self) -> None:
        self.writer.close()


def missing_extra(module: str, extra: str) -> str:
    """The one-line error for a logger whose package is not installed."""
    return f"logger={extra} needs the {module} package: pip install 'dgm-runner[{extra}]'"


def sweep_group(run_dir: str | Path) -> str | None:
    """The sweep a job's run directory belongs to, or None for a plain run.

    A Hydra multirun job runs in ``outputs/multirun/<experiment_name>/<time>/<job_num>``;
    its group is the sweep root as named under the outputs folder,
    ``"multirun/<experiment_name>/<time>"`` (the same for every job of the sweep, and short
    enough for W&B's 128-character groups).
    """
    run_dir = Path(run_dir).resolve()
    if run_dir.parent.parent.parent.name == "multirun":
        return "/".join(run_dir.parent.parts[-3:])
    return None


def run_name(run_dir: str | Path) -> str:
    """A run's display name: its directory as named under the outputs folder,
    ``"<experiment_name>/<time>"``, or ``"multirun/<experiment_name>/<time>/<job_num>"`` for
    a sweep job (:func:`sweep_group`)."""
    run_dir = Path(run_dir).resolve()
    return "/".join(run_dir.parts[-4 if sweep_group(run_dir) else -2 :])


def grid_to_uint8(grid: torch.Tensor) -> np.ndarray:
    """A ``(C, H, W)`` image in [0, 1] as a ``uint8`` array, ``(H, W, C)``, or ``(H, W)`` for
    one channel (what PIL, MLflow and W&B take)."""
    g = grid.detach().float().cpu().clamp(0, 1).mul(255).round().to(torch.uint8)
    if g.ndim == 3:
        g = g[0] if g.shape[0] == 1 else g.permute(1, 2, 0)
    return g.contiguous().numpy()


def closing_outcome(completed: bool) -> str:
    """How a run that :meth:`NullLogger.close` ends went: ``"completed"`` (``hparams`` was
    called, or no exception is propagating), ``"stopped"`` (a stop signal or Ctrl-C is
    propagating) or ``"failed"`` (another exception is). The loop calls ``close`` in a
    ``finally`` block, where the propagating exception is still visible."""
    from dgm_runner.io.signals import StopRequested

    err = sys.exc_info()[1]
    if completed or err is None:
        return "completed"
    return "stopped" if isinstance(err, (StopRequested, KeyboardInterrupt)) else "failed"


def _stop_in(err: BaseException) -> BaseException | None:
    """The stop signal (:class:`~dgm_runner.io.signals.StopRequested`, KeyboardInterrupt)
    that caused ``err``, or None: a library that catches every exception (MLflow turns one
    raised inside its HTTP retries into an ``MlflowException``) must not swallow a stop."""
    from dgm_runner.io.signals import StopRequested

    return exception_in_chain(err, (StopRequested, KeyboardInterrupt))


def failure_line(name: str, call: str, err: BaseException) -> str:
    """The one warning line for logger ``name`` whose ``call`` (``start``, ``scalars``,
    ``image``, ``hparams``, ``close``) raised ``err``."""
    first = (str(err).strip().splitlines() or [""])[0]
    first = first if len(first) <= 500 else f"{first[:500]}..."  # MLflow's are long
    error = f"{type(err).__name__}: {first}" if first else type(err).__name__
    if call == "close":
        return f"logger {name}: close failed: {error} (the run's results are in the run directory)"
    return (
        f"logger {name} disabled after {call} failed: {error}; training goes on "
        "(results are in the run directory)"
    )


class GuardedLogger:
    """The run's logger as the loop uses it: a logger failure never ends the run.

    Every call (``scalars``, ``image``, ``hparams``, ``close``) goes to the wrapped logger;
    when one raises an :class:`Exception`, one warning line (:func:`failure_line`) is
    logged, the traceback at DEBUG level, and the logger is replaced by a
    :class:`NullLogger` for the rest of the run (nothing more is sent to a broken store,
    and the failed logger is not closed). A stop signal (also one that a library wrapped
    in its own exception) is raised as itself; KeyboardInterrupt is no Exception and
    passes through anyway. Other attributes are read from the wrapped logger.

    Args:
        logger: the logger to guard; name: how warnings name it (``mlflow``).
    """

    def __init__(self, logger: Any, name: str) -> None:
        self.logger = logger
        self.name = name
        #: The call that failed and disabled the logger (``"scalars"``), or None.
        self.failed: str | None = None

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.__dict__["logger"], attr)

    def fail(self, call: str, err: Exception) -> None:
        """Disable the logger after ``call`` raised ``err``, with one warning line.

        Raises:
            StopRequested, KeyboardInterrupt: ``err`` was caused by a stop signal.
        """
        stop = _stop_in(err)
        if stop is not None:
            raise stop from None
        log.warning(failure_line(self.name, call, err))
        log.debug("logger %s: %s failed", self.name, call, exc_info=err)
        self.logger, self.failed = NullLogger(), call

    def _call(self, call: str, *args: Any) -> None:
        try:
            getattr(self.logger, call)(*args)
        except Exception as err:  # noqa: BLE001 - any logger failure: warn and go on
            self.fail(call, err)

    def scalars(self, values: dict[str, float], step: int) -> None:
        """:meth:`NullLogger.scalars` of the wrapped logger, guarded."""
        self._call("scalars", values, step)

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        """:meth:`NullLogger.image` of the wrapped logger, guarded."""
        self._call("image", tag, grid, step)

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """:meth:`NullLogger.hparams` of the wrapped logger, guarded."""
        self._call("hparams", params, metrics)

    def close(self) -> None:
        """:meth:`NullLogger.close` of the wrapped logger, guarded: called in the loop's
        ``finally``, a failure here is one warning line and the error that ended the run
        (if any) goes on propagating."""
        self._call("close")


def start_logger(logger_cfg: Any, run_dir: str | Path, config: dict[str, Any]) -> GuardedLogger:
    """Build the run's logger from its config node (``cfg.logger``) as a
    :class:`GuardedLogger`; a logger that fails to start (an unwritable or unreachable
    store, W&B online without a login, ...) gives one warning line and a disabled logger,
    and the run goes on.

    Raises:
        StopRequested, KeyboardInterrupt: a stop signal arrived while it started.
        hydra.errors.InstantiationException: the node names no loadable class (a config
            error, found by :func:`dgm_runner.config.validate` before any work).
    """
    from hydra.utils import instantiate

    factory = instantiate(logger_cfg, _partial_=True)
    cls = getattr(factory, "func", factory)
    name = getattr(cls, "name", None)
    guarded = GuardedLogger(NullLogger(), name if isinstance(name, str) else cls.__name__)
    try:
        guarded.logger = factory(run_dir=run_dir, config=config)
    except Exception as err:  # noqa: BLE001 - any start failure: warn and go on
        guarded.fail("start", err)
    return guarded
