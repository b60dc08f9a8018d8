"""One epoch of updates: the batches of a random permutation of the training split, the
updates the objective declares for each (:func:`train_step`), the running averages of the
logged terms (:class:`Averager`), and an exact stop on SIGINT / SIGTERM."""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from dgm_runner.distributed import (
    SINGLE,
    World,
    all_reduce_sum,
    any_process,
    average_gradients,
    broadcast_buffers,
    on_main,
    shard_of,
)
from dgm_runner.distributions import shard_rows
from dgm_runner.evaluation import evaluate_split
from dgm_runner.io.artifacts import append_jsonl
from dgm_runner.io.signals import StopRequested
from dgm_runner.objectives.base import Batch, Objective
from dgm_runner.progress import Bar


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


def run_epoch(
    state: Any,
    data: Any,
    trainer: Any,
    epoch: int,
    logger: Any,
    stop: Any,
    history_file: Any,
    save_last: Any,
    autocast_dtype: torch.dtype | None,
    world: World = SINGLE,
) -> None:
    """Train epoch ``epoch`` of ``state`` (a :class:`dgm_runner.train_state.TrainState`):
    its permutation (drawn from ``state.data_gen``, or the one of the interrupted epoch in
    ``state.partial``, continued from the next batch), logging the train terms every
    ``trainer.log_every`` steps (TensorBoard, ``train_history.jsonl``), validation terms
    every ``trainer.val_every_steps``; then ``state.progress`` records the epoch.

    Args:
        data: the run's :class:`dgm_runner.data.base.DataSplits`; trainer: the validated
            :class:`dgm_runner.config.TrainerConfig`; logger: the run's logger; stop: the
            :class:`dgm_runner.io.signals.GracefulStop` polled after each step;
        history_file: ``train_history.jsonl`` (None: write none, as data-parallel processes
            other than 0 do); save_last: writes ``last.pt`` from ``state`` (process 0);
        autocast_dtype: bf16 or None;
        world: a data-parallel run's processes: each trains on its rows of every global
            batch (:func:`dgm_runner.distributed.shard_of`), the logged terms are reduced
            over them, and a stop signal received by any process stops all of them after
            the same step.

    Raises:
        DivergedError: a logged training term is not finite.
        StopRequested: a stop signal arrived; the step was finished and ``last.pt`` holds
            the exact position.
    """
    progress, n, bs = state.progress, data.train_x.shape[0], trainer.batch_size
    steps_per_epoch = math.ceil(n / bs)
    device = data.train_x.device
    t0 = time.perf_counter()
    if state.partial is None:
        perm, start = torch.randperm(n, generator=state.data_gen).to(device), 0
        window, epoch_terms, in_window = Averager(), Averager(), 0
    else:  # continue the epoch a signal stopped, from the next batch
        part, state.partial = state.partial, None
        perm, start, in_window = part["perm"].to(device), part["batch"], part["in_window"]
        window, epoch_terms = (
            Averager.from_state(part["window"]),
            Averager.from_state(part["epoch_terms"]),
        )
        if not world.is_main:  # saved reduced by process 0: its sums count once
            window.zero_sums()
    history: list[
        dict[str, float]
    ] = []  # train terms per log interval, val terms; flushed per epoch
    bar = Bar(
        steps_per_epoch,
        f"epoch {epoch}/{trainer.epochs}",
        "batch",
        every=25,
        show=trainer.progress and world.is_main,
        initial=start,
    )
    for i in bar.wrap(range(start, steps_per_epoch)):
        idx = perm[i * bs : (i + 1) * bs]
        total = idx.numel()
        if total >= world.size:  # this process's rows of the global batch
            start, stop_row = shard_of(total, world)
            weight = (stop_row - start) / total
        else:  # fewer examples than processes: each trains on all of them, weight 1/N
            start, stop_row, weight = 0, total, 1.0 / world.size
        idx = idx[start:stop_row]
        # index_select: a plain row gather, ~5x cheaper on CPU than x[idx]'s advanced indexing
        batch = Batch(data.train_x.index_select(0, idx), data.train_y.index_select(0, idx))
        with shard_rows(start, stop_row - start, total):  # no-op when it is all rows
            train_step(
                state.model,
                state.objective,
                state.optimizers,
                batch,
                progress.step,
                window,
                autocast_dtype,
                world,
                weight,
            )
        if state.ema is not None:
            state.ema.update_parameters(state.model)
        progress.step += 1
        in_window += 1
        if in_window == trainer.log_every or i == steps_per_epoch - 1:
            window.reduce(world)
            means = {f"train/{k}": v for k, v in window.means().items()}
            bad = {k: v for k, v in means.items() if not math.isfinite(v)}
            if bad:
                raise DivergedError(
                    f"non-finite training loss at epoch {epoch}, step {progress.step}: {bad}"
                )
            logger.scalars(means, progress.step)
            history.append({"step": progress.step, **means})
            bar.set_postfix({k[6:]: f"{v:.4g}" for k, v in means.items()})
            epoch_terms.merge(window)
            window, in_window = Averager(), 0
        if trainer.val_every_steps and progress.step % trainer.val_every_steps == 0:
            val = on_main(
                lambda: evaluate_split(
                    state.eval_model,
                    state.objective,
                    data.test_x[: trainer.val_size],
                    data.test_y[: trainer.val_size],
                    trainer.eval_batch_size,
                    trainer.seed + 1,
                    prefix="val",
                ),
                world,
            )
            if world.is_main:
                logger.scalars(val, progress.step)
                history.append({"step": progress.step, **val})
        if any_process(stop.requested is not None, world):  # finish the step, save, exit
            window.reduce(world)  # process 0 saves the global sums
            if history_file is not None:
                append_jsonl(history_file, *history)
            state.partial = {
                "epoch": epoch,
                "batch": i + 1,
                "perm": perm.cpu(),
                "in_window": in_window,
                "window": window.state_dict(),
                "epoch_terms": epoch_terms.state_dict(),
            }
            save_last()
            raise StopRequested(
                f"{stop.requested or 'a stop on another process'} received: stopped at epoch "
                f"{epoch}, step {progress.step}"
            )
    if history_file is not None:
        append_jsonl(history_file, *history)
    progress.epoch_times.append(time.perf_counter() - t0)
    progress.train_means = {f"train/{k}": v for k, v in epoch_terms.means().items()}
    progress.epoch = epoch
