"""Hydra callback: when a multirun ends, summarise its jobs in the sweep root.

Writes ``summary.csv`` (one row per job: the swept overrides, the status, wall time per
epoch, error line and every final metric), ``summary.md`` (the same rows, with only the
columns that differ between jobs: the values every job shares are one header line above
the table) and ``summary_<metric>.png``, each metric that differs against the swept value.
Each job's ``on_job_end`` prints how many of the sweep's jobs are done (:func:`sweep_progress`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from dgm_runner.io.atomic import write_text
from dgm_runner.io.evaluations import evaluations, with_current_evaluation
from dgm_runner.io.layout import RunPaths
from dgm_runner.io.markdown import md_text
from dgm_runner.io.plots import pyplot, save_figure

log = logging.getLogger("dgm_runner")

_INFO = ("status", "epoch", "time_per_epoch_s", "num_threads", "error")


def _job_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for job_dir in sorted(sweep_dir.iterdir(), key=lambda p: (len(p.name), p.name)):
        job = RunPaths(job_dir)
        if not job.overrides_yaml.is_file():
            continue
        metrics_file = job.metrics
        try:
            metrics = json.loads(metrics_file.read_text())
        except (OSError, json.JSONDecodeError):
            metrics = {"status": "failed", "error": _crash_note(sweep_dir, job_dir)}
        # metrics recomputed by `dgm-eval <sweep root>` (e.g. FID) win, when of the job's
        # current checkpoint, on the full test split and finite
        metrics = with_current_evaluation(metrics, evaluations(job_dir))
        rows.append({"job": job_dir.name, "overrides": _overrides(job_dir), "metrics": metrics})
    return rows


def _crash_note(sweep_dir: Path, job_dir: Path) -> str:
    """The error of a job that wrote no metrics.json (killed, out of memory, still running)."""
    note = "no metrics.json (job crashed, was killed or is still running)"
    log_file = RunPaths(job_dir).log
    if (sweep_dir / ".submitit").is_dir():
        note += f"; see {sweep_dir / '.submitit'} for the scheduler's logs"
    elif log_file.is_file():
        note += f"; see {log_file}"
    return note


def _overrides(job_dir: Path) -> dict[str, str]:
    """``{key: value}`` of a job's ``.hydra/overrides.yaml`` (empty when missing or torn)."""
    file = RunPaths(job_dir).overrides_yaml
    try:
        pairs = (yaml.safe_load(file.read_text()) or []) if file.is_file() else []
    except (OSError, yaml.YAMLError):
        pairs = []
    return dict(str(o).split("=", 1) for o in pairs if "=" in str(o))


def _swept(overrides: list[dict[str, str]]) -> list[str]:
    """The override keys whose value differs between the jobs (a key a job lacks differs)."""
    keys = sorted({k for o in overrides for k in o})
    return _varying([{k: o.get(k, "") for k in keys} for o in overrides], keys)


def _varying(table: list[dict[str, Any]], columns: list[str]) -> list[str]:
    """The ``columns`` whose value is not the same in every row (a missing value counts as
    a value: a metric a failed job lacks varies). With one row, all of them."""
    if len(table) < 2:
        return list(columns)
    return [c for c in columns if len({str(r.get(c, "")) for r in table}) > 1]


def job_labels(job_dirs: list[Path]) -> dict[Path, str]:
    """Each job directory's label by its swept values, e.g. ``model.latent_dim=10`` (the
    overrides in ``.hydra/overrides.yaml`` that differ between the jobs, joined by ``, ``);
    the directory's name when there is nothing to tell the jobs apart or the label would
    repeat. Used for ``dgm-eval SWEEP_ROOT``'s table."""
    overrides = {job_dir: _overrides(job_dir) for job_dir in job_dirs}
    swept = _swept(list(overrides.values())) if len(overrides) > 1 else []
    labels = {
        d: ", ".join(f"{k}={o[k]}" for k in swept if k in o) or d.name for d, o in overrides.items()
    }
    if len(set(labels.values())) < len(labels):
        return {d: d.name for d in job_dirs}
    return labels


