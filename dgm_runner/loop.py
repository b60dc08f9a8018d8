"""The one training loop (``docs/design.md``, "One loop"), as its phases.

The loop never knows which model it runs: it builds the components named by the config,
trains epochs over an in-memory random permutation (:func:`dgm_runner.epoch.run_epoch`,
the updates the objective declares: one optimiser per parameter group, so GANs alternate
D and G without the loop knowing), evaluates on the test split every
``trainer.eval_every`` epochs, and writes the run-directory contract (checkpoints, metrics,
sample grids, figures, TensorBoard). ``last.pt`` is written when an epoch's training ends
and again after its evaluation, so a resume redoes only what is missing.

A data-parallel run (``trainer.strategy=ddp`` under torchrun, :mod:`dgm_runner.distributed`)
runs this loop on every process: each trains on its shard of every global batch, and
process 0 alone evaluates and writes the run directory while the others wait.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from dgm_runner.build import (
    apply_init_weights,
    build_components,
    compile_objective,
    make_ema,
    make_optimizer,
    read_init_weights,
    resolve_device,
    seed_everything,
)
from dgm_runner.config import (
    ConfigError,
    TrainerConfig,
    check_mandatory,
    trainer_config,
    validate,
)
from dgm_runner.distributed import (
    SINGLE,
    World,
    barrier,
    broadcast_module,
    broadcast_object,
    local_device,
    on_main,
    setup,
    teardown,
)
from dgm_runner.epoch import Averager, DivergedError, run_epoch
from dgm_runner.io.artifacts import truncate_jsonl
from dgm_runner.io.atomic import (
    WriteError,
    read_json,
    remove_stale_temps,
)
from dgm_runner.io.checkpoint import (
    CheckpointError,
    load_checkpoint,
    require_keys,
)
from dgm_runner.io.layout import RunPaths, check_layout
from dgm_runner.io.lock import run_lock
from dgm_runner.io.resume import RUN_IDENTITY, check_resume
from dgm_runner.io.run_config import check_config, trust_targets_of
from dgm_runner.io.run_dir import check_run_dir, has_checkpoint, holds_run
from dgm_runner.lr_schedules import Constant, remember_base_lr
from dgm_runner.progress import enabled as progress_enabled
from dgm_runner.run import Outcome, Run
from dgm_runner.threads import choose_threads
from dgm_runner.train_state import RESUME_PAYLOAD, Progress, TrainState

__all__ = ["DivergedError", "train"]

log = logging.getLogger("dgm_runner")


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train, evaluate and write every artifact of one run into ``run_dir``, holding the
    directory's lock (:mod:`dgm_runner.io.lock`) throughout.

    A resumed run continues from ``last.pt`` and does only what is missing: the rest of an
    interrupted epoch, an evaluation a stop cut short, the figures and final metrics. A
    completed run resumed with the same ``trainer.epochs`` changes nothing on disk and
    returns its recorded metrics; one resumed with more epochs keeps every earlier record.

    Args:
        cfg: a composed ``train`` config (model, dataset, objective, sampler, trainer, logger).
        run_dir: the run directory (created if needed).

    Returns:
        The final metrics (also written to ``metrics.json``).

    Raises:
        ConfigError: an invalid value, found before anything is created.
        RunDirLocked: another process holds ``run_dir`` (nothing written).
        DataError: the dataset is missing or corrupt.
        CheckpointError: ``trainer.resume`` points at an unusable checkpoint.
        WriteError: a file could not be written (full disk, ...); what was written stays.
        DivergedError: the loss became non-finite (``metrics.json`` has status "diverged",
            the last good ``last.pt`` is kept).
        StopRequested: SIGINT/SIGTERM arrived; inside an epoch the current step was finished
            and ``last.pt`` written with the position inside the epoch; during evaluation or
            figures they were abandoned (``last.pt`` already holds the trained epoch), so
            ``trainer.resume`` continues exactly there.
    """
    run_dir = Path(run_dir)
    outcome = Outcome(RunPaths(run_dir), held_a_run=holds_run(run_dir))
    threads_before = torch.get_num_threads()
    try:
        with outcome:  # recorded when dgm-train holds the lock already
            validate(cfg)
            check_mandatory(cfg)  # e.g. dataset.pairs: ??? of dataset=reflow_pairs
            trust_targets_of(cfg)  # the user's own components may appear in a run it reads
            _check_logger(cfg)
            trainer = _resume_if_requeued(trainer_config(cfg))
            world = outcome.world = _join(cfg, trainer)
        with run_lock(run_dir) if world.is_main else contextlib.nullcontext(), outcome:
            with progress_enabled(trainer.progress and world.is_main):  # bars, or log lines
                final = _train(cfg, trainer, outcome)
        return broadcast_object(final, world)  # process 0 read it from metrics.json
    finally:
        torch.set_num_threads(threads_before)  # trainer.num_threads is this run's only
        if outcome.world.parallel:
            teardown()


