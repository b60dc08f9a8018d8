"""One open run: :class:`Run` holds what every phase of the training loop needs (the
config, the typed trainer settings, the components, the :class:`TrainState`, the logger,
the data-parallel world, the run directory's paths, the stop handler and the named random
streams) and does the run's writing: ``last.pt``, each epoch's evaluation, the end of the
run and the record of how it ended.

In a data-parallel run every process holds a ``Run``; its methods do their own process-0
checks (process 0 alone writes the run directory and evaluates, the others wait in the
same collective), so the loop that calls them has none (:mod:`dgm_runner.loop`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from dgm_runner.build import Components
from dgm_runner.config import TrainerConfig
from dgm_runner.distributed import World, broadcast_object, env_world, on_main
from dgm_runner.epoch import DivergedError
from dgm_runner.errors import USER_ERRORS
from dgm_runner.evaluation import all_test_metrics
from dgm_runner.io.artifacts import append_jsonl, read_jsonl, save_samples
from dgm_runner.io.atomic import WriteError, atomic_copy, atomic_open, read_json, write_json
from dgm_runner.io.checkpoint import capture_rng, save_checkpoint, unchanged_rng
from dgm_runner.io.layout import RunPaths
from dgm_runner.io.lock import holds_lock
from dgm_runner.io.loggers import NullLogger, start_logger
from dgm_runner.io.provenance import code_version, utc_now
from dgm_runner.io.run_dir import record_outcome as write_outcome
from dgm_runner.io.signals import GracefulStop, StopRequested
from dgm_runner.samplers.base import draw_samples
from dgm_runner.seeds import Seeds
from dgm_runner.train_state import TrainState

log = logging.getLogger("dgm_runner")

#: Errors process 0 raises in a phase the others wait for, raised as themselves there too
#: (:func:`dgm_runner.distributed.on_main`).
SHARED_ERRORS = {"DivergedError": DivergedError, "StopRequested": StopRequested}


@dataclass
class Run:
    """An open run: built, resumed if it was one, its directory prepared.

    Attributes:
        cfg: the composed config; trainer: its validated ``trainer`` node;
        world: this process's place in a data-parallel run;
        paths: the run directory's entries; comps: data, model, objective, sampler;
        state: weights, optimisers, EMA, counters (:class:`TrainState`);
        config: ``cfg`` resolved to plain values (what ``last.pt`` and the logger keep);
        seeds: the named random streams (:class:`dgm_runner.seeds.Seeds`);
        logger: the run's logger (a :class:`NullLogger` until :meth:`start_logger`, and on
            processes other than 0);
        stop: the stop-signal handler while the run trains (:meth:`stoppable`);
        epoch: the epoch being trained or evaluated (for the record of a stop);
        code: :func:`dgm_runner.io.provenance.code_version` when the run opened.
        init_from: where the initial weights came from (``trainer.init_from``: the info of
            :func:`dgm_runner.build.read_init_weights`), or None; kept in ``last.pt`` and
            ``metrics.json`` (``init_from``).
    """

    cfg: DictConfig
    trainer: TrainerConfig
    world: World
    paths: RunPaths
    comps: Components
    state: TrainState
    config: dict[str, Any]
    seeds: Seeds = field(init=False)
    logger: Any = field(init=False)
    stop: GracefulStop | None = None
    epoch: int = 0
    init_from: dict[str, Any] | None = None
    code: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.seeds = Seeds(self.trainer.seed)
        self.code = code_version()  # the code this launch runs (a commit made later is not)
        self.logger = NullLogger(self.paths.root, self.config)
        self.epoch = self.state.progress.epoch

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype of the training forward passes under ``torch.autocast``
        (``trainer.precision=bf16``), or None (full precision)."""
        return torch.bfloat16 if self.trainer.precision == "bf16" else None

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on process 0, the others waiting (:func:`dgm_runner.distributed.on_main`)."""
        return on_main(fn, self.world, SHARED_ERRORS)

    @contextlib.contextmanager
    def stoppable(self) -> Iterator[None]:
        """Turn stop signals into :attr:`stop`'s flag while the block runs
        (:class:`dgm_runner.io.signals.GracefulStop`)."""
        with GracefulStop() as self.stop:
            yield

    def interruptible(self, what: str) -> contextlib.AbstractContextManager:
        """Process 0: a stop signal ends ``what`` at once (:meth:`GracefulStop.interruptible`).
        The others wait in a collective meanwhile and keep the signal for their next step or
        the end of the run (:func:`dgm_runner.distributed.on_main` raises process 0's stop
        there too)."""
        if self.stop is None or not self.world.is_main:
            return contextlib.nullcontext()
        return self.stop.interruptible(what)

    # -- what the loop calls ------------------------------------------------------------

    def epochs_to_run(self) -> range:
        """The epochs this launch visits: from the next one to train, or from the last
        trained one when its evaluation is still owed (a stop cut it short)."""
        p = self.state.progress
        owed = self.state.partial is None and p.evaluated < p.epoch and self.eval_due(p.epoch)
        return range(p.epoch if owed else p.epoch + 1, self.trainer.epochs + 1)

    def eval_due(self, epoch: int) -> bool:
        """Whether ``epoch`` is evaluated: every ``trainer.eval_every`` epochs and the last."""
        return epoch % self.trainer.eval_every == 0 or epoch == self.trainer.epochs

    def start_logger(self) -> None:
        """Process 0's logger (:func:`dgm_runner.io.loggers.start_logger`; one that fails to
        start is a warning); the global RNGs are left as they were."""
        with self.interruptible("the start of the logger"), unchanged_rng():
            started = self.on_main(
                lambda: start_logger(self.cfg.logger, self.paths.root, self.config)
            )
        self.logger = started or self.logger

    def save_last(self, rng: dict[str, Any] | None = None) -> None:
        """Write ``last.pt`` (process 0), with the RNG states ``rng`` when given (those
        before an evaluation: what the training after it continues from)."""
        if not self.world.is_main:
            return
        payload = {
            **self.state.state_dict(self.config),
            "world_size": self.world.size,
            "num_threads": torch.get_num_threads(),  # auto keeps it on resume
        }
        if self.init_from is not None:  # trainer.init_from's weights: kept across resumes
            payload["init_from"] = self.init_from
        save_checkpoint(self.paths.last, payload if rng is None else {**payload, "rng": rng})

    def append_history(self, records: list[dict[str, float]]) -> None:
        """Append training / validation records to ``train_history.jsonl`` (process 0)."""
        if self.world.is_main:
            append_jsonl(self.paths.history, *records)

    def evaluate(self, epoch: int) -> None:
        """``epoch``'s evaluation on process 0 (:meth:`_evaluate`); then every process holds
        its progress. The global RNGs are left as they were: a run's training does not depend
        on which of its evaluations computed sample metrics, so an extended run follows a
        longer one."""
        self.epoch = epoch
        before = capture_rng(self.state.data_gen)  # what last.pt must hold after it
        with self.interruptible(f"the evaluation of epoch {epoch}"), unchanged_rng():
            self.on_main(lambda: self._evaluate(epoch, before))
        self.state.progress = broadcast_object(self.state.progress, self.world)

    def finish(self) -> None:
        """Figures, exports and the final ``metrics.json`` on process 0 (:meth:`_finish`);
        then the logger's hyper-parameter record."""
        with self.interruptible("the figures and exports"), unchanged_rng():
            self.on_main(self._finish)
        self.logger.hparams(
            _flat(self.config, ("model", "objective", "optimizer", "trainer")),
            self.state.progress.metrics,
        )

    def final_metrics(self) -> dict[str, Any] | None:
        """The final ``metrics.json`` (process 0; None on the others)."""
        return read_json(self.paths.metrics) if self.world.is_main else None

    def close(self) -> None:
        """Close the logger (flushes TensorBoard events, ends a tracker's run)."""
        self.logger.close()

    # -- process 0's work ---------------------------------------------------------------

    def _evaluate(self, epoch: int, rng_before: dict[str, Any]) -> None:
        """Test metrics, the 8x8 grid and the ``metrics.jsonl`` record of ``epoch``; then
        ``last.pt`` with ``rng_before`` (and ``best.pt`` when the monitored metric improved).

        Raises:
            DivergedError: a test metric is not finite.
        """
        progress, started = self.state.progress, time.perf_counter()
        metrics = all_test_metrics(
            self.cfg, self.state.eval_model, self.comps, final=epoch == self.trainer.epochs
        )
        bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
        if bad:
            raise DivergedError(f"non-finite test metrics at epoch {epoch}: {bad}")
        self._grid(epoch)
        seconds = progress.epoch_times[-1] if progress.epoch_times else None
        append_jsonl(
            self.paths.metrics_log,
            {
                "epoch": epoch,
                "step": progress.step,
                "train/epoch_time_s": seconds,
                "eval_time_s": time.perf_counter() - started,  # test metrics and the grid
                **progress.train_means,
                **metrics,
            },
        )
        timing = {"train/epoch_time_s": seconds} if seconds is not None else {}
        self.logger.scalars({**metrics, **timing}, progress.step)
        monitored = metrics[f"test/{self.comps.objective.monitor}"]
        improved = monitored < progress.best
        progress.metrics, progress.evaluated = metrics, epoch
        progress.best = min(progress.best, monitored)
        self.save_last(rng_before)
        if improved:
            atomic_copy(self.paths.last, self.paths.best)
        shown = ", ".join(f"{k}={v:.4f}" for k, v in {**progress.train_means, **metrics}.items())
        took = f"{seconds:.1f}s" if seconds is not None else "resumed"
        log.info("epoch %d/%d (%s): %s", epoch, self.trainer.epochs, took, shown)

    def _grid(self, epoch: int) -> None:
        """``samples/epoch_NNNN.png``: ``trainer.n_samples`` samples of the evaluated
        weights from the grid's stream (when the sampler draws)."""
        if not self.comps.sampler.draws:
            return
        model = self.state.eval_model
        device = next(model.parameters()).device
        images = draw_samples(
            model, self.comps.sampler, self.trainer.n_samples, self.seeds.grid, device
        )
        grid = save_samples(images, self.paths.grid(epoch), reference=self.comps.data.test_x)
        self.logger.image("samples", grid, self.state.progress.step)

    def _finish(self) -> None:
        """Figures, exports, ``samples/final.png``, ``trainer.export_name`` and the final
        ``metrics.json`` (status completed) of a run whose last epoch is trained and
        evaluated."""
        state, paths, progress = self.state, self.paths, self.state.progress
        for name, node in (self.cfg.get("figures") or {}).items():
            path = instantiate(node, _partial_=True)(
                model=state.eval_model,
                data=self.comps.data,
                run_dir=paths.root,
                seed=self.seeds.figures,
            )
            log.info("figure %s -> %s", name, path)
        for name, node in (self.cfg.get("exports") or {}).items():
            path = instantiate(node, _partial_=True)(
                model=state.eval_model,
                data=self.comps.data,
                run_dir=paths.root,
                metrics=progress.metrics,
            )
            log.info("export %s -> %s", name, path)
        if paths.grid(progress.epoch).exists():
            atomic_copy(paths.grid(progress.epoch), paths.final_grid)
        if self.trainer.export_name:
            with atomic_open(paths.export(self.trainer.export_name), "wb") as f:
                torch.save(state.model.state_dict(), f)
        write_json(paths.metrics, self._completed_record())

    def _completed_record(self) -> dict[str, Any]:
        """``metrics.json`` of a completed run: status, epochs, times over every launch,
        the model's parameter count, when it finished and with which code, the last
        epoch's train and test metrics."""
        progress, times = self.state.progress, self.state.progress.epoch_times
        evals = [r["eval_time_s"] for r in read_jsonl(self.paths.metrics_log) if "eval_time_s" in r]
        return {
            "status": "completed",
            "epoch": progress.epoch,
            "monitor": f"test/{self.comps.objective.monitor}",
            "step": progress.step,
            "time_per_epoch_s": sum(times) / len(times) if times else None,
            "train_time_s": sum(times) if times else None,  # wall time, all launches
            "eval_time_s": sum(evals) if evals else None,
            "num_threads": torch.get_num_threads(),  # this launch's (trainer.num_threads)
            "n_parameters": sum(p.numel() for p in self.state.model.parameters()),
            "finished": utc_now(),  # and the code: what a results table cites
            "code": self.code,
            **({"init_from": self.init_from} if self.init_from is not None else {}),
            **progress.train_means,
            **progress.metrics,
        }


