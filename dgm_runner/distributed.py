"""Data-parallel training of one run on several processes (``trainer.strategy=ddp``).

Launched by ``torchrun --nproc_per_node=N -m dgm_runner ...`` (or by SLURM tasks through the
submitit launcher): every process holds the whole model and the whole in-memory dataset,
draws the epoch's permutation from the one seeded generator (so the global batch order is
the single-process order) and trains on its contiguous shard of each global batch of
``trainer.batch_size`` examples (:func:`shard_of`). Process 0 owns the run directory and
writes every file; the others only compute.

What makes a run on N processes follow the single-process run (to float32 reduction
order), for objectives that draw their noise through
:func:`dgm_runner.distributions.batch_draw`:

* **gradients**: each update's gradients (back-propagated, or written by the objective
  itself as CD-k does) are averaged over the processes, weighted by shard size
  (:func:`average_gradients`): ``sum_r (n_r / B) g_r``, the gradient of the mean loss over
  the global batch of ``B`` examples, also for a last batch that does not split evenly. This
  is the all-reduce ``DistributedDataParallel`` does; it is called explicitly because our
  objectives call model methods (``encode``, ``free_energy``, ``generate``...) that DDP's
  ``forward`` hook does not see, write gradients without autograd (CD-k), and step
  several optimisers per batch (GANs), where DDP would need one wrapper per group;
* **noise**: an objective's per-example draws are made for the whole global batch on every
  process, each keeping its rows (:func:`dgm_runner.distributions.shard_rows`), so the
  global RNG advances identically everywhere;
* **evaluation**: test metrics, grids, figures and checkpoints are computed on process 0
  alone (the same numbers a single process gives), and its RNG state is then broadcast.

Objectives with state that lives per example across batches (PCD's persistent chains) set
``data_parallel = False`` and are refused in one line.

The process group is initialised from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) or, in a SLURM job with several tasks
(``hydra/launcher=slurm_ddp``), from SLURM's through submitit: gloo on CPU, NCCL on CUDA
(device ``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn

from dgm_runner.config import ConfigError


@dataclass(frozen=True)
class World:
    """This process's place in the run: ``rank`` of ``size`` processes, ``local_rank`` on
    its node. ``size == 1``: a single-process run (no collective is ever called)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def parallel(self) -> bool:
        """True when the run is spread over several processes."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """True on process 0, which owns the run directory."""
        return self.rank == 0


SINGLE = World()


def env_world() -> World:
    """The world the launcher describes: torchrun's ``RANK`` / ``WORLD_SIZE`` /
    ``LOCAL_RANK``; in a SLURM job with several tasks (``SLURM_NTASKS > 1``) the same
    variables are first exported from SLURM's (:func:`_export_slurm_env`); else a single
    process."""
    env = os.environ
    if "WORLD_SIZE" not in env and int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in env:
        _export_slurm_env()
    if "WORLD_SIZE" in env and "RANK" in env:
        return World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    return SINGLE


def _export_slurm_env() -> None:
    """torchrun's variables for the tasks of a SLURM job (submitit's
    ``TorchDistributedEnvironment``: ``MASTER_ADDR`` the job's first host, ``MASTER_PORT``
    from ``$MASTER_PORT`` or drawn from the job id, ``RANK`` / ``WORLD_SIZE`` /
    ``LOCAL_RANK`` from ``SLURM_PROCID`` / ``SLURM_NTASKS`` / ``SLURM_LOCALID``)."""
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def process_world() -> World:
    """The world of the process group this process has joined (:func:`setup`), else
    :data:`SINGLE`: for code the loop does not hand the run's world, e.g. an objective's
    data-dependent initialisation (``objective=flow_nll``), which sums its statistics over
    the processes. ``local_rank`` is read from ``LOCAL_RANK``."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return SINGLE


def wants_ddp(strategy: str, world: World) -> bool:
    """Whether ``trainer.strategy`` asks for data-parallel training in ``world``: ``ddp``
    always, ``auto`` when the launcher started several processes, ``none`` never.

    Raises:
        ConfigError: ``strategy=none`` or a single-process strategy under a launcher that
            started several processes (each would train its own copy into one directory),
            or ``strategy=ddp`` without a launcher's environment.
    """
    if strategy == "none":
        if world.parallel:
            raise ConfigError(
                f"trainer.strategy=none but the launcher started {world.size} processes: "
                "use trainer.strategy=ddp (or auto), or launch one process"
            )
        return False
    if strategy == "ddp" and "WORLD_SIZE" not in os.environ:
        raise ConfigError(
            "trainer.strategy=ddp needs a launcher: torchrun --nproc_per_node=N -m dgm_runner "
            "... (or a SLURM job with several tasks: hydra/launcher=slurm_ddp)"
        )
    return strategy == "ddp" or world.parallel