def _resume_if_requeued(trainer: TrainerConfig) -> TrainerConfig:
    """A SLURM job requeued after preemption or its time limit (``SLURM_RESTART_COUNT >=
    1``, as submitit's requeue sets it) runs with ``trainer.resume=auto`` unless a resume is
    configured: it continues from its job directory's ``last.pt`` instead of being refused
    as a directory that already holds a run."""
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    if trainer.resume is None and restarts.isdigit() and int(restarts) >= 1:
        log.info("SLURM requeue %s: trainer.resume=auto", restarts)
        trainer.resume = "auto"
    return trainer


def _join(cfg: DictConfig, trainer: TrainerConfig) -> World:
    """This process's place in a data-parallel run (:func:`dgm_runner.distributed.setup`),
    checked before any work.

    Raises:
        ConfigError: the strategy does not fit the launch, or the objective cannot be
            trained data-parallel (one line).
    """
    world = setup(trainer.strategy, resolve_device(trainer.device), trainer.dist_timeout_s)
    if world.parallel:
        objective = instantiate(cfg.objective)
        if not getattr(objective, "data_parallel", True):
            teardown()
            reason = getattr(
                objective, "serial_reason", "its state follows examples across batches"
            )
            raise ConfigError(
                f"objective {type(objective).__name__} cannot be trained data-parallel "
                f"({reason}): launch one process"
            )
    return world


def _check_logger(cfg: DictConfig) -> None:
    """A logger whose package is missing (``logger=mlflow`` without the extra) is a
    ConfigError before any work (:meth:`dgm_runner.io.loggers.NullLogger.check_available`)."""
    target = OmegaConf.select(cfg, "logger._target_")
    if target:
        check = getattr(get_class(target), "check_available", None)
        if callable(check):
            check()


def _train(cfg: DictConfig, trainer: TrainerConfig, outcome: Outcome) -> dict[str, Any]:
    """Checks -> open the run -> train and evaluate each epoch -> finish (how it ended
    other than completed is recorded by ``outcome``: :func:`dgm_runner.run.record_outcome`)."""
    run_dir, world = outcome.paths.root, outcome.world
    resume, ckpt, init = _checks(cfg, trainer, run_dir, world)
    if ckpt is not None:
        done = _already_complete(resume, ckpt, trainer.epochs, world)
        if done is not None:  # nothing to do: nothing written (not even a log line)
            return done
    run = outcome.run = _open(cfg, trainer, run_dir, world, resume, ckpt, init)
    try:
        with run.stoppable():
            run.start_logger()
            for epoch in run.epochs_to_run():
                if epoch > run.state.progress.epoch:
                    run_epoch(run, epoch)
                    run.save_last()  # the trained epoch is safe before its (long) evaluation
                if run.eval_due(epoch) and run.state.progress.evaluated < epoch:
                    run.evaluate(epoch)
            run.finish()
    finally:
        run.close()
    return run.final_metrics()


def _checks(
    cfg: DictConfig, trainer: TrainerConfig, run_dir: Path, world: World
) -> tuple[Path | None, Any, Any]:
    """Everything checked before anything is written: the run directory's entries and
    what it holds (process 0), the checkpoint to resume and that it is this run's, and the
    weights of ``trainer.init_from`` for a new run (:func:`dgm_runner.build.read_init_weights`;
    a resume takes its weights from ``last.pt`` and does not read them).

    Returns:
        ``(run directory, loaded last.pt, None)`` to continue from, or
        ``(None, None, (state_dict, info) or None)`` for a new run.

    Raises:
        WriteError, ConfigError, CheckpointError: one line; nothing written.
    """
    on_main(lambda: _check_run_dir(run_dir, trainer.resume), world, _RUN_DIR_ERRORS)
    device = local_device(resolve_device(trainer.device), world)
    resume, ckpt = _checkpoint_to_resume(trainer, run_dir, device)
    if ckpt is not None:
        check_resume(cfg, ckpt, RunPaths(resume).last)
    init = None
    if ckpt is None and trainer.init_from:
        init = read_init_weights(trainer.init_from, device)
    return resume, ckpt, init


