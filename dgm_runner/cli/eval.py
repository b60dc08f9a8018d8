"""``dgm-eval RUN_DIR`` or ``dgm-eval SWEEP_ROOT``: recompute every test metric that
applies to a run from its checkpoint, write ``<run>/eval/metrics.json`` and print a table.

What "every metric" means comes from the run's own config: the objective's final
evaluation (free energy for RBMs; ELBO and IWAE NLL for VAEs; reconstruction,
perplexity and prior NLL for VQ-VAEs; ...) plus its ``sample_metrics`` (AIS for RBMs,
sample distances for toy data) plus the classifier-feature FID/KID of
:mod:`dgm_runner.metrics.fid` for every model that samples images (added from
``configs/sample_metrics/fid.yaml`` for runs trained before it existed; ``fid.<key>=``,
alias ``sample_metrics.fid.<key>=``, replaces that key of a run's own). A sweep root
is evaluated job by job, then its ``summary.csv/md`` are rebuilt with the new metrics.

Each record names what it was computed from (``epoch``, ``step``, ``checkpoint_sha256``,
``test_subset``, the FID classifier and its sha256), so readers can tell an evaluation of
the run's current checkpoint from a stale one (:mod:`dgm_runner.io.evaluations`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Collection

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dgm_runner import CONFIG_DIR
from dgm_runner.build import restore_run
from dgm_runner.cli.common import USER_ERRORS, main_with_run_dir, one_line_errors, sampler_overrides
from dgm_runner.config import EvalConfig, validate, validate_schema
from dgm_runner.evaluation import all_test_metrics, require_finite
from dgm_runner.io.atomic import check_writable, write_json
from dgm_runner.io.checkpoint import CheckpointError, checkpoint_file, file_sha256
from dgm_runner.io.evaluations import checkpoint_stamp
from dgm_runner.io.layout import RunPaths, check_layout
from dgm_runner.io.sweep_summary import job_labels, summarize_sweep
from dgm_runner.metrics.features import classifier_file
from dgm_runner.progress import track


def find_runs(root: str | Path) -> list[Path]:
    """``[root]`` for a run directory (it has ``checkpoints/``), else the job directories
    of a sweep root (children with ``checkpoints/`` or ``.hydra/``), numerically sorted.

    Raises:
        CheckpointError: ``root`` does not exist or holds neither.
    """
    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(f"{root} is not a directory")
    if RunPaths(root).checkpoints.is_dir():
        return [root]
    jobs = [
        p
        for p in root.iterdir()
        if p.is_dir() and (RunPaths(p).checkpoints.is_dir() or RunPaths(p).hydra.is_dir())
    ]
    if not jobs:
        raise CheckpointError(
            f"{root} is neither a run directory (no checkpoints/) nor a sweep root"
        )
    return sorted(jobs, key=lambda p: (len(p.name), p.name))


def _fid_config(run_cfg: DictConfig, fid: DictConfig | None, keys: Collection[str]) -> None:
    """Set the run's ``sample_metrics.fid`` for this evaluation: ``dgm-eval``'s ``fid``
    node (``configs/eval.yaml``) for a run trained without one (older than the metric);
    otherwise the run's own node with the ``keys`` the user set under ``fid.`` replaced."""
    if fid is None:
        return
    own = (run_cfg.get("sample_metrics") or {}).get("fid")
    if own is None:  # older than the metric: dgm-eval's node, the user's keys included
        OmegaConf.update(run_cfg, "sample_metrics.fid", fid, force_add=True)
        return
    for key in keys:
        OmegaConf.update(run_cfg, f"sample_metrics.fid.{key}", fid[key], merge=False)


def _fid_classifier(run_cfg: DictConfig, dataset: str) -> dict[str, str]:
    """``{"fid_classifier", "fid_classifier_sha256"}``: the classifier FID used (``shipped``
    or the file named) and the sha256 of its file."""
    classifier = str(run_cfg.sample_metrics.fid.get("classifier", "shipped"))
    return {
        "fid_classifier": classifier,
        "fid_classifier_sha256": file_sha256(classifier_file(dataset, classifier)),
    }


