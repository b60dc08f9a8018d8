"""``dgm-eval RUN_DIR`` or ``dgm-eval SWEEP_ROOT``: recompute every test metric that
applies to a run from its checkpoint, write ``<run>/eval/metrics.json`` and print a table.

What "every metric" means comes from the run's own config: the objective's final
evaluation (free energy for RBMs; ELBO and IWAE NLL for VAEs; reconstruction,
perplexity and prior NLL for VQ-VAEs; ...) plus its ``sample_metrics`` (AIS for RBMs,
sample distances for toy data) plus the classifier-feature FID/KID of
:mod:`dgm_runner.metrics.fid` for every model that samples images (added from
``configs/sample_metrics/fid.yaml`` for runs trained before it existed). A sweep root
is evaluated job by job, then its ``summary.csv/md`` are rebuilt with the new metrics.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from dgm_runner import CONFIG_DIR
from dgm_runner.build import restore_run
from dgm_runner.cli.common import USER_ERRORS, main_with_run_dir, one_line_errors, sampler_overrides
from dgm_runner.config import EvalConfig, validate_schema
from dgm_runner.evaluation import all_test_metrics
from dgm_runner.io.atomic import write_json
from dgm_runner.io.checkpoint import CheckpointError
from dgm_runner.io.sweep_summary import summarize_sweep


def find_runs(root: str | Path) -> list[Path]:
    """``[root]`` for a run directory (it has ``checkpoints/``), else the job directories
    of a sweep root (children with ``checkpoints/`` or ``.hydra/``), numerically sorted.

    Raises:
        CheckpointError: ``root`` does not exist or holds neither.
    """
    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(f"{root} is not a directory")
    if (root / "checkpoints").is_dir():
        return [root]
    jobs = [
        p
        for p in root.iterdir()
        if p.is_dir() and ((p / "checkpoints").is_dir() or (p / ".hydra").is_dir())
    ]
    if not jobs:
        raise CheckpointError(
            f"{root} is neither a run directory (no checkpoints/) nor a sweep root"
        )
    return sorted(jobs, key=lambda p: (len(p.name), p.name))


def evaluate_run(run_dir: Path, cfg: DictConfig) -> dict[str, Any]:
    """Recompute one run's test metrics and write them to ``<run_dir>/eval/metrics.json``
    (``eval/metrics_<sampler>_<key=value>.json`` when ``sampler=`` / ``sampler.*`` chose
    another sampler).

    Returns:
        ``{"checkpoint", "epoch", "n_test", "test/<metric>": value, ...}``.

    Raises:
        CheckpointError, ConfigError, DataError: as :func:`dgm_runner.build.restore_run`.
    """
    overrides = {"dataset.test_subset": cfg.test_subset} if cfg.test_subset else {}
    overrides.update(sampler_overrides(cfg))
    run_cfg, comps, ckpt = restore_run(run_dir, cfg.checkpoint, cfg.device, overrides)
    run_cfg.trainer.eval_batch_size = cfg.eval_batch_size
    if cfg.get("fid") is not None and "fid" not in (
        run_cfg.get("sample_metrics") or {}
    ):  # runs older than the metric
        OmegaConf.update(run_cfg, "sample_metrics.fid", cfg.fid, force_add=True)
    metrics = all_test_metrics(run_cfg, comps.model, comps, final=True)
    record = {
        "checkpoint": str(cfg.checkpoint),
        "epoch": ckpt["epoch"],
        "n_test": int(comps.data.test_x.shape[0]),
        **metrics,
    }
    sampler_args = [
        *([cfg.sampler_name] if cfg.get("sampler_name") else []),
        *(f"{k}={v}" for k, v in (cfg.get("sampler") or {}).items()),
    ]
    if sampler_args:  # another sampler than the run's: its own file beside metrics.json
        record["sampler"] = OmegaConf.to_container(run_cfg.sampler, resolve=True)
        write_json(run_dir / "eval" / f"metrics_{'_'.join(sampler_args)}.json", record)
    else:
        write_json(run_dir / "eval" / "metrics.json", record)
    return record


def format_table(rows: dict[str, dict[str, Any]]) -> str:
    """A plain-text table: one column per run, one row per metric (missing: ``-``)."""
    names = list(rows)
    keys = sorted({k for r in rows.values() for k in r if "/" in k})
    header = ["metric", *names]
    body = [
        [k, *(f"{rows[n][k]:.6g}" if isinstance(rows[n].get(k), float) else "-" for n in names)]
        for k in keys
    ]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths)) for line in [header, *body]
    )


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
@one_line_errors("dgm-eval")
def _app(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    validate_schema("", cfg, EvalConfig)
    root = Path(cfg.run_dir)
    runs = find_runs(root)
    results, failures = {}, {}
    for run_dir in runs:
        try:
            results[run_dir.name if len(runs) > 1 else str(run_dir)] = evaluate_run(run_dir, cfg)
        except USER_ERRORS as err:
            if len(runs) == 1:
                raise
            failures[run_dir.name] = f"{type(err).__name__}: {err}"
    if results:
        print(format_table(results))
    for name, line in failures.items():
        print(f"dgm-eval: job {name} not evaluated: {line}", file=sys.stderr)
    if len(runs) > 1 or not (root / "checkpoints").is_dir():
        summarize_sweep(root)
        print(f"sweep summary refreshed: {root / 'summary.md'}")
    return results


def main() -> None:
    """Console entry point of ``dgm-eval``."""
    main_with_run_dir(_app, "dgm-eval", "eval")
