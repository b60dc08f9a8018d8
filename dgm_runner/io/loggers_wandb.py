"""``logger=wandb``: the run as a Weights & Biases run (extra ``dgm-runner[wandb]``).

What is written where:

* ``<run_dir>/wandb/``: W&B's files; offline (the default) each launch of the run adds an
  ``offline-run-<time>-<id>`` folder (``run-<id>.wandb`` holds the history and summary,
  ``files/media/images/`` the sample grids); upload them later with ``wandb sync
  <run_dir>/wandb/offline-run-*``. ``logger.mode=online`` streams to the W&B server instead
  (after ``wandb login``); offline mode never opens a network connection;
* ``<run_dir>/wandb_run.json``: the run id, so a resumed run (``trainer.resume``, same
  ``run_dir``) continues the same W&B run (``resume="allow"``);
* the run: in ``logger.project`` (``logger.entity``), named after the run directory
  (:func:`dgm_runner.io.loggers.run_name`), grouped by ``logger.group``, else by the sweep
  (:func:`dgm_runner.io.loggers.sweep_group`), else by ``experiment_name``; its config is
  the run's resolved config;
* history: every :meth:`~WandbLogger.scalars` and :meth:`~WandbLogger.image` call at its
  global step; calls at the same step (a train log and the evaluation of an epoch's last
  step) merge into one row; a step below one already logged (only after resuming an online
  run that had logged past its last checkpoint) is dropped by W&B with a warning in its log;
* summary: the final test metrics of a completed run, under their own names;
* the run ends with exit code 0 when it completed (or the logger was closed without an
  error) and 1 after a stop or failure (W&B shows it as failed/crashed).

A W&B run that cannot start (``logger.mode=online`` without ``wandb login``, a file where
``<run_dir>/wandb`` should be) or fails later ends no training: the loop's
:class:`~dgm_runner.io.loggers.GuardedLogger` logs one warning line and disables the logger.

W&B's own console output and stdout capture are off (``silent``, ``console="off"``), so the
training output stays as it is. For ``offline``/``disabled`` the logger also sets W&B's
process-wide mode (``wandb.setup``), since W&B's error-report telemetry reads that one and
would otherwise try to reach its server when the process exits.
"""

from __future__ import annotations

import os
import secrets
import string
from pathlib import Path
from typing import Any, Literal, Optional

import torch

from dgm_runner.io.atomic import write_json
from dgm_runner.io.layout import RunPaths
from dgm_runner.io.loggers import (
    NullLogger,
    closing_outcome,
    grid_to_uint8,
    run_name,
    sweep_group,
)


def new_run_id() -> str:
    """A fresh W&B run id: 8 random lowercase letters and digits (W&B's own format)."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


class WandbLogger(NullLogger):
    """Log the run to Weights & Biases (``logger=wandb``); see the module docstring for what
    goes where.

    Args:
        run_dir, config: set by the runner.
        project: the W&B project.
        entity: the W&B user or team; None: the account's default.
        mode: ``offline`` (files only, synced later with ``wandb sync``), ``online`` or
            ``disabled`` (W&B does nothing).
        group: the run group; None: the sweep root for a sweep job, else ``experiment_name``.

    Raises:
        ConfigError: wandb is not installed (``pip install 'dgm-runner[wandb]'``).
        WriteError: ``wandb_run.json`` could not be written.
        wandb.errors.Error: W&B refused the run (e.g. online without a login).
    """

    name = "wandb"
    requires = ("wandb", "wandb")

    def __init__(
        self,
        run_dir: str | Path | None = None,
        config: dict[str, Any] | None = None,
        project: str = "dgm_runner",
        entity: Optional[str] = None,
        mode: Literal["offline", "online", "disabled"] = "offline",
        group: Optional[str] = None,
    ) -> None:
        super().__init__(run_dir, config)  # ConfigError when wandb is not installed
        import wandb

        stored = self.stored_run(RunPaths.WANDB_RUN)
        run_id = stored["run_id"] if stored else None
        if not run_id:
            run_id = new_run_id()
            write_json(RunPaths(self.run_dir).wandb_run, {"run_id": run_id, "project": project})
        if mode != "online":
            # The process-wide settings too: W&B builds its own error-report telemetry from
            # those, not from init's mode, and would otherwise probe its server at exit.
            wandb.setup(settings=wandb.Settings(mode=mode))
            os.environ.setdefault("WANDB_ERROR_REPORTING", "false")  # no error reports sent
        self.run = wandb.init(
            dir=str(self.run_dir),
            project=project,
            entity=entity,
            config=self.config,
            group=group or sweep_group(self.run_dir) or self.config.get("experiment_name"),
            name=run_name(self.run_dir),
            id=run_id,
            resume="allow",
            mode=mode,
            reinit="create_new",  # its own run object: no global wandb.run is touched
            settings=wandb.Settings(console="off", silent=True),
        )
        self.run_id = run_id
        self._completed = False
        self._closed = False

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Log ``{tag: value}`` at ``step`` (merged with other calls at the same step)."""
        self.run.log({k: float(v) for k, v in values.items()}, step=int(step))

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        """Log the grid as a ``wandb.Image`` under ``tag`` at ``step``."""
        import wandb

        self.run.log({tag: wandb.Image(grid_to_uint8(grid))}, step=int(step))

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """Write the final metrics into the run's summary (the hyper-parameters are in its
        config already)."""
        self.run.summary.update({k: float(v) for k, v in metrics.items()})
        self._completed = True

    def close(self) -> None:
        """Finish the run (exit code 0 when it completed, else 1); a second call does
        nothing."""
        if self._closed:
            return
        self._closed = True
        self.run.finish(exit_code=0 if closing_outcome(self._completed) == "completed" else 1)
