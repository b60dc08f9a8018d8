"""One epoch of updates: the batches of a random permutation of the training split, the
updates the objective declares for each (:func:`train_step`), the running averages of the
logged terms (:class:`Averager`), and an exact stop on SIGINT / SIGTERM."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from dgm_runner.distributed import (
    SINGLE,
    World,
    all_reduce_sum,
    any_process,
    average_gradients,
    broadcast_buffers,
    shard_of,
)
from dgm_runner.distributions import shard_rows
from dgm_runner.evaluation import evaluate_split
from dgm_runner.io.signals import StopRequested
from dgm_runner.lr_schedules import apply_lr_schedule
from dgm_runner.objectives.base import Batch, Objective
from dgm_runner.progress import Bar
from dgm_runner.train_state import TrainState

if TYPE_CHECKING:  # run.py imports this module
    from dgm_runner.run import Run

log = logging.getLogger("dgm_runner")


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


class Averager:
    """Running sums and counts of logged terms, kept on the device (one host sync per
    log interval). Terms may be logged at different rates (a GAN's generator loss
    every n_critic steps), so each key has its own count."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, terms: dict[str, torch.Tensor], weight: float = 1.0) -> None:
        """Add one step's terms; ``weight``: this process's share of a data-parallel global
        batch (its terms are shard means; :meth:`reduce` then sums the shares)."""
        for k, v in terms.items():
            if v.dtype in (torch.bfloat16, torch.float16):  # autocast terms: sum in float32
                v = v.float()
            if weight != 1.0:
                v = v * weight
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1

    def reduce(self, world: World) -> None:
        """Sum the weighted sums over the processes of a data-parallel run (one collective;
        every process has the same keys and counts): afterwards they are the global batch's
        sums, as a single process has them."""
        if world.parallel and self.sums:
            keys = sorted(self.sums)
            flat = [torch.as_tensor(self.sums[k], dtype=torch.float32).reshape(1) for k in keys]
            all_reduce_sum(flat, world)
            self.sums = {k: t.reshape(()) for k, t in zip(keys, flat)}

    def zero_sums(self) -> None:
        """Keep the counts, zero the sums: a data-parallel process other than 0 resuming
        a window process 0 saved already reduced (its share is then counted once)."""
        self.sums = {k: torch.zeros_like(torch.as_tensor(v)) for k, v in self.sums.items()}

    def merge(self, other: "Averager") -> None:
        for k, v in other.sums.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + other.counts[k]

    def means(self) -> dict[str, float]:
        return {k: float(v) / self.counts[k] for k, v in self.sums.items()}

    def state_dict(self) -> dict[str, Any]:
        """Sums (tensors) and counts, for a mid-epoch checkpoint (weights_only-safe)."""
        return {"sums": dict(self.sums), "counts": dict(self.counts)}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> "Averager":
        out = cls()
        if state:
            out.sums, out.counts = dict(state["sums"]), dict(state["counts"])
        return out


def train_step(
    model: torch.nn.Module,
    objective: Objective,
    optimizers: dict[str, torch.optim.Optimizer],
    batch: Batch,
    step: int,
    averager: Averager | None = None,
    autocast_dtype: torch.dtype | None = None,
    world: World = SINGLE,
    weight: float = 1.0,
) -> None:
    """The updates of one batch: for each ``(group, loss, terms)`` the objective yields
    (one for most objectives, alternating D/G for GANs), back-propagate ``loss``, step that
    group's optimiser and call ``objective.after_step``. A loss of None means the objective
    wrote the gradients itself (CD-k's closed form): no ``backward``. No host sync: the
    logged terms stay on the device, summed into ``averager``.

    Args:
        model: the model being trained; objective: its objective.
        optimizers: one optimiser per parameter group of ``objective.param_groups``.
        batch: ``(B, C, H, W)`` images and ``(B,)`` labels on the model's device.
        step: number of batches done before this one.
        averager: where to add the logged terms (None: dropped).
        world, weight: a data-parallel run's processes and this process's share of the
            global batch (``n_r / B``): each update's gradients are averaged over the
            processes with these weights before the optimiser steps
            (:func:`dgm_runner.distributed.average_gradients`), and so are the logged
            terms; the model's buffers are then process 0's.
        autocast_dtype: run the objective's forward passes (each resumption of
            ``objective.steps``) under ``torch.autocast`` with this dtype
            (``trainer.precision=bf16``); backward and the optimiser step stay outside it,
            as torch's AMP recipe asks. None: full precision.
    """
    updates = objective.steps(model, batch, step)
    while True:
        if autocast_dtype is None:
            update = next(updates, None)
        else:
            with torch.autocast(batch.x.device.type, dtype=autocast_dtype):
                update = next(updates, None)
        if update is None:
            break
        group, loss, terms = update
        if loss is not None:
            model.zero_grad(set_to_none=True)
            loss.backward()
        if world.parallel:
            params = [p for g in optimizers[group].param_groups for p in g["params"]]
            average_gradients(params, weight, world)
        optimizers[group].step()
        objective.after_step(group, model)
        if averager is not None:
            averager.add(terms, weight)  # on device: no host sync per step
    if world.parallel:
        broadcast_buffers(model, world)  # e.g. batch-norm running statistics


