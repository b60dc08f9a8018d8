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
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from dgm_runner.build import (
    build_components,
    compile_objective,
    make_ema,
    make_optimizer,
    resolve_device,
    seed_everything,
)
from dgm_runner.config import ConfigError, TrainerConfig, trainer_config, validate
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
from dgm_runner.evaluation import all_test_metrics
from dgm_runner.io.artifacts import append_jsonl, read_jsonl, save_samples, truncate_jsonl
from dgm_runner.io.atomic import (
    WriteError,
    atomic_copy,
    atomic_open,
    read_json,
    remove_stale_temps,
    write_json,
)
from dgm_runner.io.checkpoint import (
    CheckpointError,
    capture_rng,
    load_checkpoint,
    require_keys,
    save_checkpoint,
    unchanged_rng,
)
from dgm_runner.io.layout import RunPaths, check_layout
from dgm_runner.io.lock import run_lock
from dgm_runner.io.loggers import NullLogger, start_logger
from dgm_runner.io.resume import RUN_IDENTITY, check_resume
from dgm_runner.io.run_config import check_config, trust_targets_of
from dgm_runner.io.run_dir import check_run_dir, has_checkpoint, record_outcome
from dgm_runner.io.signals import GracefulStop, StopRequested
from dgm_runner.progress import enabled as progress_enabled
from dgm_runner.samplers.base import draw_samples
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
    validate(cfg)
    trust_targets_of(cfg)  # the user's own components may appear in a run this one reads
    _check_logger(cfg)
    trainer = _resume_if_requeued(trainer_config(cfg))
    world = _join(cfg, trainer)
    run_dir = Path(run_dir)
    threads_before = torch.get_num_threads()
    try:
        with run_lock(run_dir) if world.is_main else contextlib.nullcontext():
            with progress_enabled(trainer.progress and world.is_main):  # bars, or log lines
                final = _train(cfg, trainer, run_dir, world)
        return broadcast_object(final, world)  # process 0 read it from metrics.json
    finally:
        torch.set_num_threads(threads_before)  # trainer.num_threads is this run's only
        if world.parallel:
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
            raise ConfigError(
                f"objective {type(objective).__name__} cannot be trained data-parallel "
                "(its state follows examples across batches, e.g. PCD's persistent chains): "
                "launch one process"
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


def _train(cfg: DictConfig, trainer: TrainerConfig, run_dir: Path, world: World) -> dict[str, Any]:
    on_main(lambda: _check_run_dir(run_dir, trainer.resume), world, _RUN_DIR_ERRORS)
    paths = RunPaths(run_dir)
    device = local_device(resolve_device(trainer.device), world)
    resume, ckpt = _checkpoint_to_resume(trainer, run_dir, device)
    if ckpt is not None:
        check_resume(cfg, ckpt, RunPaths(resume).last)
        done = _already_complete(
            resume, Progress.from_checkpoint(ckpt), ckpt.get("partial"), trainer.epochs
        )
        if done is not None:  # nothing to do: nothing written (not even a log line)
            if not world.is_main:
                return done
            print(
                f"{resume} already completed {trainer.epochs} epochs: nothing to do "
                f"(trainer.epochs>{trainer.epochs} trains on)",
                file=sys.stderr,
            )
            return done
    barrier(world)  # every process has read the run directory before process 0 writes
    if world.is_main:
        _prepare_run_dir(run_dir, resumed=ckpt is not None)
    threads, why = choose_threads(trainer.num_threads, (ckpt or {}).get("num_threads"))
    torch.set_num_threads(threads)
    comps, state = _set_up(cfg, trainer, device, world)
    if ckpt is not None:
        state.load_state_dict(ckpt, RunPaths(resume).last, trainer)
        _drop_partial_of_another_world(state, ckpt, world)
        if world.is_main:  # lines a killed process wrote after its last.pt
            truncate_jsonl(paths.metrics_log, "epoch", state.progress.evaluated)
            truncate_jsonl(paths.history, "step", state.progress.step)
        log.info(
            "resumed from %s after epoch %d (step %d)",
            RunPaths(resume).last,
            state.progress.epoch,
            state.progress.step,
        )
    _describe(cfg, comps, device, f"{threads} CPU thread{'s' if threads > 1 else ''} ({why})")
    config = OmegaConf.to_container(cfg, resolve=True)

    def save_last(rng: dict[str, Any] | None = None) -> None:
        """``last.pt`` (process 0), with the RNG states ``rng`` when given (those before an
        evaluation: what the training after it continues from)."""
        if world.is_main:
            payload = {
                **state.state_dict(config),
                "world_size": world.size,
                "num_threads": torch.get_num_threads(),  # auto keeps it on resume
            }
            save_checkpoint(paths.last, payload if rng is None else {**payload, "rng": rng})

    autocast_dtype = torch.bfloat16 if trainer.precision == "bf16" else None
    logger: Any = NullLogger(run_dir, config)  # process 0's own starts in the try below
    errors = {"DivergedError": DivergedError, "StopRequested": StopRequested}

    def evaluate(epoch: int) -> None:
        """``epoch``'s evaluation on process 0; then every process holds its progress. The
        global RNGs are left as they were (a run's training does not depend on which of its
        evaluations computed sample metrics, so an extended run follows a longer one)."""
        before = capture_rng(state.data_gen)  # what last.pt must hold after the evaluation
        with unchanged_rng():
            on_main(
                lambda: _evaluate_epoch(
                    cfg, comps, state, epoch, logger, run_dir, lambda: save_last(before)
                ),
                world,
                errors,
            )
        state.progress = broadcast_object(state.progress, world)

    epoch = state.progress.epoch
    try:
        with GracefulStop() as stop:
            # a signal ends process 0's evaluation at once; the others wait in a collective
            # meanwhile and keep the signal for their next step or the end of the run
            # (dgm_runner.distributed.on_main raises process 0's stop there too)
            interruptible = (
                stop.interruptible if world.is_main else lambda what: contextlib.nullcontext()
            )
            with interruptible("the start of the logger"), unchanged_rng():  # fails: a warning
                logger = on_main(lambda: start_logger(cfg.logger, run_dir, config), world, errors)
                logger = logger or NullLogger(run_dir, config)  # processes other than 0
            for epoch in _epochs_to_run(state, trainer):
                if epoch > state.progress.epoch:
                    run_epoch(
                        state,
                        comps.data,
                        trainer,
                        epoch,
                        logger,
                        stop,
                        paths.history if world.is_main else None,
                        save_last,
                        autocast_dtype,
                        world,
                    )
                    save_last()  # the trained epoch is safe before its (possibly long) evaluation
                if _eval_due(epoch, trainer) and state.progress.evaluated < epoch:
                    with interruptible(f"the evaluation of epoch {epoch}"):
                        evaluate(epoch)
            with interruptible("the figures and exports"):
                with unchanged_rng():
                    on_main(lambda: _finish(cfg, comps, state, run_dir), world, errors)
        logger.hparams(_flat(config, ("model", "objective", "trainer")), state.progress.metrics)
    except (DivergedError, StopRequested) as err:
        status = "diverged" if isinstance(err, DivergedError) else "interrupted"
        if isinstance(err, StopRequested) and paths.last.is_file():
            err = StopRequested(
                f"{err}; {paths.last} holds {state.progress.epoch} trained epochs, continue "
                f"with trainer.resume={run_dir} (redoes only what is missing)"
            )
        if world.is_main:
            record_outcome(
                run_dir,
                {"status": status, "epoch": epoch, "step": state.progress.step, "error": str(err)},
            )
        raise err from None
    finally:
        logger.close()
    return read_json(paths.metrics) if world.is_main else None


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
    run_dir: Path, progress: Progress, partial: Any, epochs: int
) -> dict[str, Any] | None:
    """The recorded final metrics when the run has nothing left to do for ``epochs``
    (trained, evaluated and finished: ``metrics.json`` says completed at that epoch)."""
    final = read_json(RunPaths(run_dir).metrics)
    if (
        partial is None
        and progress.epoch == progress.evaluated == epochs
        and isinstance(final, dict)
        and final.get("status") == "completed"
        and final.get("epoch") == epochs
    ):
        return final
    return None