def record_outcome(
    err: Exception,
    paths: RunPaths,
    world: World,
    held_a_run: bool,
    run: Run | None = None,
    job: bool = True,
) -> Exception:
    """The one place a run's end other than completion is written (process 0):
    ``metrics.json`` says ``diverged``, ``interrupted`` (with the epoch and step where it
    stopped) or ``failed``, with the error's line
    (:func:`dgm_runner.io.run_dir.record_outcome` keeps a completed run's results beside it).

    Nothing is recorded for a full disk (it cannot be), nor for a user error (an invalid
    value, missing data, an unusable checkpoint: :data:`dgm_runner.errors.USER_ERRORS`)
    in a directory that held a run before this launch (a refused resume: the run is as it
    was). A new run refused before it was open is recorded only for a ``dgm-train`` job
    (a sweep's summary lists it as failed; a single ``dgm-train`` then removes its
    directory); a direct :func:`dgm_runner.loop.train` call refused so writes nothing.

    Args:
        err: what ended the run; paths: the run directory; world: the processes;
        held_a_run: the directory held a run before this launch; run: the open run, or None
            when ``err`` came before it was open (checks, building, loading);
        job: the caller owns the directory (``dgm-train`` locked it before ``train()``).

    Returns:
        The error to raise: a stop's message says what ``last.pt`` holds and how to go on.
    """
    progress = run.state.progress if run is not None else None
    if isinstance(err, StopRequested) and progress is not None and paths.last.is_file():
        err = StopRequested(
            f"{err}; {paths.last} holds {progress.epoch} trained epochs, continue with "
            f"trainer.resume={paths.root} (redoes only what is missing)"
        )
    status = {DivergedError: "diverged", StopRequested: "interrupted"}.get(type(err), "failed")
    refused = isinstance(err, USER_ERRORS) and (held_a_run or (run is None and not job))
    if not world.is_main or isinstance(err, WriteError) or (status == "failed" and refused):
        return err
    record: dict[str, Any] = {"status": status}
    if status != "failed" and run is not None:  # where it stopped
        record.update(epoch=run.epoch, step=progress.step)
    record["error"] = f"{type(err).__name__}: {err}"
    try:
        write_outcome(paths.root, record)
    except WriteError:
        pass  # the error itself is what the user must see
    return err