def _number(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def summarize_sweep(sweep_dir: str | Path, plots: bool = True) -> list[dict[str, Any]]:
    """Write ``summary.csv``, ``summary.md`` and (if ``plots``) per-metric plots into
    ``sweep_dir``, from every ``<sweep_dir>/<job>/.hydra/overrides.yaml`` and
    ``metrics.json`` there; works for any launcher or sweeper that uses Hydra's job
    directories (basic, joblib, submitit, Optuna).

    Returns:
        The table rows (one dict per job, keys: job, swept keys, status, metrics).
    """
    sweep_dir = Path(sweep_dir)
    jobs = _job_rows(sweep_dir)
    if not jobs:
        return []
    swept = _swept([j["overrides"] for j in jobs]) or sorted(
        {k for j in jobs for k in j["overrides"]}
    )
    metric_keys = sorted({k for j in jobs for k in j["metrics"] if "/" in k})
    columns = ["job", *swept, *_INFO, *metric_keys]
    table = []
    for j in jobs:
        row = {"job": j["job"], **{k: j["overrides"].get(k, "") for k in swept}}
        row.update({k: j["metrics"].get(k, "") for k in (*_INFO, *metric_keys)})
        table.append(row)

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(table)
    write_text(sweep_dir / "summary.csv", buf.getvalue())
    write_text(sweep_dir / "summary.md", _markdown(jobs, table, columns))
    if not plots:
        return table
    _plot(sweep_dir, table, swept, _varying(table, metric_keys))
    n_failed = sum(r["status"] != "completed" for r in table)
    log.info(
        "sweep summary: %d jobs (%d not completed) -> %s",
        len(table),
        n_failed,
        sweep_dir / "summary.md",
    )
    return table


def _markdown(jobs: list[dict[str, Any]], table: list[dict[str, Any]], columns: list[str]) -> str:
    """``summary.md``: a line with what every job shares (overrides not swept, a status or
    metric equal in every row), then the table of the columns that differ (``job`` and
    ``status`` always)."""

    def fmt(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    shown = ["job", "status", *_varying(table, columns)]
    shown = [c for c in columns if c in shown]
    shared = [
        f"{k}={v}"
        for k, v in sorted({k: v for j in jobs for k, v in j["overrides"].items()}.items())
        if all(j["overrides"].get(k) == v for j in jobs) and k not in shown
    ]
    shared += [f"{c}={fmt(table[0][c])}" for c in columns if c not in shown and table[0][c] != ""]
    md = []
    if len(table) > 1 and shared:
        md += [f"Same in all {len(table)} jobs: " + ", ".join(md_text(v) for v in shared), ""]
    md += ["| " + " | ".join(map(md_text, shown)) + " |", "|" + "---|" * len(shown)]
    md += ["| " + " | ".join(md_text(fmt(r[c])) for c in shown) + " |" for r in table]
    return "\n".join(md) + "\n"


def _plot(
    sweep_dir: Path, table: list[dict[str, Any]], swept: list[str], metric_keys: list[str]
) -> None:
    plt = pyplot()
    x_label = ", ".join(swept)
    xs = [", ".join(str(r[k]) for k in swept) for r in table]
    numeric = len(swept) == 1 and all(isinstance(_number(x), float) for x in xs)
    for metric in metric_keys:
        points = [(x, r[metric]) for x, r in zip(xs, table) if isinstance(r[metric], (int, float))]
        if not points:
            continue
        if numeric:
            points.sort(key=lambda p: float(p[0]))
        fig, ax = plt.subplots(figsize=(5, 3.5))
        px = [float(p[0]) if numeric else p[0] for p in points]
        ax.plot(px, [p[1] for p in points], "o-")
        if numeric:
            ax.set_xticks(px)
            ax.set_xticklabels([p[0] for p in points])
        ax.set_xlabel(x_label)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} vs {x_label}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        save_figure(fig, sweep_dir / f"summary_{metric.replace('/', '_')}.png", bbox_inches=None)


def planned_jobs(sweep_dir: Path) -> int | None:
    """How many jobs the multirun in ``sweep_dir`` launches, from the ``multirun.yaml``
    Hydra writes there first: the Optuna sweeper's ``n_trials``, else the product of the
    sweep overrides' lengths (``a=1,2 b=x,y,z``: 6; what Hydra's basic sweeper runs).
    ``None`` when unknown (no file, or a sweeper of another kind)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        config = yaml.safe_load((sweep_dir / "multirun.yaml").read_text()) or {}
        hydra_cfg = config.get("hydra") or {}
        sweeper = hydra_cfg.get("sweeper") or {}
        if "n_trials" in sweeper:
            return int(sweeper["n_trials"])
        if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
            return None
        total = 1
        parsed = OverridesParser.create().parse_overrides(hydra_cfg["overrides"]["task"])
        for override in parsed:
            if override.is_sweep_override():
                total *= len(list(override.sweep_string_iterator()))
        return total
    except Exception:  # progress is a courtesy: an unreadable plan is just unknown
        return None


def sweep_progress(sweep_dir: Path, table: list[dict[str, Any]]) -> str:
    """The line each job of a multirun logs at its end, e.g. ``sweep: 3 of 8 jobs done
    (1 not completed) -> <sweep_dir>/summary.md``; without a known plan, ``3 jobs done``.
    A job counts as done once it has written its ``metrics.json`` (completed, failed,
    diverged, interrupted): a parallel job still running is not done yet."""
    ended = [r for r in table if RunPaths(sweep_dir / str(r["job"])).metrics.is_file()]
    done, bad = len(ended), sum(r["status"] != "completed" for r in ended)
    total = planned_jobs(sweep_dir)
    count = f"{done} of {total}" if total else str(done)
    return (
        f"sweep: {count} jobs done ({bad} not completed) -> {sweep_dir / 'summary.md'}"
        if bad
        else f"sweep: {count} jobs done -> {sweep_dir / 'summary.md'}"
    )


class SweepSummary(Callback):
    """Registered in ``configs/train.yaml`` under ``hydra.callbacks``.

    The tables are refreshed after every job (in the job's own process, whatever the
    launcher), so a sweep whose driver dies (or an Optuna study whose trials all failed)
    still leaves them; the plots are drawn once, when the multirun ends.
    """

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        """After each job of a multirun: rewrite ``summary.csv`` and ``summary.md`` and print
        the sweep's progress on stderr (:func:`sweep_progress`)."""
        try:
            if str(config.hydra.mode) != str(RunMode.MULTIRUN):
                return
            table = summarize_sweep(config.hydra.sweep.dir, plots=False)
            # on the console only: a log line would land in the job's train.log, which a
            # no-op resume of a finished job must leave as it was
            print(sweep_progress(Path(config.hydra.sweep.dir), table), file=sys.stderr)
        except Exception as err:  # a summary must never fail a job
            log.warning("sweep summary not updated: %s", err)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """When the multirun ends: the tables and one plot per metric; the jobs that did
        not complete are left in :data:`INCOMPLETE` for ``dgm-train``'s exit status."""
        table = summarize_sweep(config.hydra.sweep.dir)
        INCOMPLETE.clear()
        INCOMPLETE.update(
            {
                "sweep_dir": str(config.hydra.sweep.dir),
                "jobs": len(table),
                "failed": sum(r["status"] != "completed" for r in table),
            }
        )


# The last multirun of this process, set by SweepSummary.on_multirun_end (runs in the
# driver process whatever the launcher): {"sweep_dir", "jobs", "failed"}.
INCOMPLETE: dict[str, Any] = {}
