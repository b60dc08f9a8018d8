"""Learning-rate schedules (``lr_schedule=...``, ``configs/lr_schedule/``): the step size of
epoch ``e`` is the configured ``optimizer.lr`` times ``factor(e, epochs)``.

A schedule is a pure function of the epoch: nothing of it is checkpointed, and a run
resumed inside an epoch sets the same rate that epoch had, so resume stays bit-exact. The
loop sets every parameter group's ``lr`` at the start of each epoch
(:func:`apply_lr_schedule`); ``constant`` (the default) never touches the optimiser, so
runs without a schedule are unchanged to the last bit.

Factors per epoch rather than per step: the schedules of the papers this runner reproduces
are written in epochs (Burda et al. 2016; Germain et al. 2015 use none).
"""

from __future__ import annotations

import math
from typing import Annotated

import torch

from dgm_runner.config import PositiveInt, Range, UnitInterval

#: A stage-to-stage factor: in (0, 1].
Decay = Annotated[float, Range(gt=0, le=1)]


class LRSchedule:
    """The factor of the configured learning rate in each epoch (subclasses)."""

    #: False for :class:`Constant`: the loop leaves the optimiser alone.
    changes_lr = True

    def factor(self, epoch: int, epochs: int) -> float:
        """The factor in epoch ``epoch`` (1-based) of a run of ``epochs`` epochs."""
        raise NotImplementedError

    def describe(self, epochs: int) -> str:
        """One line for the log: what the schedule does over ``epochs`` epochs."""
        first, last = self.factor(1, epochs), self.factor(epochs, epochs)
        name = type(self).__name__
        return f"{name}: factor {first:.4g} in epoch 1 -> {last:.4g} in epoch {epochs}"


class Constant(LRSchedule):
    """``optimizer.lr`` in every epoch (the default; the seeds specify no schedule)."""

    changes_lr = False

    def factor(self, epoch: int, epochs: int) -> float:
        return 1.0


class GeometricStages(LRSchedule):
    """Stages of geometrically growing length at geometrically decaying rates: stage
    ``i = 0, 1, ...`` lasts ``growth^i`` epochs at ``decay^i`` times ``optimizer.lr``; after
    ``n_stages`` stages the last rate stays.

    ``lr_schedule=burda`` is Burda, Grosse & Salakhutdinov (2016), Sec. 5 / Appendix:
    ``growth = 3``, ``decay = 10^(-1/7)``, 8 stages (1e-3 * 10^(-i/7) for 3^i epochs,
    3280 epochs in all; their code rounds the rates to two digits, this does not).

    Args:
        growth: stage ``i`` lasts ``growth^i`` epochs (>= 1).
        decay: the factor from one stage to the next, in ``(0, 1]``.
        n_stages: stages before the rate stops decaying (>= 1).
    """

    def __init__(
        self, growth: PositiveInt = 3, decay: Decay = 10 ** (-1 / 7), n_stages: PositiveInt = 8
    ) -> None:
        self.growth, self.decay, self.n_stages = growth, decay, n_stages

    def stage(self, epoch: int) -> int:
        """The stage (0-based) epoch ``epoch`` (1-based) falls in, at most ``n_stages - 1``."""
        end, length = 0, 1
        for i in range(self.n_stages):
            end += length
            if epoch <= end:
                return i
            length *= self.growth
        return self.n_stages - 1

    def factor(self, epoch: int, epochs: int) -> float:
        return self.decay ** self.stage(epoch)

    def describe(self, epochs: int) -> str:
        last = self.stage(epochs)
        return (
            f"GeometricStages: stage i of {self.growth}^i epochs at {self.decay:.6g}^i x lr; "
            f"{epochs} epochs reach stage {last} (factor {self.decay**last:.4g})"
        )


class Cosine(LRSchedule):
    """Cosine annealing without restarts (Loshchilov & Hutter 2017, Eq. 5), per epoch:
    ``min + (1 - min) (1 + cos(pi (e - 1) / epochs)) / 2``, from 1 in the first epoch
    towards ``min_factor`` (reached after the last).

    Args:
        min_factor: the factor the rate anneals to, in ``[0, 1]``.
    """

    def __init__(self, min_factor: UnitInterval = 0.0) -> None:
        self.min_factor = min_factor

    def factor(self, epoch: int, epochs: int) -> float:
        cos = (1 + math.cos(math.pi * (epoch - 1) / epochs)) / 2
        return self.min_factor + (1 - self.min_factor) * cos


def remember_base_lr(optimizers: dict[str, torch.optim.Optimizer]) -> None:
    """Record each parameter group's configured ``lr`` as its ``initial_lr`` (the key
    torch's own schedulers use), the rate :func:`apply_lr_schedule` scales; called on the
    freshly built optimisers, before a checkpoint is loaded into them."""
    for opt in optimizers.values():
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]


def apply_lr_schedule(
    schedule: LRSchedule,
    optimizers: dict[str, torch.optim.Optimizer],
    epoch: int,
    epochs: int,
) -> float:
    """Set every group's ``lr`` to ``initial_lr * factor(epoch, epochs)``.

    Returns:
        The factor set (1.0 for :class:`Constant`, which touches nothing).
    """
    if not schedule.changes_lr:
        return 1.0
    factor = schedule.factor(epoch, epochs)
    for opt in optimizers.values():
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * factor
    return factor