def _open(
    cfg: DictConfig,
    trainer: TrainerConfig,
    run_dir: Path,
    world: World,
    resume: Path | None,
    ckpt: Any,
    init: Any = None,
) -> Run:
    """Prepare the run directory (process 0), choose the threads, build the components
    and the training state (from the weights of ``init``, ``trainer.init_from``, when given),
    continue from ``ckpt`` if given, and say what runs."""
    barrier(world)  # every process has read the run directory before process 0 writes
    paths = RunPaths(run_dir)
    if world.is_main:
        _prepare_run_dir(paths, resumed=ckpt is not None)
    threads, why = choose_threads(trainer.num_threads, (ckpt or {}).get("num_threads"))
    torch.set_num_threads(threads)
    device = local_device(resolve_device(trainer.device), world)
    comps, state = _set_up(cfg, trainer, device, world, init)
    init_info = None if init is None else init[1]
    if ckpt is not None:
        _continue(state, ckpt, RunPaths(resume).last, world, paths)
        init_info = ckpt.get("init_from")  # recorded by the launch that started the run
        if trainer.init_from:
            log.info("trainer.init_from is not read on a resume: the weights come from last.pt")
    _describe(cfg, comps, device, f"{threads} CPU thread{'s' if threads > 1 else ''} ({why})")
    config = OmegaConf.to_container(cfg, resolve=True)
    return Run(cfg, trainer, world, paths, comps, state, config, init_from=init_info)


def _continue(
    state: TrainState, ckpt: dict[str, Any], last: Path, world: World, paths: RunPaths
) -> None:
    """Load ``ckpt`` (read from ``last``) into ``state``; process 0 drops the lines a killed
    process wrote after it."""
    state.load_state_dict(ckpt, last)
    _drop_partial_of_another_world(state, ckpt, world)
    if world.is_main:  # lines a killed process wrote after its last.pt
        truncate_jsonl(paths.metrics_log, "epoch", state.progress.evaluated)
        truncate_jsonl(paths.history, "step", state.progress.step)
    log.info(
        "resumed from %s after epoch %d (step %d)", last, state.progress.epoch, state.progress.step
    )


#: The errors of :func:`_check_run_dir`, raised as themselves on every process.
_RUN_DIR_ERRORS = {e.__name__: e for e in (ConfigError, CheckpointError, WriteError)}


def _check_run_dir(run_dir: Path, resume: str | None) -> None:
    """Process 0, holding the lock, before anything is written: the run directory's entries
    are what the contract says (:func:`dgm_runner.io.layout.check_layout`), and a new run
    goes only into a directory that held nothing, a resume only into its run
    (:func:`dgm_runner.io.run_dir.check_run_dir`).

    Raises:
        WriteError, ConfigError, CheckpointError: one line; nothing written.
    """
    check_layout(run_dir)
    check_run_dir(run_dir, resume)


def _drop_partial_of_another_world(state: TrainState, ckpt: dict[str, Any], world: World) -> None:
    """A run stopped inside an epoch resumes at the next epoch boundary when the number of
    processes changed (the shards of the saved position no longer exist): the interrupted
    epoch counts as trained with the batches it had, with a warning."""
    saved = int(ckpt.get("world_size", 1))
    if state.partial is None or saved == world.size:
        return
    part, state.partial = state.partial, None
    p = state.progress
    p.epoch = int(part["epoch"])
    p.train_means = {
        f"train/{k}": v for k, v in Averager.from_state(part["epoch_terms"]).means().items()
    }
    log.warning(
        "last.pt was written by %d processes, this run has %d: epoch %d ends at batch %d "
        "(its remaining batches are skipped) and training continues with epoch %d",
        saved,
        world.size,
        p.epoch,
        part["batch"],
        p.epoch + 1,
    )


def _checkpoint_to_resume(
    trainer: TrainerConfig, run_dir: Path, device: torch.device
) -> tuple[Path | None, Any]:
    """``(run directory, loaded last.pt)`` to continue from, or ``(None, None)`` for a new run;
    checked before anything is written.

    Raises:
        CheckpointError: no, an unreadable or an incomplete ``last.pt``.
        ConfigError: ``trainer.epochs`` is below the epochs already trained.
    """
    resume = trainer.resume
    if resume == "auto":  # hydra.run.dir already points at the unfinished run, if any
        resume = str(run_dir) if has_checkpoint(run_dir) else None
    if not resume:
        return None, None
    last = RunPaths(resume).last
    if not last.is_file():
        raise CheckpointError(
            f"trainer.resume={resume} holds no run (no {RunPaths.relative().last}): pass a run "
            "directory"
        )
    ckpt = load_checkpoint(last, map_location=device)
    require_keys(ckpt, RESUME_PAYLOAD, last, "resume")
    # data, never code: the sections the resume compares (and may import targets of) are
    # checked; the rest of the saved config is never built (the current config is)
    saved = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    check_config({k: saved.get(k) for k in RUN_IDENTITY}, last)
    if ckpt["epoch"] > trainer.epochs:
        raise ConfigError(
            f"trainer.epochs={trainer.epochs} is below the {ckpt['epoch']} epochs {resume} has "
            f"trained: resume with trainer.epochs>={ckpt['epoch']}"
        )
    return Path(resume), ckpt