def evaluate_run(run_dir: Path, cfg: DictConfig, fid_keys: Collection[str] = ()) -> dict[str, Any]:
    """Recompute one run's test metrics and write them to ``<run_dir>/eval/metrics.json``
    (``eval/metrics_<sampler>_<key=value>_test_subset=<n>.json`` when ``sampler=`` /
    ``sampler.*`` chose another sampler or ``test_subset`` a part of the test split).

    Args:
        run_dir: the run; cfg: ``dgm-eval``'s config (``configs/eval.yaml``);
        fid_keys: the keys of ``cfg.fid`` the user set (``fid.<key>=``): they replace those
            of the run's own ``sample_metrics.fid``.

    Returns:
        ``{"checkpoint", "checkpoint_sha256", "epoch", "step", "n_test", "test/<metric>":
        value, ...}`` plus ``test_subset`` when set, ``fid_classifier`` and
        ``fid_classifier_sha256`` when FID ran, ``sampler`` for another sampler.

    Raises:
        CheckpointError, ConfigError, DataError: as :func:`dgm_runner.build.restore_run`.
        WriteError: an entry of the run directory is not what the contract says (e.g.
            ``eval`` a file or a link out of the run; before any work) or a write failed.
    """
    paths = RunPaths(run_dir)
    check_layout(run_dir)  # before any work: eval/ a file, or a link out of the run
    check_writable(paths.eval_dir)  # ... or a read-only run directory
    overrides = {"dataset.test_subset": cfg.test_subset} if cfg.test_subset else {}
    overrides.update(sampler_overrides(cfg))
    run_cfg, comps, ckpt = restore_run(run_dir, cfg.checkpoint, cfg.device, overrides)
    stamp = checkpoint_stamp(checkpoint_file(run_dir, cfg.checkpoint), ckpt)
    run_cfg.trainer.eval_batch_size = cfg.eval_batch_size
    _fid_config(run_cfg, cfg.get("fid"), fid_keys)
    validate(run_cfg)  # the fid.<key>= values too (fid.n_samples=1), before the evaluation
    metrics = all_test_metrics(run_cfg, comps.model, comps, final=True)
    require_finite(metrics, f"{run_dir} evaluated but nothing written")
    record = {
        "checkpoint": str(cfg.checkpoint),
        **stamp,
        "n_test": int(comps.data.test_x.shape[0]),
        **({"test_subset": int(cfg.test_subset)} if cfg.test_subset else {}),
        **(_fid_classifier(run_cfg, comps.data.name) if "test/fid" in metrics else {}),
        **metrics,
    }
    variant = [
        *([cfg.sampler_name] if cfg.get("sampler_name") else []),
        *(f"{k}={v}" for k, v in (cfg.get("sampler") or {}).items()),
    ]
    if variant:  # another sampler than the run's: its own file beside metrics.json
        record["sampler"] = OmegaConf.to_container(run_cfg.sampler, resolve=True)
    variant += [f"test_subset={cfg.test_subset}"] if cfg.test_subset else []
    write_json(paths.evaluation(variant), record)
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
    fid_keys = user_fid_keys(HydraConfig.get().overrides.task)
    root = Path(cfg.run_dir)
    runs = find_runs(root)
    results, failures = {}, {}
    labels = job_labels(runs) if len(runs) > 1 else {runs[0]: str(runs[0])}
    # a sweep: one bar (or a log line per 10 %) over its runs; each run's own steps inside
    for run_dir in track(runs, f"dgm-eval {root}", unit="run", show=len(runs) > 1):
        try:
            name = labels[run_dir]
            results[name] = evaluate_run(run_dir, cfg, fid_keys)
        except USER_ERRORS as err:
            if len(runs) == 1:
                raise
            label = "" if labels[run_dir] == run_dir.name else f" ({labels[run_dir]})"
            failures[run_dir.name + label] = f"{type(err).__name__}: {err}"
    if results:
        print(format_table(results))
    for name, line in failures.items():
        print(f"dgm-eval: job {name} not evaluated: {line}", file=sys.stderr)
    if len(runs) > 1 or not RunPaths(root).checkpoints.is_dir():
        summarize_sweep(root)
        print(f"sweep summary refreshed: {root / 'summary.md'}")
    return results


def rewrite_fid_args(argv: list[str]) -> list[str]:
    """``sample_metrics.fid.KEY=V`` (the spelling of ``dgm-train``) -> ``fid.KEY=V`` (the
    node of ``configs/eval.yaml``), with a ``+`` / ``~`` prefix kept."""
    alias = "sample_metrics.fid."
    out = []
    for arg in argv:
        prefix = arg[: len(arg) - len(arg.lstrip("+~"))]
        if arg[len(prefix) :].startswith(alias):
            arg = f"{prefix}fid.{arg[len(prefix) + len(alias) :]}"
        out.append(arg)
    return out


def user_fid_keys(overrides: list[str]) -> list[str]:
    """The keys of ``cfg.fid`` that the command-line ``overrides`` set (``fid.KEY=V`` ->
    ``KEY``; deletions ``~fid.KEY`` are not set)."""
    keys = []
    for arg in overrides:
        key = arg.split("=", 1)[0].lstrip("+")
        if key.startswith("fid.") and "=" in arg:
            keys.append(key[len("fid.") :].split(".")[0])
    return keys


def main() -> None:
    """Console entry point of ``dgm-eval``."""
    sys.argv = [sys.argv[0], *rewrite_fid_args(sys.argv[1:])]
    main_with_run_dir(_app, "dgm-eval", "eval")