def setup(strategy: str, device: torch.device, timeout_s: float = 7200.0) -> World:
    """Join the process group of a data-parallel run (once per process; later calls return
    the same world), or return :data:`SINGLE`.

    Args:
        strategy: ``trainer.strategy`` (``auto`` | ``ddp`` | ``none``).
        device: the run's device type (``cpu``: gloo; ``cuda``: NCCL, and this process
            uses ``cuda:LOCAL_RANK``).
        timeout_s: how long a collective waits for the others (process 0 evaluates alone
            while the others wait: long FID / AIS evaluations need hours, not minutes).

    Raises:
        ConfigError: see :func:`wants_ddp`; ``MASTER_ADDR`` / ``MASTER_PORT`` unset.
    """
    world = env_world()
    if not wants_ddp(strategy, world):
        return SINGLE
    if dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), world.local_rank)
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(f"trainer.strategy=ddp: {' and '.join(missing)} not set by the launcher")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group(
        backend,
        rank=world.rank,
        world_size=world.size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return world


def local_device(device: torch.device, world: World) -> torch.device:
    """``cuda:LOCAL_RANK`` for a CUDA data-parallel run, else ``device``."""
    if world.parallel and device.type == "cuda":
        return torch.device("cuda", world.local_rank)
    return device


def shard_of(n: int, world: World) -> tuple[int, int]:
    """``(start, stop)`` of this process's contiguous rows of a global batch of ``n``
    examples: ``torch.tensor_split``'s split, sizes differing by at most one (a process
    may get none when ``n < size``)."""
    base, extra = divmod(n, world.size)
    start = world.rank * base + min(world.rank, extra)
    return start, start + base + (1 if world.rank < extra else 0)


def _flat_all_reduce(tensors: list[torch.Tensor], op: Any = dist.ReduceOp.SUM) -> None:
    """All-reduce ``tensors`` in place as one flat buffer (one collective)."""
    if not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=op)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def average_gradients(params: Iterable[nn.Parameter], weight: float, world: World) -> None:
    """Replace each gradient by ``sum_r weight_r grad_r`` over the processes, where
    ``weight = n_r / B`` is this process's share of the global batch (so the result is the
    gradient of the global batch's mean loss). Parameters without a gradient are skipped
    (the same ones on every process: the code path is the same)."""
    if not world.parallel:
        return
    grads = [p.grad for p in params if p.grad is not None]
    for g in grads:
        g.mul_(weight)
    _flat_all_reduce(grads)


def all_reduce_sum(tensors: list[torch.Tensor], world: World) -> None:
    """Sum ``tensors`` (float, any shapes) over the processes, in place."""
    if world.parallel:
        _flat_all_reduce(tensors)


def any_process(flag: bool, world: World) -> bool:
    """True on every process when ``flag`` is true on any (a stop signal received by one
    process stops them all after the same step)."""
    if not world.parallel:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_object(obj: Any, world: World) -> Any:
    """Process 0's ``obj`` on every process (pickled; small values only)."""
    if not world.parallel:
        return obj
    box = [obj if world.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_module(module: nn.Module, world: World) -> None:
    """Copy process 0's parameters and buffers into every process's ``module`` (at start-up,
    as DDP does; and the buffers after each step, e.g. batch-norm running statistics)."""
    if world.parallel:
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


def broadcast_buffers(module: nn.Module, world: World) -> None:
    """Process 0's floating-point buffers (batch-norm running statistics) everywhere."""
    if world.parallel:
        for b in module.buffers():
            if b.is_floating_point():
                dist.broadcast(b.data, src=0)


def sync_rng(world: World) -> None:
    """Process 0's global torch RNG state (CPU, and CUDA where used) on every process:
    after process 0 alone evaluated, so the next noise draws agree everywhere."""
    if not world.parallel:
        return
    state = broadcast_object(
        {
            "cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None,
        },
        world,
    )
    torch.set_rng_state(state["cpu"])
    if state["cuda"] is not None and torch.cuda.is_initialized():
        torch.cuda.set_rng_state(state["cuda"])


class RemoteError(RuntimeError):
    """An error process 0 raised while the others waited (its type name and message)."""


def on_main(fn: Callable[[], Any], world: World, errors: dict[str, type] | None = None) -> Any:
    """Run ``fn`` on process 0 only (evaluation, figures, files), the others waiting; then
    share process 0's RNG state. An exception on process 0 is raised there and, as the
    same type when ``errors`` names it (else :class:`RemoteError`), on every other process.

    Returns:
        ``fn()`` on process 0, None elsewhere.
    """
    if not world.parallel:
        return fn()
    result, failure = None, None
    if world.is_main:
        try:
            result = fn()
        except BaseException as err:  # shared below, then re-raised
            failure = err
    status = broadcast_object(
        None if failure is None else (type(failure).__name__, str(failure)), world
    )
    if failure is not None:
        raise failure
    if status is not None:
        name, message = status
        raise (errors or {}).get(name, RemoteError)(f"process 0: {message}")
    sync_rng(world)
    return result


def barrier(world: World) -> None:
    """Wait for every process."""
    if world.parallel:
        dist.barrier()


def teardown() -> None:
    """Leave the process group (at the end of a run)."""
    if dist.is_initialized():
        dist.destroy_process_group()
