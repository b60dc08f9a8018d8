"""``dgm-train``: the one training loop (``../DESIGN.md``, "One loop").

The loop never knows which model it runs: it builds the components named by the
config, iterates epochs over an in-memory random permutation, makes the updates the
objective declares (``Objective.steps``: one optimiser per parameter group, so GANs
alternate D and G without the loop knowing), keeps an optional EMA of the weights,
evaluates on the test split every ``trainer.eval_every`` epochs and writes the
run-directory contract (checkpoints, metrics, sample grids, figures, TensorBoard).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from dgm_runner import CONFIG_DIR, cli
from dgm_runner.build import build_components, resolve_device, seed_everything
from dgm_runner.config import ConfigError, check_group_choices, check_override_keys, validate
from dgm_runner.evaluation import all_test_metrics, draw_samples, evaluate
from dgm_runner.io.artifacts import append_jsonl, save_samples, truncate_jsonl
from dgm_runner.io.atomic import atomic_copy, atomic_open, remove_stale_temps, write_json
from dgm_runner.io.checkpoint import (
    CheckpointError, capture_rng, load_checkpoint, require_keys, restore_rng, save_checkpoint,
)
from dgm_runner.io.lock import RunDirLocked, acquire, release, run_lock
from dgm_runner.io.resume import check_same_run, find_unfinished_run
from dgm_runner.io.run_dir import MARKER, check_run_dir, check_run_paths, holds_run, hydra_output_subdir, record_outcome
from dgm_runner.io.signals import GracefulStop, StopRequested, watch_parent
from dgm_runner.objectives.base import Batch, Objective

log = logging.getLogger("dgm_runner")

class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


# trainer.optimizer_impl -> the implementations to try, in order (torch.optim keywords).
_OPTIMIZER_IMPLS: dict[str, tuple[dict[str, bool], ...]] = {
    "auto": ({"fused": True}, {"foreach": True}, {"foreach": False}),
    "fused": ({"fused": True},),
    "foreach": ({"foreach": True},),
    "for_loop": ({"foreach": False},),
}


def _make_optimizer(params, tcfg: DictConfig) -> torch.optim.Optimizer:
    """The optimiser of one parameter group: ``trainer.optimizer`` (adam | sgd) with
    ``trainer.lr``, ``betas`` / ``momentum`` and ``weight_decay``.

    ``trainer.optimizer_impl`` picks PyTorch's implementation: ``auto`` (default) takes
    the fused kernel where this torch build supports it for these parameters (CPU and
    CUDA float tensors in torch >= 2.4: one kernel per parameter instead of about ten
    elementwise ops; on this project's CPU the Adam step of VAE1 drops from about 2 ms to
    0.4 ms, ``scripts/bench.py``), else the multi-tensor ``foreach`` one, else the
    per-parameter loop. They compute the same update up to float rounding.

    Args:
        params: the parameters (an iterable of tensors).
        tcfg: the ``trainer`` config node.

    Returns:
        The optimiser; its ``param_groups[0]["fused"]`` / ``["foreach"]`` say which
        implementation was taken.

    Raises:
        ConfigError: ``optimizer_impl`` names an implementation that cannot be used here.
    """
    params = list(params)
    if tcfg.optimizer == "sgd":
        cls, kwargs = torch.optim.SGD, {"lr": tcfg.lr, "momentum": tcfg.momentum, "weight_decay": tcfg.weight_decay}
    else:
        cls, kwargs = torch.optim.Adam, {"lr": tcfg.lr, "betas": tuple(tcfg.betas), "weight_decay": tcfg.weight_decay}
    impl = tcfg.get("optimizer_impl", "auto")
    error: Exception | None = None
    for extra in _OPTIMIZER_IMPLS[impl]:
        try:
            return cls(params, **kwargs, **extra)
        except (RuntimeError, ValueError, TypeError) as err:  # unsupported device / dtype / torch
            error = err
    if impl == "auto" or not params:
        raise error  # e.g. an empty parameter list: not a config problem
    raise ConfigError(f"trainer.optimizer_impl={impl} cannot be used here: {error}".splitlines()[0])


def compile_objective(objective: Objective) -> bool:
    """``trainer.compile``: replace ``objective.loss`` by ``torch.compile(objective.loss)``.

    The compiled graph is the model's forward pass plus the loss terms (the backward
    pass is compiled too, by AOTAutograd); evaluation and sampling stay eager. Shapes
    are static, so a run compiles twice (full batches and the smaller last batch).
    Objectives whose ``steps()`` do not go through ``loss()`` (GANs: alternating updates,
    the WGAN-GP double backward) run eagerly, with a warning.

    Args:
        objective: the run's objective (modified in place).

    Returns:
        Whether the updates go through the compiled loss.
    """
    objective.loss = torch.compile(objective.loss, dynamic=False)
    steps = type(objective).steps
    if steps is Objective.steps:
        return True
    try:
        uses_loss = "self.loss(" in inspect.getsource(steps)
    except (OSError, TypeError):
        uses_loss = False
    if not uses_loss:
        log.warning("trainer.compile: %s makes its updates without loss(); training runs eagerly", type(objective).__name__)
    return uses_loss


class _Averager:
    """Running sums and counts of logged terms, kept on the device (one host sync per
    log interval). Terms may be logged at different rates (a GAN's generator loss
    every n_critic steps), so each key has its own count."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        for k, v in terms.items():
            if v.dtype in (torch.bfloat16, torch.float16):  # autocast terms: sum in float32
                v = v.float()
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1

    def merge(self, other: "_Averager") -> None:
        for k, v in other.sums.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + other.counts[k]

    def means(self) -> dict[str, float]:
        return {k: float(v) / self.counts[k] for k, v in self.sums.items()}

    def state_dict(self) -> dict[str, Any]:
        """Sums (tensors) and counts, for a mid-epoch checkpoint (weights_only-safe)."""
        return {"sums": dict(self.sums), "counts": dict(self.counts)}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> "_Averager":
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
    averager: _Averager | None = None,
    autocast_dtype: torch.dtype | None = None,
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
        optimizers[group].step()
        objective.after_step(group, model)
        if averager is not None:
            averager.add(terms)  # on device: no host sync per step