@dataclass
class EpochCursor:
    """Where an epoch stands: its permutation, the next batch, the logged terms of the
    current log window and of the epoch so far, and the records not yet written to
    ``train_history.jsonl`` (flushed at the end of the epoch or at a stop).

    :meth:`state_dict` is ``TrainState.partial``: what ``last.pt`` holds of an epoch a stop
    signal interrupted, continued by :meth:`resume`.
    """

    epoch: int
    perm: torch.Tensor
    batch: int = 0
    in_window: int = 0
    window: Averager = field(default_factory=Averager)
    epoch_terms: Averager = field(default_factory=Averager)
    history: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def start(
        cls, state: Any, epoch: int, n: int, device: torch.device, world: World
    ) -> "EpochCursor":
        """Epoch ``epoch`` of ``n`` training examples: a new permutation drawn from
        ``state.data_gen``, or the interrupted epoch of ``state.partial`` (consumed)."""
        if state.partial is None:
            return cls(epoch, torch.randperm(n, generator=state.data_gen).to(device))
        part, state.partial = state.partial, None
        cursor = cls(
            epoch,
            part["perm"].to(device),
            part["batch"],
            part["in_window"],
            Averager.from_state(part["window"]),
            Averager.from_state(part["epoch_terms"]),
        )
        if not world.is_main:  # saved reduced by process 0: its sums count once
            cursor.window.zero_sums()
        return cursor

    def state_dict(self) -> dict[str, Any]:
        """The position to continue from (``TrainState.partial``; weights_only-safe)."""
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "perm": self.perm.cpu(),
            "in_window": self.in_window,
            "window": self.window.state_dict(),
            "epoch_terms": self.epoch_terms.state_dict(),
        }


def _set_lr(state: TrainState, epoch: int, epochs: int, world: World) -> None:
    """The learning rate of ``epoch`` (``lr_schedule``; nothing for the constant default),
    logged by process 0 in the first epoch and whenever it changes."""
    schedule = state.lr_schedule
    if not schedule.changes_lr:
        return
    factor = apply_lr_schedule(schedule, state.optimizers, epoch, epochs)
    if world.is_main and (epoch == 1 or factor != schedule.factor(epoch - 1, epochs)):
        lr = next(iter(state.optimizers.values())).param_groups[0]["lr"]
        log.info("epoch %d: learning rate %.4g (lr_schedule factor %.4g)", epoch, lr, factor)


def run_epoch(run: "Run", epoch: int) -> None:
    """Train epoch ``epoch`` of ``run`` (a :class:`dgm_runner.run.Run`): the batches of its
    permutation (drawn from ``run.state.data_gen``, or the interrupted epoch's of
    ``run.state.partial``, from its next batch), each one :func:`train_step`; the train terms
    logged every ``trainer.log_every`` steps (logger, ``train_history.jsonl``), validation
    terms every ``trainer.val_every_steps``; then ``run.state.progress`` records the epoch.

    In a data-parallel run each process trains on its rows of every global batch
    (:func:`dgm_runner.distributed.shard_of`), the logged terms are reduced over them, and
    a stop signal any process received stops all of them after the same step.

    Raises:
        DivergedError: a logged training term is not finite.
        StopRequested: a stop signal arrived; the step was finished and ``last.pt`` holds
            the exact position.
    """
    state, data, trainer, world = run.state, run.comps.data, run.trainer, run.world
    run.epoch, started = epoch, time.perf_counter()
    _set_lr(state, epoch, trainer.epochs, world)
    steps = math.ceil(data.train_x.shape[0] / trainer.batch_size)
    cursor = EpochCursor.start(state, epoch, data.train_x.shape[0], data.device, world)
    show = trainer.progress and world.is_main
    bar = Bar(
        steps, f"epoch {epoch}/{trainer.epochs}", "batch", every=25, show=show, initial=cursor.batch
    )
    for i in bar.wrap(range(cursor.batch, steps)):
        _train_batch(run, cursor, i)
        state.progress.step += 1
        cursor.batch, cursor.in_window = i + 1, cursor.in_window + 1
        if cursor.in_window == trainer.log_every or i == steps - 1:
            _log_window(run, cursor, bar)
        if trainer.val_every_steps and state.progress.step % trainer.val_every_steps == 0:
            _validate(run, cursor)
        if any_process(run.stop is not None and run.stop.requested is not None, world):
            _stop_inside(run, cursor)
    run.append_history(cursor.history)
    state.progress.epoch_times.append(time.perf_counter() - started)
    state.progress.train_means = {f"train/{k}": v for k, v in cursor.epoch_terms.means().items()}
    state.progress.epoch = epoch


