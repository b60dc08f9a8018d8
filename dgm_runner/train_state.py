"""Everything a run needs to continue: :class:`TrainState` (weights, optimisers, objective
state, EMA, data RNG, counters, the position inside an interrupted epoch), written to and
read from ``checkpoints/last.pt`` by one symmetric pair, ``state_dict`` / ``load_state_dict``."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from dgm_runner.io.checkpoint import CheckpointError, capture_rng, restore_rng
from dgm_runner.lr_schedules import Constant, LRSchedule

log = logging.getLogger("dgm_runner")

#: Keys ``last.pt`` must hold to be resumed.
RESUME_PAYLOAD = ("model", "objective", "epoch", "step", "best", "metrics", "rng", "config")
#: Entries of an optimiser's ``param_groups`` that say how it runs, not what it computes
#: (``trainer.optimizer_impl`` and torch's own flags): a resume applies them as configured
#: without logging them. Every other entry that changed (``optimizer.lr``, ``betas``, ...)
#: is logged; the optimiser class itself cannot change (:func:`dgm_runner.io.resume.check_resume`).
IMPLEMENTATION_FLAGS = frozenset({"foreach", "fused", "capturable", "differentiable"})


@dataclass
class Progress:
    """Where a run stands, besides its tensors.

    ``epoch``: epochs whose training finished; ``step``: optimiser updates (batches) so far;
    ``best``: the lowest monitored test metric; ``evaluated``: the last epoch whose test
    metrics (``metrics``) and grid were written (``last.pt`` is saved once an epoch's
    training ends, and again after its evaluation); ``train_means``: the train terms of
    epoch ``epoch``; ``epoch_times``: seconds per trained epoch, over every launch.
    """

    epoch: int = 0
    step: int = 0
    best: float = math.inf
    evaluated: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    train_means: dict[str, float] = field(default_factory=dict)
    epoch_times: list[float] = field(default_factory=list)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> "Progress":
        """Checkpoints written before training and evaluation were saved apart hold no
        ``evaluated`` (they were written after the evaluation: ``evaluated = epoch``)."""
        return cls(
            epoch=ckpt["epoch"],
            step=ckpt["step"],
            best=ckpt["best"],
            evaluated=ckpt.get("evaluated", ckpt["epoch"]),
            metrics=ckpt["metrics"],
            train_means=ckpt.get("train_means") or {},
            epoch_times=list(ckpt.get("epoch_times") or []),
        )


@dataclass
class TrainState:
    """The mutable state of one run.

    Attributes:
        model: the trained module; optimizers: one per parameter group of the objective;
        objective: the objective (its own state, e.g. PCD chains, is checkpointed);
        ema: an ``AveragedModel`` of the weights, or None; data_gen: the generator of the
        epoch permutations; progress: counters and metrics; partial: the position inside
        an epoch a signal stopped (``{"epoch", "batch", "perm", "in_window", "window",
        "epoch_terms"}``), or None; lr_schedule: the factor of ``optimizer.lr`` per epoch
        (:mod:`dgm_runner.lr_schedules`; a function of the epoch, nothing to checkpoint).
    """

    model: torch.nn.Module
    optimizers: dict[str, torch.optim.Optimizer]
    objective: Any
    ema: Any
    data_gen: torch.Generator
    progress: Progress = field(default_factory=Progress)
    partial: dict[str, Any] | None = None
    lr_schedule: LRSchedule = field(default_factory=Constant)

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights to evaluate and sample with: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self, config: dict[str, Any]) -> dict[str, Any]:
        """What ``last.pt`` holds: tensors, state dicts and plain values (``weights_only``-safe),
        plus the resolved run ``config``."""
        return {
            "model": self.model.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "objective": self.objective.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": capture_rng(self.data_gen),
            "config": config,
            "partial": self.partial,
            **asdict(self.progress),
        }

    def load_state_dict(self, ckpt: dict[str, Any], path: Path) -> None:
        """Continue from checkpoint ``ckpt`` (read from ``path``): the inverse of
        :meth:`state_dict`. The optimisers keep this run's settings (``optimizer.lr``,
        ``betas``, ``momentum``, ``weight_decay``, ... and the implementation flags), which
        ``Optimizer.load_state_dict`` would replace by the saved ones; each setting that
        changed is logged once (``optimizer.lr changed on resume: 0.001 -> 0.0005``).

        Args:
            ckpt: the loaded ``last.pt``; path: where it was read (messages).

        Raises:
            CheckpointError: the weights or optimiser states do not fit (one line).
        """
        fresh = {
            name: [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
            for name, opt in self.optimizers.items()
        }
        saved_opts = ckpt.get("optimizers") or {}
        missing = [name for name in self.optimizers if saved_opts.get(name) is None]
        if missing:
            raise CheckpointError(
                f"{path} has no optimiser state for parameter group {missing[0]!r}: cannot resume"
            )
        try:
            self.model.load_state_dict(ckpt["model"])
            for name, opt in self.optimizers.items():
                opt.load_state_dict(saved_opts[name])
            self.objective.load_state_dict(ckpt["objective"])
            if self.ema is not None and ckpt.get("ema") is not None:
                self.ema.load_state_dict(ckpt["ema"])
        except (RuntimeError, ValueError, KeyError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(
                f"{path}: its state does not fit the model in its config ({first})"
            ) from None
        changes: dict[str, tuple[Any, Any]] = {}  # one line per setting, not per group
        for name, opt in self.optimizers.items():
            for group, settings in zip(opt.param_groups, fresh[name]):
                for key, now in settings.items():
                    if key == "lr" and "initial_lr" in settings:
                        continue  # scheduled: the saved lr is scaled; initial_lr is compared
                    before = group.get(key, now)  # a key the saved torch lacked: not a change
                    if key not in IMPLEMENTATION_FLAGS and _plain(before) != _plain(now):
                        changes.setdefault("lr" if key == "initial_lr" else key, (before, now))
                group.update(settings)
        for key, (before, now) in changes.items():
            log.info(
                "optimizer.%s changed on resume: %s -> %s (applied to the loaded optimiser)",
                key,
                _plain(before),
                _plain(now),
            )
        restore_rng(ckpt["rng"], self.data_gen)
        self.progress, self.partial = Progress.from_checkpoint(ckpt), ckpt.get("partial")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value
