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
import logging
import math
import sys
import time
import traceback
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
from dgm_runner.config import ConfigError, check_group_choices, validate
from dgm_runner.evaluation import all_test_metrics, draw_samples, evaluate
from dgm_runner.io.artifacts import append_jsonl, save_samples, truncate_jsonl
from dgm_runner.io.atomic import atomic_copy, atomic_open, write_json
from dgm_runner.io.checkpoint import CheckpointError, capture_rng, load_checkpoint, restore_rng, save_checkpoint
from dgm_runner.io.resume import find_unfinished_run
from dgm_runner.io.run_dir import check_run_dir, holds_run, hydra_output_subdir
from dgm_runner.io.signals import GracefulStop, StopRequested
from dgm_runner.objectives.base import Batch, Objective

log = logging.getLogger("dgm_runner")

# Config sections whose change makes a checkpoint incompatible with a resumed run.
_RESUME_KEYS = ("model", "objective", "dataset")


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


def _new_option_at_default(node: dict[str, Any], key: str) -> bool:
    """Whether ``node[key]`` is a constructor argument of ``node["_target_"]`` at its default:
    an option added to the code after a checkpoint was written (e.g. ``objective.log_every``),
    which changes nothing for a run that never had it."""
    target = node.get("_target_")
    if not isinstance(target, str):
        return False
    try:
        from hydra.utils import get_method

        param = inspect.signature(get_method(target)).parameters.get(key)
    except Exception:  # not importable / no signature: treat as a real difference
        return False
    return param is not None and param.default is not inspect.Parameter.empty and param.default == node[key]


def _same_config(saved: Any, current: Any) -> bool:
    """``saved == current`` except for options the saved config predates (at their defaults)."""
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in saved.keys() | current.keys():
            if key not in saved:
                if not _new_option_at_default(current, key):
                    return False
            elif key not in current or not _same_config(saved[key], current[key]):
                return False
        return True
    return saved == current