def _train_batch(run: "Run", cursor: EpochCursor, i: int) -> None:
    """The updates of batch ``i`` of the cursor's permutation on this process's rows of it
    (all rows when there are fewer than processes, each then weighing ``1 / N``)."""
    state, data, bs, world = run.state, run.comps.data, run.trainer.batch_size, run.world
    idx = cursor.perm[i * bs : (i + 1) * bs]
    total = idx.numel()
    if total >= world.size:  # this process's rows of the global batch
        start, stop = shard_of(total, world)
        weight = (stop - start) / total
    else:  # fewer examples than processes: each trains on all of them, weight 1/N
        start, stop, weight = 0, total, 1.0 / world.size
    idx = idx[start:stop]
    # index_select: a plain row gather, ~5x cheaper on CPU than x[idx]'s advanced indexing
    # (train_rows: the float rows themselves, or a memory-mapped uint8 split's rows / 255)
    x, y = data.train_rows(idx), data.train_y.index_select(0, idx)
    # (noise, sample) pairs (reflow): the noise of the same rows
    noise = None if data.train_noise is None else data.train_noise.index_select(0, idx)
    with shard_rows(start, stop - start, total):  # no-op when it is all rows
        if data.train_transform is not None:  # e.g. dynamic binarization: per-example draws
            x = data.train_transform(x)
        batch = Batch(x, y, noise)
        train_step(
            state.model,
            state.objective,
            state.optimizers,
            batch,
            state.progress.step,
            averager=cursor.window,
            autocast_dtype=run.autocast_dtype,
            world=world,
            weight=weight,
        )
    if state.ema is not None:
        state.ema.update_parameters(state.model)


def _log_window(run: "Run", cursor: EpochCursor, bar: Bar) -> None:
    """Reduce the log window over the processes and log its means (logger, history record,
    progress bar); it joins the epoch's terms and a new window starts.

    Raises:
        DivergedError: a mean is not finite.
    """
    step = run.state.progress.step
    cursor.window.reduce(run.world)
    means = {f"train/{k}": v for k, v in cursor.window.means().items()}
    bad = {k: v for k, v in means.items() if not math.isfinite(v)}
    if bad:
        raise DivergedError(f"non-finite training loss at epoch {cursor.epoch}, step {step}: {bad}")
    run.logger.scalars(means, step)
    cursor.history.append({"step": step, **means})
    bar.set_postfix({k[6:]: f"{v:.4g}" for k, v in means.items()})
    cursor.epoch_terms.merge(cursor.window)
    cursor.window, cursor.in_window = Averager(), 0


def _validate(run: "Run", cursor: EpochCursor) -> None:
    """The objective's terms on the first ``trainer.val_size`` test examples (process 0),
    logged as ``val/...``."""
    trainer, data, state = run.trainer, run.comps.data, run.state
    val = run.on_main(
        lambda: evaluate_split(
            state.eval_model,
            state.objective,
            data.test_x[: trainer.val_size],
            data.test_y[: trainer.val_size],
            trainer.eval_batch_size,
            run.seeds.test_metrics,
            prefix="val",
        )
    )
    if val is not None:  # process 0
        run.logger.scalars(val, state.progress.step)
        cursor.history.append({"step": state.progress.step, **val})


def _stop_inside(run: "Run", cursor: EpochCursor) -> None:
    """A stop signal arrived (on some process): the step is finished; write the history so
    far and ``last.pt`` with the exact position, then stop.

    Raises:
        StopRequested: always.
    """
    cursor.window.reduce(run.world)  # process 0 saves the global sums
    run.append_history(cursor.history)
    run.state.partial = cursor.state_dict()
    run.save_last()
    raise StopRequested(
        f"{run.stop.requested or 'a stop on another process'} received: stopped at epoch "
        f"{cursor.epoch}, step {run.state.progress.step}"
    )
