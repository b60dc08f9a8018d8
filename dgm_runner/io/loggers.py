"""Experiment loggers (see ``configs/logger``): TensorBoard, MLflow, Weights & Biases or nothing.

The loop builds one per run as ``instantiate(cfg.logger, run_dir=run_dir, config=config)``
(``config``: the run's resolved config as a plain dict) and calls :meth:`NullLogger.scalars`
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
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dgm_runner.config import ConfigError
from dgm_runner.io.atomic import read_json


class NullLogger:
    """A logger that records nothing (``logger=none``)."""

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
        resumed run's id), or None when nothing usable is there.

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

    def __init__(
        self,
        run_dir: str | Path | None = None,
        config: dict[str, Any] | None = None,
        flush_secs: int = 30,
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter

        super().__init__(run_dir, config)
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tb"), flush_secs=flush_secs)

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