def make_ema(model: torch.nn.Module, decay: float | None) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of ``model``'s weights, or None when ``decay`` is None
    (Song et al. 2021 sample with EMA weights, decay 0.999).

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (the
    ``num_updates`` rule of TensorFlow's ExponentialMovingAverage), so short runs are not
    evaluated with weights that are still mostly the initialisation.
    """
    if decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel

    def ema_update(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        return d * averaged + (1.0 - d) * current

    return AveragedModel(model, avg_fn=ema_update)


#: Keys ``last.pt`` must hold to be resumed.
_RESUME_PAYLOAD = ("model", "objective", "epoch", "step", "best", "metrics", "rng", "config")
#: Optimiser settings a resumed run applies to the loaded optimiser state (instead of the
#: saved ones), logging each change; ``trainer.optimizer`` itself cannot change.
_OPTIMIZER_SETTINGS = ("lr", "betas", "momentum", "weight_decay")


def _check_resume_config(cfg: DictConfig, saved: dict[str, Any], path: Path) -> None:
    """Refuse a resume whose model / objective / dataset or optimiser differ from the run's.

    Raises:
        CheckpointError: one line naming the section that differs.
    """
    check_same_run(saved, OmegaConf.to_container(cfg, resolve=True), path, "resume")
    before, now = (saved.get("trainer") or {}).get("optimizer", "adam"), cfg.trainer.optimizer
    if before != now:
        raise CheckpointError(
            f"{path} was trained with trainer.optimizer={before}; its state cannot continue as "
            f"trainer.optimizer={now}: resume with trainer.optimizer={before}"
        )


def _apply_optimizer_settings(optimizers: dict[str, torch.optim.Optimizer], fresh: dict[str, list[dict]],
                              saved_trainer: dict[str, Any], tcfg: DictConfig) -> None:
    """After ``load_state_dict``: put this run's ``trainer.lr`` / ``betas`` / ``momentum`` /
    ``weight_decay`` (and implementation flags) back into the loaded param groups, which
    ``load_state_dict`` replaced by the saved ones, and log every setting that changed."""
    for name, opt in optimizers.items():
        for group, settings in zip(opt.param_groups, fresh[name]):
            group.update(settings)
    for key in _OPTIMIZER_SETTINGS:
        before, now = saved_trainer.get(key), OmegaConf.to_container(tcfg, resolve=True).get(key)
        if before is not None and (list(before) if isinstance(before, (list, tuple)) else before) != (
            list(now) if isinstance(now, (list, tuple)) else now
        ):
            log.info("trainer.%s changed on resume: %s -> %s (applied to the loaded optimiser)", key, before, now)


@dataclass
class _Progress:
    """Where a run stands: what ``last.pt`` records besides the weights and optimisers.

    ``epoch``: epochs whose training finished; ``evaluated``: the last epoch whose test
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

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> "_Progress":
        """Checkpoints written before evaluation and training were saved apart hold no
        ``evaluated`` (they were written after the evaluation: ``evaluated = epoch``)."""
        return cls(
            epoch=ckpt["epoch"], step=ckpt["step"], best=ckpt["best"], evaluated=ckpt.get("evaluated", ckpt["epoch"]),
            metrics=ckpt["metrics"], train_means=ckpt.get("train_means") or {},
            epoch_times=list(ckpt.get("epoch_times") or []),
        )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _already_complete(run_dir: Path, progress: _Progress, partial: Any, epochs: int) -> dict[str, Any] | None:
    """The recorded final metrics when the run has nothing left to do for ``epochs``
    (trained, evaluated and finished: ``metrics.json`` says completed at that epoch)."""
    final = _read_json(run_dir / "metrics.json")
    if partial is None and progress.epoch == epochs and progress.evaluated == epochs and isinstance(final, dict) \
            and final.get("status") == "completed" and final.get("epoch") == epochs:
        return final
    return None


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
        RunDirLocked: another process holds ``run_dir`` (nothing written).
        ConfigError: an invalid value, found before any training.
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
    validate(cfg)  # before anything is created
    with run_lock(run_dir):
        return _train(cfg, run_dir)


def _train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    check_run_dir(run_dir, cfg.trainer.resume)  # never write over another run
    tcfg = cfg.trainer
    resume = tcfg.resume
    if resume == "auto":  # hydra.run.dir already points at the unfinished run, if any
        resume = str(run_dir) if holds_run(run_dir) else None
    device = resolve_device(tcfg.device)
    ckpt: dict[str, Any] | None = None
    progress, partial = _Progress(), None  # partial: position inside an epoch stopped by a signal
    if resume:  # everything about the checkpoint is checked before anything is written
        last = Path(resume) / "checkpoints" / "last.pt"
        if not last.is_file():
            raise CheckpointError(f"trainer.resume={resume} holds no run (no {MARKER}): pass a run directory")
        ckpt = load_checkpoint(last, map_location=device)
        require_keys(ckpt, _RESUME_PAYLOAD, last, "resume")
        _check_resume_config(cfg, ckpt["config"], last)
        progress, partial = _Progress.from_checkpoint(ckpt), ckpt.get("partial")
        if progress.epoch > tcfg.epochs:
            raise ConfigError(
                f"trainer.epochs={tcfg.epochs} is below the {progress.epoch} epochs {resume} has trained: "
                f"resume with trainer.epochs>={progress.epoch}"
            )
        done = _already_complete(Path(resume), progress, partial, tcfg.epochs)
        if done is not None:  # nothing to do: nothing written (not even a log line)
            print(f"{resume} already completed {tcfg.epochs} epochs: nothing to do "
                  f"(trainer.epochs>{tcfg.epochs} trains on)", file=sys.stderr)
            return done
    ckpt_dir, sample_dir = run_dir / "checkpoints", run_dir / "samples"
    for d in (ckpt_dir, sample_dir):
        d.mkdir(parents=True, exist_ok=True)
    for d in (run_dir, ckpt_dir, sample_dir, run_dir / "eval"):  # we hold the lock: no writer is alive
        remove_stale_temps(d)

    if tcfg.get("num_threads"):  # e.g. 1 on a machine shared with other jobs (scripts/bench.py)
        torch.set_num_threads(tcfg.num_threads)
    seed_everything(tcfg.seed)
    comps = build_components(cfg, device)
    model, objective, sampler, data = comps.model, comps.objective, comps.sampler, comps.data
    if tcfg.get("channels_last", False):  # NHWC conv kernels (CUDA tensor cores); 4-D weights only
        model.to(memory_format=torch.channels_last)
    autocast_dtype = torch.bfloat16 if tcfg.get("precision", "fp32") == "bf16" else None
    optimizers = {name: _make_optimizer(params, tcfg) for name, params in objective.param_groups(model).items()}
    if tcfg.get("compile", False):
        compile_objective(objective)
    ema = make_ema(model, tcfg.ema_decay)
    eval_model = ema.module if ema is not None else model  # EMA weights for eval and sampling
    data_gen = torch.Generator().manual_seed(tcfg.seed)

    if ckpt is not None:
        last = Path(resume) / "checkpoints" / "last.pt"
        fresh = {name: [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
                 for name, opt in optimizers.items()}
        # checkpoints written before per-group optimisers (the GAN) hold one "optimizer"
        saved_opts = ckpt["optimizers"] if "optimizers" in ckpt else {"model": ckpt.get("optimizer")}
        try:
            model.load_state_dict(ckpt["model"])
            for name, opt in optimizers.items():
                if saved_opts.get(name) is None:
                    raise CheckpointError(f"{last} has no optimiser state for parameter group {name!r}: cannot resume")
                opt.load_state_dict(saved_opts[name])
            objective.load_state_dict(ckpt["objective"])
            if ema is not None and ckpt.get("ema") is not None:
                ema.load_state_dict(ckpt["ema"])
        except (RuntimeError, ValueError, KeyError) as err:
            if isinstance(err, CheckpointError):
                raise
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"{last}: its state does not fit the model in its config ({first})") from None
        _apply_optimizer_settings(optimizers, fresh, ckpt["config"].get("trainer") or {}, tcfg)
        restore_rng(ckpt["rng"], data_gen)
        truncate_jsonl(run_dir / "metrics.jsonl", "epoch", progress.evaluated)  # lines a killed process wrote
        truncate_jsonl(run_dir / "train_history.jsonl", "step", progress.step)  # after its last.pt
        log.info("resumed from %s after epoch %d (step %d)", last, progress.epoch, progress.step)
    else:  # a launch killed before its first last.pt may have left lines: this run starts them anew
        truncate_jsonl(run_dir / "metrics.jsonl", "epoch", 0)
        truncate_jsonl(run_dir / "train_history.jsonl", "step", 0)

    logger = instantiate(cfg.logger, log_dir=run_dir / "tb")
    config_dict = OmegaConf.to_container(cfg, resolve=True)
    n, bs = data.train_x.shape[0], tcfg.batch_size
    steps_per_epoch = math.ceil(n / bs)
    history: list[dict[str, float]] = []  # train terms per log interval, val terms; flushed per epoch
    log.info(
        "%s: %s on %s (%d train / %d test images, %s), %d parameters, device %s",
        cfg.get("experiment_name", "run"), type(model).__name__, data.name, n,
        data.test_x.shape[0], "binarized" if data.binarized else "grey",
        sum(p.numel() for p in model.parameters()), device,
    )

    def save_last(partial_position: dict[str, Any] | None = None) -> None:
        """Write ``last.pt``: everything the run needs to continue from ``progress``."""
        save_checkpoint(ckpt_dir / "last.pt", {
            "model": model.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
            "objective": objective.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "rng": capture_rng(data_gen),
            "config": config_dict,
            "partial": partial_position,
            **progress.state_dict(),
        })

    def eval_due(e: int) -> bool:
        return e % tcfg.eval_every == 0 or e == tcfg.epochs

    stop = GracefulStop()
    epoch = progress.epoch
    try:
        stop.__enter__()
        # an epoch trained but not evaluated (a stop during its evaluation) is evaluated first
        first = progress.epoch if partial is None and progress.evaluated < progress.epoch and eval_due(progress.epoch) \
            else progress.epoch + 1
        for epoch in range(first, tcfg.epochs + 1):
            if epoch > progress.epoch:  # train this epoch
                t0 = time.perf_counter()
                if partial is None:
                    perm, start = torch.randperm(n, generator=data_gen).to(device), 0
                    window, epoch_terms, in_window = _Averager(), _Averager(), 0
                else:  # continue the epoch a signal stopped, from the next batch
                    perm, start, in_window = partial["perm"].to(device), partial["batch"], partial["in_window"]
                    window = _Averager.from_state(partial["window"])
                    epoch_terms = _Averager.from_state(partial["epoch_terms"])
                    partial = None
                bar = tqdm(
                    range(start, steps_per_epoch), desc=f"epoch {epoch}/{tcfg.epochs}", leave=False,
                    disable=not tcfg.progress, dynamic_ncols=True, initial=start, total=steps_per_epoch,
                )
                for i in bar:
                    idx = perm[i * bs : (i + 1) * bs]
                    # index_select: a plain row gather, ~5x cheaper on CPU than x[idx]'s advanced indexing
                    batch = Batch(data.train_x.index_select(0, idx), data.train_y.index_select(0, idx))
                    train_step(model, objective, optimizers, batch, progress.step, window, autocast_dtype)
                    if ema is not None:
                        ema.update_parameters(model)
                    progress.step += 1
                    in_window += 1
                    if in_window == tcfg.log_every or i == steps_per_epoch - 1:
                        means = {f"train/{k}": v for k, v in window.means().items()}
                        bad = {k: v for k, v in means.items() if not math.isfinite(v)}
                        if bad:
                            raise DivergedError(f"non-finite training loss at epoch {epoch}, step {progress.step}: {bad}")
                        logger.scalars(means, progress.step)
                        history.append({"step": progress.step, **means})
                        bar.set_postfix({k[6:]: f"{v:.4g}" for k, v in means.items()}, refresh=False)
                        epoch_terms.merge(window)
                        window, in_window = _Averager(), 0
                    if tcfg.val_every_steps and progress.step % tcfg.val_every_steps == 0:
                        val = evaluate(
                            eval_model, objective, data.test_x[: tcfg.val_size], data.test_y[: tcfg.val_size],
                            tcfg.eval_batch_size, tcfg.seed + 1, prefix="val",
                        )
                        logger.scalars(val, progress.step)
                        history.append({"step": progress.step, **val})
                    if stop.requested:  # finish this step, save the exact position, exit
                        append_jsonl(run_dir / "train_history.jsonl", *history)
                        save_last({
                            "epoch": epoch, "batch": i + 1, "perm": perm.cpu(), "in_window": in_window,
                            "window": window.state_dict(), "epoch_terms": epoch_terms.state_dict(),
                        })
                        raise StopRequested(f"{stop.requested} received: stopped at epoch {epoch}, step {progress.step}")
                bar.close()
                append_jsonl(run_dir / "train_history.jsonl", *history)
                history = []
                progress.epoch_times.append(time.perf_counter() - t0)
                progress.train_means = {f"train/{k}": v for k, v in epoch_terms.means().items()}
                progress.epoch = epoch
                save_last()  # the trained epoch is safe before its (possibly long) evaluation

            if eval_due(epoch) and progress.evaluated < epoch:
                with stop.interruptible(f"the evaluation of epoch {epoch}"):
                    _evaluate_epoch(cfg, eval_model, comps, progress, epoch, logger, run_dir, save_last)
        with stop.interruptible("the figures and exports"):
            _finish(cfg, eval_model, model, data, progress, run_dir)
    except DivergedError as err:
        record_outcome(run_dir, {"status": "diverged", "epoch": epoch, "step": progress.step, "error": str(err)})
        logger.close()
        raise
    except StopRequested as err:
        where = (f"; {ckpt_dir / 'last.pt'} holds {progress.epoch} trained epochs, continue with "
                 f"trainer.resume={run_dir} (redoes only what is missing)") if (ckpt_dir / "last.pt").is_file() else ""
        err = StopRequested(f"{err}{where}")
        record_outcome(run_dir, {"status": "interrupted", "epoch": epoch, "step": progress.step, "error": str(err)})
        logger.close()
        raise err from None
    except BaseException:
        logger.close()
        raise
    finally:
        stop.__exit__()
    final = _read_json(run_dir / "metrics.json")
    logger.hparams(_flat(config_dict, ("model", "objective", "trainer")), progress.metrics)
    logger.close()
    return final


def _evaluate_epoch(cfg: DictConfig, eval_model: torch.nn.Module, comps: Any, progress: _Progress, epoch: int,
                    logger: Any, run_dir: Path, save_last: Any) -> None:
    """Test metrics, the 8x8 grid and the ``metrics.jsonl`` record of ``epoch``; then
    ``last.pt`` (and ``best.pt`` when the monitored metric improved).

    Raises:
        DivergedError: a test metric is not finite.
    """
    tcfg, ckpt_dir = cfg.trainer, run_dir / "checkpoints"
    metrics = all_test_metrics(cfg, eval_model, comps, final=epoch == tcfg.epochs)
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        raise DivergedError(f"non-finite test metrics at epoch {epoch}: {bad}")
    if comps.sampler.draws:  # the 8x8 grid of this epoch
        images = draw_samples(eval_model, comps.sampler, tcfg.n_samples, tcfg.seed + 2, next(eval_model.parameters()).device)
        grid = save_samples(images, run_dir / "samples" / f"epoch_{epoch:04d}.png", reference=comps.data.test_x)
        logger.image("samples", grid, progress.step)
    seconds = progress.epoch_times[-1] if progress.epoch_times else None
    record = {"epoch": epoch, "step": progress.step, "train/epoch_time_s": seconds, **progress.train_means, **metrics}
    append_jsonl(run_dir / "metrics.jsonl", record)
    logger.scalars({**metrics, **({"train/epoch_time_s": seconds} if seconds is not None else {})}, progress.step)
    monitored = metrics[f"test/{comps.objective.monitor}"]
    improved = monitored < progress.best
    progress.metrics, progress.evaluated, progress.best = metrics, epoch, min(progress.best, monitored)
    save_last()
    if improved:
        atomic_copy(ckpt_dir / "last.pt", ckpt_dir / "best.pt")
    log.info(
        "epoch %d/%d (%s): %s", epoch, tcfg.epochs, f"{seconds:.1f}s" if seconds is not None else "resumed",
        ", ".join(f"{k}={v:.4f}" for k, v in {**progress.train_means, **metrics}.items()),
    )


def _finish(cfg: DictConfig, eval_model: torch.nn.Module, model: torch.nn.Module, data: Any, progress: _Progress,
            run_dir: Path) -> None:
    """Figures, exports, ``samples/final.png``, ``trainer.export_name`` and the final
    ``metrics.json`` (status completed) of a run whose last epoch is trained and evaluated."""
    tcfg, sample_dir = cfg.trainer, run_dir / "samples"
    for name, node in (cfg.get("figures") or {}).items():
        path = instantiate(node, _partial_=True)(model=eval_model, data=data, run_dir=run_dir, seed=tcfg.seed + 3)
        log.info("figure %s -> %s", name, path)
    for name, node in (cfg.get("exports") or {}).items():
        path = instantiate(node, _partial_=True)(model=eval_model, data=data, run_dir=run_dir, metrics=progress.metrics)
        log.info("export %s -> %s", name, path)
    if (sample_dir / f"epoch_{progress.epoch:04d}.png").exists():
        atomic_copy(sample_dir / f"epoch_{progress.epoch:04d}.png", sample_dir / "final.png")
    if tcfg.export_name:
        with atomic_open(run_dir / tcfg.export_name, "wb") as f:
            torch.save(model.state_dict(), f)
    times = progress.epoch_times
    write_json(run_dir / "metrics.json", {
        "status": "completed",
        "epoch": progress.epoch,
        "step": progress.step,
        "time_per_epoch_s": sum(times) / len(times) if times else None,
        **progress.train_means,
        **progress.metrics,
    })


def _flat(config: dict[str, Any], sections: tuple[str, ...]) -> dict[str, Any]:
    """``{"model.latent_dim": 20, ...}`` for the given top-level sections."""
    out = {}
    for section in sections:
        for key, value in (config.get(section) or {}).items():
            if not isinstance(value, (dict, list)):
                out[f"{section}.{key}"] = value
    return out


# Errors that are the user's to fix (or a requested stop): one line, no traceback.
USER_ERRORS = (*cli.USER_ERRORS, DivergedError, StopRequested)

#: Set by :func:`main` to its PID: a job running in another process (a joblib worker)
#: watches it and stops when the driver dies.
DRIVER_ENV = "DGM_SWEEP_DRIVER_PID"


class SweepStopped(BaseException):
    """A stop signal ended a job of an in-process (basic launcher) multirun: the sweep stops
    too (a BaseException, so Hydra's launcher does not take it for a failed job and go on).

    Attributes:
        sweep_dir: the sweep root, whose summary is written for the jobs done so far.
    """

    def __init__(self, line: str, sweep_dir: str) -> None:
        super().__init__(line)
        self.sweep_dir = sweep_dir


def _objective_value(final: dict[str, Any], metric: str) -> float | None:
    """The float a Hydra sweeper that optimises (Optuna) reads as the job's return value."""
    value = final.get(metric)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        known = ", ".join(k for k, v in final.items() if "/" in k and isinstance(v, (int, float)))
        log.error("optimize_metric=%s is not a final metric of this run; known: %s", metric, known)
        return None
    return float(value)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> dict[str, Any] | float | None:
    """The Hydra task: train one job. Returns the final metrics, or, when
    ``optimize_metric`` is set (Optuna sweeps), that metric as a float; a failed job of
    a multirun returns None (the sweep goes on; the summary and Optuna mark it failed).
    A stop signal in a basic-launcher multirun raises :class:`SweepStopped` (the sweep ends).

    Nothing is written into a directory another process holds, and a completed run's
    results are never replaced by a failure (:func:`dgm_runner.io.run_dir.record_outcome`).
    """
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    driver = os.environ.get(DRIVER_ENV)
    in_worker = multirun and driver is not None and driver.isdigit() and int(driver) != os.getpid()
    if in_worker:  # a joblib (loky) worker: stop this job if the driver dies
        watch_parent(int(driver))
    try:
        acquire(run_dir)  # usually held already (taken when Hydra resolved hydra.output_subdir)
    except (RunDirLocked, OSError) as err:
        return _report_failure(err, multirun, hc)
    held_a_run = holds_run(run_dir)  # a resumed or refused launch: keep its metrics.json
    try:
        final = train(cfg, run_dir)
        metric = cfg.get("optimize_metric")
        return _objective_value(final, metric) if metric else final
    except Exception as err:
        line = f"{type(err).__name__}: {err}"
        if not isinstance(err, (DivergedError, StopRequested, cli.WriteError)) and not (
            held_a_run and isinstance(err, USER_ERRORS)
        ):
            try:
                record_outcome(run_dir, {"status": "failed", "error": line})
            except cli.WriteError:
                pass
        if not isinstance(err, USER_ERRORS):
            log.error(traceback.format_exc())
        if multirun and isinstance(err, StopRequested) and not in_worker:
            raise SweepStopped(f"dgm-train: error: {line}; the sweep stopped", hc.sweep.dir) from None
        return _report_failure(err, multirun, hc)
    finally:
        release(run_dir)


def _report_failure(err: BaseException, multirun: bool, hc: Any) -> None:
    """A failed job: in a multirun, log it and return None (the sweep goes on); otherwise
    print one line for a user error (exit 2 for a ConfigError, else 1) or re-raise."""
    line = f"{type(err).__name__}: {err}"
    if multirun:  # the sweep goes on; the summary marks this job failed
        log.error("job failed: %s", line)
        return None
    if isinstance(err, (*USER_ERRORS, RunDirLocked)):
        print(f"dgm-train: error: {line}", file=sys.stderr)
        sys.exit(2 if isinstance(err, ConfigError) else 1)
    raise err


def _run_dir_for(resume: str | None, default: str, overrides: list[str] | None = None) -> str:
    """``hydra.run.dir``: the resumed run's directory; for ``trainer.resume=auto`` the newest
    unfinished run of this experiment launched with the same overrides (else a new one)."""
    if resume == "auto":
        found = find_unfinished_run(Path(default).parent, list(overrides or []))
        return str(found) if found is not None else default
    return resume or default


def _register_resolvers() -> None:
    # hydra.run.dir is the resumed run's directory when trainer.resume is set.
    if not OmegaConf.has_resolver("dgm_run_dir"):
        OmegaConf.register_new_resolver("dgm_run_dir", _run_dir_for)
    # hydra.output_subdir: Hydra saves no .hydra/ files over a directory that holds a run.
    if not OmegaConf.has_resolver("dgm_hydra_subdir"):
        OmegaConf.register_new_resolver("dgm_hydra_subdir", hydra_output_subdir)


def main() -> None:
    """Console entry point of ``dgm-train`` / ``python -m dgm_runner``.

    Before Hydra creates a directory: unknown group entries, misspelt keys, and
    ``trainer.resume`` / ``hydra.run.dir`` values that are no run directory are one line
    each (exit status 2)."""
    _register_resolvers()
    argv = sys.argv[1:]
    try:
        check_group_choices(argv)
        check_override_keys(argv, "train")
        check_run_paths(argv)
    except ConfigError as err:
        print(f"dgm-train: error: ConfigError: {err}", file=sys.stderr)
        sys.exit(2)
    os.environ[DRIVER_ENV] = str(os.getpid())
    try:
        _hydra_main()
    except SweepStopped as stopped:
        from dgm_runner.io.sweep_summary import summarize_sweep

        if Path(stopped.sweep_dir).is_dir():
            summarize_sweep(Path(stopped.sweep_dir))
        print(f"{stopped} (summary of the jobs so far: {Path(stopped.sweep_dir) / 'summary.md'})", file=sys.stderr)
        sys.exit(1)
    from dgm_runner.io.sweep_summary import INCOMPLETE  # filled by a multirun's summary

    if INCOMPLETE.get("failed"):  # the other jobs completed; the exit status says not all did
        print(
            f"dgm-train: error: {INCOMPLETE['failed']} of {INCOMPLETE['jobs']} sweep jobs did not complete "
            f"(errors in {Path(INCOMPLETE['sweep_dir']) / 'summary.md'})",
            file=sys.stderr,
        )
        sys.exit(1)


_register_resolvers()