def _check_resume_config(cfg: DictConfig, saved: dict[str, Any], path: Path) -> None:
    current = OmegaConf.to_container(cfg, resolve=True)
    for key in _RESUME_KEYS:
        if not _same_config(saved.get(key), current.get(key)):
            raise CheckpointError(
                f"{path} was trained with a different {key} config ({saved.get(key)}); "
                f"refusing to resume with {current.get(key)}"
            )


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train, evaluate and write every artifact of one run into ``run_dir``.

    Args:
        cfg: a composed ``train`` config (model, dataset, objective, sampler, trainer, logger).
        run_dir: the run directory (created if needed).

    Returns:
        The final metrics (also written to ``metrics.json``).

    Raises:
        ConfigError: an invalid value, found before any training.
        DataError: the dataset is missing or corrupt.
        CheckpointError: ``trainer.resume`` points at an unusable checkpoint.
        DivergedError: the loss became non-finite (``metrics.json`` has status "diverged",
            the last good ``last.pt`` is kept).
        StopRequested: SIGINT/SIGTERM arrived; the current step was finished and
            ``last.pt`` written with the position inside the epoch, so ``trainer.resume``
            continues exactly there.
    """
    validate(cfg)
    check_run_dir(run_dir, cfg.trainer.resume)  # never write over another run
    tcfg = cfg.trainer
    run_dir = Path(run_dir)
    resume = tcfg.resume
    if resume == "auto":  # hydra.run.dir already points at the unfinished run, if any
        resume = str(run_dir) if holds_run(run_dir) else None
    ckpt_dir, sample_dir = run_dir / "checkpoints", run_dir / "samples"
    for d in (ckpt_dir, sample_dir):
        d.mkdir(parents=True, exist_ok=True)

    device = resolve_device(tcfg.device)
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

    epoch, step, best = 0, 0, math.inf
    metrics: dict[str, Any] = {}
    partial: dict[str, Any] | None = None  # position inside an epoch stopped by a signal
    if resume:
        last = Path(resume) / "checkpoints" / "last.pt"
        ckpt = load_checkpoint(last, map_location=device)
        _check_resume_config(cfg, ckpt["config"], last)
        model.load_state_dict(ckpt["model"])
        # checkpoints written before per-group optimisers (the GAN) hold one "optimizer"
        saved_opts = ckpt["optimizers"] if "optimizers" in ckpt else {"model": ckpt.get("optimizer")}
        for name, opt in optimizers.items():
            if saved_opts.get(name) is None:
                raise CheckpointError(f"{last} has no optimiser state for parameter group {name!r}: cannot resume")
            opt.load_state_dict(saved_opts[name])
        objective.load_state_dict(ckpt["objective"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.load_state_dict(ckpt["ema"])
        epoch, step, best = ckpt["epoch"], ckpt["step"], ckpt["best"]
        metrics = ckpt["metrics"]
        partial = ckpt.get("partial")
        restore_rng(ckpt["rng"], data_gen)
        truncate_jsonl(run_dir / "metrics.jsonl", "epoch", epoch)  # lines a killed process wrote
        truncate_jsonl(run_dir / "train_history.jsonl", "step", step)  # after its last.pt
        log.info("resumed from %s after epoch %d (step %d)", last, epoch, step)

    logger = instantiate(cfg.logger, log_dir=run_dir / "tb")
    config_dict = OmegaConf.to_container(cfg, resolve=True)
    n, bs = data.train_x.shape[0], tcfg.batch_size
    steps_per_epoch = math.ceil(n / bs)
    epoch_times: list[float] = []
    history: list[dict[str, float]] = []  # train terms per log interval, val terms; flushed per epoch
    train_means: dict[str, float] = {}
    log.info(
        "%s: %s on %s (%d train / %d test images, %s), %d parameters, device %s",
        cfg.get("experiment_name", "run"), type(model).__name__, data.name, n,
        data.test_x.shape[0], "binarized" if data.binarized else "grey",
        sum(p.numel() for p in model.parameters()), device,
    )

    def payload(**extra: Any) -> dict[str, Any]:
        """Everything ``last.pt`` holds (``extra``: epoch, best, partial)."""
        return {
            "model": model.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
            "objective": objective.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "step": step,
            "metrics": metrics,
            "rng": capture_rng(data_gen),
            "config": config_dict,
            **extra,
        }

    stop = GracefulStop()
    try:
        stop.__enter__()
        for epoch in range(epoch + 1, tcfg.epochs + 1):
            t0 = time.perf_counter()
            if partial is None:
                perm, first = torch.randperm(n, generator=data_gen).to(device), 0
                window, epoch_terms, in_window = _Averager(), _Averager(), 0
            else:  # continue the epoch a signal stopped, from the next batch
                perm, first, in_window = partial["perm"].to(device), partial["batch"], partial["in_window"]
                window, epoch_terms = _Averager.from_state(partial["window"]), _Averager.from_state(partial["epoch_terms"])
                partial = None
            bar = tqdm(
                range(first, steps_per_epoch), desc=f"epoch {epoch}/{tcfg.epochs}", leave=False,
                disable=not tcfg.progress, dynamic_ncols=True, initial=first, total=steps_per_epoch,
            )
            for i in bar:
                idx = perm[i * bs : (i + 1) * bs]
                # index_select: a plain row gather, ~5x cheaper on CPU than x[idx]'s advanced indexing
                batch = Batch(data.train_x.index_select(0, idx), data.train_y.index_select(0, idx))
                train_step(model, objective, optimizers, batch, step, window, autocast_dtype)
                if ema is not None:
                    ema.update_parameters(model)
                step += 1
                in_window += 1
                if in_window == tcfg.log_every or i == steps_per_epoch - 1:
                    means = {f"train/{k}": v for k, v in window.means().items()}
                    bad = {k: v for k, v in means.items() if not math.isfinite(v)}
                    if bad:
                        raise DivergedError(f"non-finite training loss at epoch {epoch}, step {step}: {bad}")
                    logger.scalars(means, step)
                    history.append({"step": step, **means})
                    bar.set_postfix({k[6:]: f"{v:.4g}" for k, v in means.items()}, refresh=False)
                    epoch_terms.merge(window)
                    window, in_window = _Averager(), 0
                if tcfg.val_every_steps and step % tcfg.val_every_steps == 0:
                    val = evaluate(
                        eval_model, objective, data.test_x[: tcfg.val_size], data.test_y[: tcfg.val_size],
                        tcfg.eval_batch_size, tcfg.seed + 1, prefix="val",
                    )
                    logger.scalars(val, step)
                    history.append({"step": step, **val})
                if stop.requested:  # finish this step, save the exact position, exit
                    append_jsonl(run_dir / "train_history.jsonl", *history)
                    position = {
                        "epoch": epoch, "batch": i + 1, "perm": perm.cpu(), "in_window": in_window,
                        "window": window.state_dict(), "epoch_terms": epoch_terms.state_dict(),
                    }
                    save_checkpoint(ckpt_dir / "last.pt", payload(epoch=epoch - 1, best=best, partial=position))
                    raise StopRequested(
                        f"{stop.requested} received: stopped at epoch {epoch}, step {step}; {ckpt_dir / 'last.pt'} "
                        f"saved, continue with trainer.resume={run_dir}"
                    )
            bar.close()
            append_jsonl(run_dir / "train_history.jsonl", *history)
            history = []
            epoch_times.append(time.perf_counter() - t0)
            train_means = {f"train/{k}": v for k, v in epoch_terms.means().items()}

            if epoch % tcfg.eval_every == 0 or epoch == tcfg.epochs:
                metrics = all_test_metrics(cfg, eval_model, comps, final=epoch == tcfg.epochs)
                bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
                if bad:
                    raise DivergedError(f"non-finite test metrics at epoch {epoch}: {bad}")
                if sampler.draws:  # the 8x8 grid of this epoch
                    images = draw_samples(eval_model, sampler, tcfg.n_samples, tcfg.seed + 2, device)
                    grid = save_samples(images, sample_dir / f"epoch_{epoch:04d}.png", reference=data.test_x)
                    logger.image("samples", grid, step)
                record = {"epoch": epoch, "step": step, "train/epoch_time_s": epoch_times[-1], **train_means, **metrics}
                append_jsonl(run_dir / "metrics.jsonl", record)
                logger.scalars({**metrics, "train/epoch_time_s": epoch_times[-1]}, step)
                monitored = metrics[f"test/{objective.monitor}"]
                save_checkpoint(ckpt_dir / "last.pt", payload(epoch=epoch, best=min(best, monitored), partial=None))
                if monitored < best:
                    best = monitored
                    atomic_copy(ckpt_dir / "last.pt", ckpt_dir / "best.pt")
                log.info(
                    "epoch %d/%d (%.1fs): %s", epoch, tcfg.epochs, epoch_times[-1],
                    ", ".join(f"{k}={v:.4f}" for k, v in {**train_means, **metrics}.items()),
                )
    except DivergedError as err:
        write_json(run_dir / "metrics.json", {"status": "diverged", "epoch": epoch, "step": step, "error": str(err)})
        logger.close()
        raise
    except StopRequested as err:
        write_json(run_dir / "metrics.json", {"status": "interrupted", "epoch": epoch, "step": step, "error": str(err)})
        logger.close()
        raise
    finally:
        stop.__exit__()

    for name, node in (cfg.get("figures") or {}).items():
        path = instantiate(node, _partial_=True)(model=eval_model, data=data, run_dir=run_dir, seed=tcfg.seed + 3)
        log.info("figure %s -> %s", name, path)
    for name, node in (cfg.get("exports") or {}).items():
        path = instantiate(node, _partial_=True)(model=eval_model, data=data, run_dir=run_dir, metrics=metrics)
        log.info("export %s -> %s", name, path)
    if (sample_dir / f"epoch_{epoch:04d}.png").exists():
        atomic_copy(sample_dir / f"epoch_{epoch:04d}.png", sample_dir / "final.png")
    if tcfg.export_name:
        with atomic_open(run_dir / tcfg.export_name, "wb") as f:
            torch.save(model.state_dict(), f)
    final = {
        "status": "completed",
        "epoch": epoch,
        "step": step,
        "time_per_epoch_s": sum(epoch_times) / len(epoch_times) if epoch_times else None,
        **train_means,
        **metrics,
    }
    write_json(run_dir / "metrics.json", final)
    logger.hparams(_flat(config_dict, ("model", "objective", "trainer")), metrics)
    logger.close()
    return final


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
    a multirun returns None (the sweep goes on; the summary and Optuna mark it failed)."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    held_a_run = holds_run(run_dir)  # a resumed or refused launch: keep its metrics.json
    try:
        final = train(cfg, run_dir)
        metric = cfg.get("optimize_metric")
        return _objective_value(final, metric) if metric else final
    except Exception as err:
        line = f"{type(err).__name__}: {err}"
        if not isinstance(err, (DivergedError, StopRequested)) and not (held_a_run and isinstance(err, USER_ERRORS)):
            write_json(run_dir / "metrics.json", {"status": "failed", "error": line})
        if not isinstance(err, USER_ERRORS):
            log.error(traceback.format_exc())
        if multirun:  # the sweep goes on; the summary marks this job failed
            log.error("job failed: %s", line)
            return None
        if isinstance(err, USER_ERRORS):
            print(f"dgm-train: error: {line}", file=sys.stderr)
            sys.exit(2 if isinstance(err, ConfigError) else 1)
        raise


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
    """Console entry point of ``dgm-train`` / ``python -m dgm_runner``."""
    _register_resolvers()
    try:
        check_group_choices(sys.argv[1:])
    except ConfigError as err:
        print(f"dgm-train: error: ConfigError: {err}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()
    from dgm_runner.io.sweep_summary import INCOMPLETE  # filled by a multirun's summary

    if INCOMPLETE.get("failed"):  # the other jobs completed; the exit status says not all did
        print(
            f"dgm-train: error: {INCOMPLETE['failed']} of {INCOMPLETE['jobs']} sweep jobs did not complete "
            f"(errors in {Path(INCOMPLETE['sweep_dir']) / 'summary.md'})",
            file=sys.stderr,
        )
        sys.exit(1)


_register_resolvers()
