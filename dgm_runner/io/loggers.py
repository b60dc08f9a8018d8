"""Experiment loggers (see ``configs/logger``): TensorBoard or nothing.

The loop builds one per run as ``instantiate(cfg.logger, run_dir=run_dir, config=config)``
(``config``: the run's resolved config as a plain dict) and calls :meth:`NullLogger.scalars`
after every ``trainer.log_every`` steps and evaluation, :meth:`NullLogger.image` with each
evaluation's 8x8 grid, :meth:`NullLogger.hparams` once with the final test metrics, and
:meth:`NullLogger.close` at the end (also after a failure or a stop).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class NullLogger:
    """A logger that records nothing (``logger=none``)."""

    def __init__(self, run_dir: str | Path | None = None, config: dict[str, Any] | None = None):
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.config = config or {}

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