def _already_complete(
    run_dir: Path, ckpt: dict[str, Any], epochs: int, world: World
) -> dict[str, Any] | None:
    """The recorded final metrics when the run has nothing left to do for ``epochs``
    (trained, evaluated and finished: ``metrics.json`` says completed at that epoch);
    process 0 says so on stderr."""
    progress = Progress.from_checkpoint(ckpt)
    final = read_json(RunPaths(run_dir).metrics)
    if not (
        ckpt.get("partial") is None
        and progress.epoch == progress.evaluated == epochs
        and isinstance(final, dict)
        and final.get("status") == "completed"
        and final.get("epoch") == epochs
    ):
        return None
    if world.is_main:
        print(
            f"{run_dir} already completed {epochs} epochs: nothing to do "
            f"(trainer.epochs>{epochs} trains on)",
            file=sys.stderr,
        )
    return final


def _prepare_run_dir(paths: RunPaths, resumed: bool) -> None:
    """Create the run's folders and clear what killed processes left: temp files of
    writers (the lock is held, so no writer is alive) and, for a new run, lines a launch
    killed before its first ``last.pt`` appended."""
    for d in (paths.checkpoints, paths.samples):
        d.mkdir(parents=True, exist_ok=True)
    for d in (paths.root, paths.checkpoints, paths.samples, paths.eval_dir):
        remove_stale_temps(d)
    if not resumed:
        truncate_jsonl(paths.metrics_log, "epoch", 0)
        truncate_jsonl(paths.history, "step", 0)


def _set_up(
    cfg: DictConfig,
    trainer: TrainerConfig,
    device: torch.device,
    world: World = SINGLE,
    init: Any = None,
) -> tuple[Any, TrainState]:
    """Seed, build the components (:func:`dgm_runner.build.build_components`), load the
    weights of ``init`` (``(state_dict, info)`` of ``trainer.init_from``, shapes checked:
    :func:`dgm_runner.build.apply_init_weights`), one optimiser per parameter group, the EMA
    (a copy of the initial weights) and (``trainer.compile``) the compiled loss. In a
    data-parallel run every process starts from process 0's weights (seeded alike, they are
    the same already) and CUDA batch norm becomes ``SyncBatchNorm``."""
    seed_everything(trainer.seed)
    comps = build_components(cfg, device)
    model, objective = comps.model, comps.objective
    if init is not None:
        weights, info = init
        apply_init_weights(model, weights, info)
        log.info(
            "trainer.init_from: model initialised with the %s weights of %s (epoch %s, step %s)",
            "EMA" if info["weights"] == "ema" else "model",
            info["path"],
            info["epoch"],
            info["step"],
        )
    if world.parallel:
        if device.type == "cuda":  # batch statistics over the global batch (NCCL only)
            model = comps.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            log.warning(
                "data-parallel on CPU: batch norm normalises each process's shard "
                "(SyncBatchNorm needs CUDA); running statistics are process 0's"
            )
        broadcast_module(model, world)
    if trainer.channels_last:  # NHWC conv kernels (CUDA tensor cores); 4-D weights only
        model.to(memory_format=torch.channels_last)
    optimizers = {
        name: make_optimizer(params, cfg.optimizer, trainer.optimizer_impl)
        for name, params in objective.param_groups(model).items()
    }
    if trainer.compile:
        compile_objective(objective)
    schedule = instantiate(cfg.lr_schedule) if cfg.get("lr_schedule") is not None else Constant()
    if schedule.changes_lr:
        remember_base_lr(optimizers)
    state = TrainState(
        model,
        optimizers,
        objective,
        make_ema(model, trainer.ema_decay),
        torch.Generator().manual_seed(trainer.seed),
        lr_schedule=schedule,
    )
    return comps, state


def _describe(cfg: DictConfig, comps: Any, device: torch.device, threads: str) -> None:
    """Log what is trained, on what, where, with how many threads (after a resume's checks,
    so a refused resume writes no log line)."""
    model, data = comps.model, comps.data
    log.info(
        "%s: %s on %s (%d train / %d test images, %s), %d parameters, device %s, %s",
        cfg.get("experiment_name", "run"),
        type(model).__name__,
        data.name,
        data.train_x.shape[0],
        data.test_x.shape[0],
        _kind_of(data),
        sum(p.numel() for p in model.parameters()),
        device,
        threads,
    )


def _kind_of(data: Any) -> str:
    """``binarized`` / ``grey`` / ``3 channels`` images, or ``points`` (2-D data)."""
    if not data.is_image:
        return "points"
    if data.binarized:
        return "binarized"
    channels = data.image_shape[0]
    return "grey" if channels == 1 else f"{channels} channels"