class Outcome:
    """Records how a run ended: a context manager that, for an exception raised inside it,
    writes :func:`record_outcome` when this process holds the run directory's lock (a
    direct :func:`dgm_runner.loop.train` call refused before it took the lock writes
    nothing) and raises the error :func:`record_outcome` returns.

    Attributes:
        paths: the run directory; held_a_run: it held a run before this launch;
        job: the caller held the directory's lock already (a ``dgm-train`` job);
        world: the processes (set once joined; before, the launch's environment says);
        run: the open run, once it is open.
    """

    def __init__(self, paths: RunPaths, held_a_run: bool) -> None:
        self.paths, self.held_a_run = paths, held_a_run
        self.job = holds_lock(paths.root)
        self.world: World = env_world()
        self.run: Run | None = None

    def __enter__(self) -> "Outcome":
        return self

    def __exit__(self, kind: Any, err: BaseException | None, tb: Any) -> bool:
        if isinstance(err, Exception) and holds_lock(self.paths.root):
            raised = record_outcome(
                err, self.paths, self.world, self.held_a_run, self.run, self.job
            )
            if raised is not err:
                raise raised from None
        return False


def _flat(config: dict[str, Any], sections: tuple[str, ...]) -> dict[str, Any]:
    """``{"model.latent_dim": 20, ...}`` for the given top-level sections."""
    out = {}
    for section in sections:
        for key, value in (config.get(section) or {}).items():
            if not isinstance(value, (dict, list)):
                out[f"{section}.{key}"] = value
    return out