def _prepare_run_dir(run_dir: Path, resumed: bool) -> None:
    """Create the run's folders and clear what killed processes left: temp files of
    writers (the lock is held, so no writer is alive) and, for a new run, lines a launch
    killed before its first ``last.pt`` appended."""
    paths = RunPaths(run_dir)
    for d in (paths.checkpoints, paths.samples):
        d.mkdir(parents=True, exist_ok=True)
    for d in (paths.root, paths.checkpoints, paths.samples, paths.eval_dir):
        remove_stale_temps(d)
    if not resumed:
        truncate_jsonl(paths.metrics_log, "epoch", 0)
        truncate_jsonl(paths.history, "step", 0)


def _set_up(
    cfg: DictConfig, trainer: TrainerConfig, device: torch.device, world: World = SINGLE
) -> tuple[Any, TrainState]:
    """Seed, build the components (:func:`dgm_runner.build.build_components`), one optimiser
    per parameter group, the EMA and (``trainer.compile``) the compiled loss. In a
    data-parallel run every process starts from process 0's weights (seeded alike, they are
    the same already) and CUDA batch norm becomes ``SyncBatchNorm``."""
    seed_everything(trainer.seed)
    comps = build_components(cfg, device)
    model, objective = comps.model, comps.objective
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
        name: make_optimizer(params, trainer)
        for name, params in objective.param_groups(model).items()
    }
    if trainer.compile:
        compile_objective(objective)
    state = TrainState(
        model,
        optimizers,
        objective,
        make_ema(model, trainer.ema_decay),
        torch.Generator().manual_seed(trainer.seed),
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


def _eval_due(epoch: int, trainer: TrainerConfig) -> bool:
    return epoch % trainer.eval_every == 0 or epoch == trainer.epochs


def _epochs_to_run(state: TrainState, trainer: TrainerConfig) -> range:
    """The epochs this launch visits: from the next one to train, or from the last trained
    one when its evaluation is still owed (a stop cut it short)."""
    p = state.progress
    owed = state.partial is None and p.evaluated < p.epoch and _eval_due(p.epoch, trainer)
    return range(p.epoch if owed else p.epoch + 1, trainer.epochs + 1)


def _evaluate_epoch(
    cfg: DictConfig,
    comps: Any,
    state: TrainState,
    epoch: int,
    logger: Any,
    run_dir: Path,
    save_last: Any,
) -> None:
    """Test metrics, the 8x8 grid and the ``metrics.jsonl`` record of ``epoch``; then
    ``last.pt`` (and ``best.pt`` when the monitored metric improved).

    Raises:
        DivergedError: a test metric is not finite.
    """
    trainer, progress, model = cfg.trainer, state.progress, state.eval_model
    paths = RunPaths(run_dir)
    started = time.perf_counter()
    metrics = all_test_metrics(cfg, model, comps, final=epoch == trainer.epochs)
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        raise DivergedError(f"non-finite test metrics at epoch {epoch}: {bad}")
    if comps.sampler.draws:  # the 8x8 grid of this epoch
        images = draw_samples(
            model,
            comps.sampler,
            trainer.n_samples,
            trainer.seed + 2,
            next(model.parameters()).device,
        )
        grid = save_samples(images, paths.grid(epoch), reference=comps.data.test_x)
        logger.image("samples", grid, progress.step)
    seconds = progress.epoch_times[-1] if progress.epoch_times else None
    record = {
        "epoch": epoch,
        "step": progress.step,
        "train/epoch_time_s": seconds,
        "eval_time_s": time.perf_counter() - started,  # test metrics and the grid
        **progress.train_means,
        **metrics,
    }
    append_jsonl(paths.metrics_log, record)
    logger.scalars(
        {**metrics, **({"train/epoch_time_s": seconds} if seconds is not None else {})},
        progress.step,
    )
    monitored = metrics[f"test/{comps.objective.monitor}"]
    improved = monitored < progress.best
    progress.metrics, progress.evaluated, progress.best = (
        metrics,
        epoch,
        min(progress.best, monitored),
    )
    save_last()
    if improved:
        atomic_copy(paths.last, paths.best)
    log.info(
        "epoch %d/%d (%s): %s",
        epoch,
        trainer.epochs,
        f"{seconds:.1f}s" if seconds is not None else "resumed",
        ", ".join(f"{k}={v:.4f}" for k, v in {**progress.train_means, **metrics}.items()),
    )


def _finish(cfg: DictConfig, comps: Any, state: TrainState, run_dir: Path) -> None:
    """Figures, exports, ``samples/final.png``, ``trainer.export_name`` and the final
    ``metrics.json`` (status completed) of a run whose last epoch is trained and evaluated."""
    trainer, progress, paths = cfg.trainer, state.progress, RunPaths(run_dir)
    for name, node in (cfg.get("figures") or {}).items():
        path = instantiate(node, _partial_=True)(
            model=state.eval_model, data=comps.data, run_dir=run_dir, seed=trainer.seed + 3
        )
        log.info("figure %s -> %s", name, path)
    for name, node in (cfg.get("exports") or {}).items():
        path = instantiate(node, _partial_=True)(
            model=state.eval_model, data=comps.data, run_dir=run_dir, metrics=progress.metrics
        )
        log.info("export %s -> %s", name, path)
    if paths.grid(progress.epoch).exists():
        atomic_copy(paths.grid(progress.epoch), paths.final_grid)
    if trainer.export_name:
        with atomic_open(paths.export(trainer.export_name), "wb") as f:
            torch.save(state.model.state_dict(), f)
    times = progress.epoch_times
    evals = [r["eval_time_s"] for r in read_jsonl(paths.metrics_log) if "eval_time_s" in r]
    write_json(
        paths.metrics,
        {
            "status": "completed",
            "epoch": progress.epoch,
            "monitor": f"test/{comps.objective.monitor}",
            "step": progress.step,
            "time_per_epoch_s": sum(times) / len(times) if times else None,
            "train_time_s": sum(times) if times else None,  # wall time, all launches
            "eval_time_s": sum(evals) if evals else None,
            "num_threads": torch.get_num_threads(),  # this launch's (trainer.num_threads)
            **progress.train_means,
            **progress.metrics,
        },
    )


def _flat(config: dict[str, Any], sections: tuple[str, ...]) -> dict[str, Any]:
    """``{"model.latent_dim": 20, ...}`` for the given top-level sections."""
    out = {}
    for section in sections:
        for key, value in (config.get(section) or {}).items():
            if not isinstance(value, (dict, list)):
                out[f"{section}.{key}"] = value
    return out
