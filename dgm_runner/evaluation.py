"""Test-split evaluation (the objective's per-example metrics, then the sample-based ones),
shared by the loop and dgm-eval."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from dgm_runner import eval_times
from dgm_runner.metrics.stats import standard_error
from dgm_runner.objectives.base import Batch, Objective
from dgm_runner.progress import Bar
from dgm_runner.seeds import Seeds

log = logging.getLogger("dgm_runner")


class NonFiniteError(ValueError):
    """A metric or a sample is NaN or infinite: it is not written as a result (one line)."""


def require_finite(metrics: dict[str, Any], what: str) -> None:
    """Refuse NaN / infinite float values in ``metrics``.

    Args:
        metrics: ``{name: value}``; non-float values are ignored.
        what: what is refused, for the message (e.g. ``"run R: not written"``).

    Raises:
        NonFiniteError: one line naming the non-finite metrics.
    """
    bad = {k: v for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)}
    if bad:
        names = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise NonFiniteError(f"non-finite metrics ({names}): {what}")


@torch.inference_mode()  # no autograd bookkeeping at all (cheaper than no_grad)
def evaluate_split(
    model: torch.nn.Module,
    objective: Objective,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    seed: int,
    final: bool = False,
    prefix: str = "test",
) -> dict[str, float]:
    """Average ``objective.evaluate`` over the whole split, in batches.

    Randomness (e.g. the VAE's z draw) comes from a generator seeded with ``seed``, so
    the same checkpoint always gives the same numbers.

    Args:
        x: ``(N, C, H, W)`` images; y: ``(N,)`` labels (same device as the model).
        final: compute the end-of-run metrics too (see ``Objective.evaluate``).
        prefix: the split name put before each metric (``test``, ``val``).

    Returns:
        ``{"<prefix>/<name>": mean over the N examples}`` (units as the objective documents),
        and ``"<prefix>/<name>_se"``, the standard error of that mean
        (:func:`dgm_runner.metrics.stats.standard_error`, in float64), for each name of
        ``objective.standard_errors(final)`` when ``N >= 2``.
    """
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    sums: dict[str, torch.Tensor] = {}
    kept: dict[str, list[torch.Tensor]] = {name: [] for name in objective.standard_errors(final)}
    with Bar(x.shape[0], f"{prefix} metrics", "image") as bar:
        for start in range(0, x.shape[0], batch_size):
            batch = Batch(x[start : start + batch_size], y[start : start + batch_size])
            out = objective.evaluate(model, batch, gen, final=final)
            for key, value in out.items():
                sums[key] = sums.get(key, 0.0) + value.sum()
                if key in kept:
                    kept[key].append(value.double())
            bar.update(batch.x.shape[0])
    model.train(was_training)
    metrics = {f"{prefix}/{k}": float(v) / x.shape[0] for k, v in sums.items()}
    for key, parts in kept.items():
        if parts and x.shape[0] > 1:
            metrics[f"{prefix}/{key}_se"] = standard_error(torch.cat(parts))
    return metrics


def all_test_metrics(
    cfg: DictConfig, model: torch.nn.Module, comps, final: bool
) -> dict[str, float]:
    """The objective's test metrics (:func:`evaluate`) plus every ``sample_metrics`` entry of
    the config (``test/<name>``; e.g. AIS log-likelihood, sample distances).

    Args:
        cfg: the run's config; model: the weights to evaluate (EMA if any);
        comps: the run's :class:`dgm_runner.build.Components`; final: last evaluation.
    """
    tcfg, data, seeds = cfg.trainer, comps.data, Seeds(cfg.trainer.seed)
    # _partial_: runtime objects are passed to the call, not through OmegaConf
    nodes = (cfg.get("sample_metrics") or {}).values()
    fns = [instantiate(node, _partial_=True) for node in nodes if node is not None]
    steps = plan_steps(model, comps, fns) if final else [None] * (len(fns) + 1)
    where = eval_times.context(model, data.test_x.device)
    if final:
        log.info(evaluation_plan(model, comps, fns, where))
    start = time.monotonic()
    metrics = evaluate_split(
        model,
        comps.objective,
        data.test_x,
        data.test_y,
        tcfg.eval_batch_size,
        seeds.test_metrics,
        final=final,
    )
    if steps[0]:
        eval_times.record(steps[0], where, time.monotonic() - start)
    for fn, step in zip(fns, steps[1:]):
        start = time.monotonic()
        extra = fn(
            model=model,
            sampler=comps.sampler,
            data=data,
            seed=seeds.sample_metrics,
            final=final,
        )
        metrics.update({f"test/{k}": v for k, v in extra.items()})
        if step and extra:
            eval_times.record(step, where, time.monotonic() - start)
    return metrics


def plan_steps(model: torch.nn.Module, comps: Any, fns: list[Any]) -> list[str | None]:
    """What each step of a final evaluation will do: the test metrics first, then one entry
    per ``sample_metrics`` function, said by its ``describe(model=, sampler=, data=, **its
    keys)`` attribute (``None``: it will skip), else by its name.

    Args:
        model: the weights to evaluate; comps: the run's components;
        fns: the ``sample_metrics`` entries, instantiated as partials.

    Returns:
        ``len(fns) + 1`` entries, e.g. ``["test metrics (10000 images)", "FID (10000
        samples, gibbs 1000 sweeps)", None]``.
    """
    iwae_k = getattr(comps.objective, "iwae_k", 0)
    iwae = f", IWAE k={iwae_k}" if iwae_k else ""
    steps: list[str | None] = [f"test metrics ({comps.data.test_x.shape[0]} images{iwae})"]
    for fn in fns:
        target = getattr(fn, "func", fn)
        describe = getattr(target, "describe", None)
        if describe is None:
            steps.append(getattr(target, "__name__", type(target).__name__))
            continue
        keywords = getattr(fn, "keywords", {})
        steps.append(describe(model=model, sampler=comps.sampler, data=comps.data, **keywords))
    return steps


def evaluation_plan(
    model: torch.nn.Module, comps: Any, fns: list[Any], where: str | None = None
) -> str:
    """The line logged when a final evaluation starts: what will run and, where an earlier
    run on this machine timed the same kind of step (:mod:`dgm_runner.eval_times`), roughly
    how long, e.g. ``final evaluation (~1.6 min): test metrics (10000 images) ~2 s, FID
    (10000 samples, gibbs 1000 sweeps) ~67 s, AIS (100 runs x 14501 temperatures) ~25 s``.

    Args:
        model, comps, fns: as :func:`plan_steps`;
        where: :func:`dgm_runner.eval_times.context` of the run (``None``: no estimates).
    """
    parts, known = [], []
    store = eval_times.load() if where else {}  # read once for every step of the plan
    for step in plan_steps(model, comps, fns):
        if not step:
            continue
        seconds = eval_times.estimate(step, where, store) if where else None
        parts.append(step if seconds is None else f"{step} {eval_times.duration(seconds)}")
        known.append(seconds)
    total = ""
    if known and all(s is not None for s in known):
        total = f" ({eval_times.duration(sum(known))})"
    elif any(s is not None for s in known):
        total = f" (at least {eval_times.duration(sum(s for s in known if s))})"
    return f"final evaluation{total}: " + ", ".join(parts)
