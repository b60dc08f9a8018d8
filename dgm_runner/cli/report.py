"""``dgm-report`` / ``scripts/report.py``: build ``outputs/REPORT.md`` from run directories.

One section per experiment (``experiment_name`` of each run): a metrics table (one
column per run: its final metrics, updated only by a ``dgm-eval`` of its current
checkpoint on the full test split; every other evaluation in a column of its own labelled
``stale (epoch N)``, ``test_subset=N``, ...; :mod:`dgm_runner.io.evaluations`),
the run's 8x8 sample grid and figures, and published reference numbers beside ours
with their sources; then the leaderboard's tables (``configs/leaderboard.yaml``, the tables of
``docs/leaderboard.md``) filled from the runs found, each row by the saved-config values its
``match`` names (:func:`dgm_runner.io.results_tables.match_records`). Units follow the
metric names (nats per example unless stated).
Every name, override, path and value from a run directory is escaped
(:mod:`dgm_runner.io.markdown`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from dgm_runner import CONFIG_DIR
from dgm_runner.cli.common import one_line_errors
from dgm_runner.io.atomic import read_json, write_text
from dgm_runner.io.evaluations import evaluations, is_result, with_current_evaluation
from dgm_runner.io.layout import RunPaths
from dgm_runner.io.markdown import md_link, md_text
from dgm_runner.io.results_tables import load_spec, match_records, render_records

#: The leaderboard's table spec, in the config tree (installed with the package).
LEADERBOARD_SPEC = Path(CONFIG_DIR) / "leaderboard.yaml"

#: Published numbers to read ours against: (what, value, source). Keys: experiment_name.
REFERENCES: dict[str, list[tuple[str, str, str]]] = {
    "rbm_cdk": [
        (
            "RBM, 500 hidden, CD-25, test log-likelihood (AIS)",
            "-86.34 nats",
            "Salakhutdinov & Murray 2008, Table 2",
        ),
        (
            "RBM, 20 hidden, CD-1 (exact log Z)",
            "-164.50 nats (not directly comparable: 20 hidden units)",
            "Salakhutdinov & Murray 2008, Table 2",
        ),
    ],
    "vae_bce": [
        ("VAE (1 stochastic layer, k=1), test NLL", "86.76 nats", "Burda et al. 2015, Table 1"),
        ("IWAE (1 stochastic layer, k=50), test NLL", "84.78 nats", "Burda et al. 2015, Table 1"),
    ],
    "edm_mnist_cpu": [
        (
            "DDPM on CIFAR-10, FID / NLL",
            "3.17 (L_simple) / <= 3.70 bits/dim (trained on L)",
            "Ho et al. 2020, Table 1",
        ),
        (
            "EDM on CIFAR-10, unconditional FID at 35 NFE (Heun)",
            "1.97",
            "Karras et al. 2022, Table 2",
        ),
        (
            "score SDE, probability-flow bits/dim on CIFAR-10",
            "2.99 (deep sub-VP)",
            "Song et al. 2021, Table 2",
        ),
        (
            "normalising flows on MNIST, bits/dim",
            "about 1.0 (FFJORD 0.99, Glow 1.05)",
            "Grathwohl et al. 2019, Table 2",
        ),
    ],
}
_NOTE = {
    "edm_mnist_cpu": "Ours is a 0.27 M-parameter U-Net trained for about 11 000 updates on MNIST "
    "on a CPU (the papers: 36-56 M parameters, 200-800 k updates on CIFAR-10), and our FID is "
    "measured in the features of a small MNIST classifier, not Inception-v3: only the bits/dim "
    "share a unit with the papers.",
    "vae_bce": "Burda et al. use stochastic binarization; our binarized MNIST is thresholded "
    "at 0.5, which is easier, so our NLLs are lower than theirs.",
    "rbm_cdk": "Our RBM has 128 hidden units and 10 epochs (seed 000), not 500 units.",
}
REFERENCES["ddpm_mnist_cpu"], _NOTE["ddpm_mnist_cpu"] = (
    REFERENCES["edm_mnist_cpu"],
    _NOTE["edm_mnist_cpu"],
)
for _alias in ("vae_bernoulli_2d", "cvae"):  # the same Bernoulli-VAE references and caveat
    REFERENCES[_alias], _NOTE[_alias] = REFERENCES["vae_bce"], _NOTE["vae_bce"]
_INFO_KEYS = ("status", "epoch", "time_per_epoch_s")


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def find_run_dirs(roots: list[Path]) -> list[Path]:
    """Every directory under ``roots`` holding a ``metrics.json`` and ``checkpoints/``
    (finished, diverged or interrupted runs), sorted by path."""
    found = set()
    for root in roots:
        for metrics in Path(root).rglob(RunPaths.METRICS):
            run = metrics.parent
            if run.name != RunPaths.EVAL and RunPaths(run).checkpoints.is_dir():
                found.add(run)
    return sorted(found)


def run_record(run_dir: Path) -> dict[str, Any]:
    """``{"dir", "experiment", "config", "overrides", "metrics", "evaluations"}`` of one run
    (``config``: its saved ``.hydra/config.yaml``, ``{}`` when unreadable).

    ``metrics`` are the final ones of ``metrics.json``, updated only by a current, full-test,
    finite ``eval/metrics.json`` (:func:`dgm_runner.io.evaluations.with_current_evaluation`);
    ``evaluations`` lists every other ``eval/metrics*.json`` record as ``(file name, record,
    status)`` (``stale (epoch 1)``, ``test_subset=N``, another sampler, ...), shown in
    columns of their own. An unreadable or torn ``metrics.json`` (a copy cut short, a hand
    edit) gives status ``unreadable``."""
    paths = RunPaths(run_dir)
    metrics = read_json(paths.metrics)
    if not isinstance(metrics, dict):
        metrics = {"status": "unreadable metrics.json"}
    found = evaluations(run_dir)
    config = _load_yaml(paths.config_yaml)
    overrides = _load_yaml(paths.overrides_yaml)
    overrides = [str(o) for o in overrides] if isinstance(overrides, list) else []
    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")]
    named = config.get("experiment_name") if isinstance(config, dict) else None
    experiment = (
        chosen[0] if chosen else named if named and "${" not in str(named) else run_dir.parent.name
    )
    return {
        "dir": run_dir,
        "experiment": str(experiment),
        "config": config if isinstance(config, dict) else {},
        "overrides": overrides,
        "metrics": with_current_evaluation(metrics, found),
        "evaluations": [e for e in found if not is_result(e[0], e[2])],
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.4e}"
    return "-" if value is None else md_text(value)


def _label(record: dict[str, Any], out_dir: Path) -> str:
    swept = [
        o
        for o in record["overrides"]
        if not o.startswith(("experiment=", "trainer.progress", "hydra."))
    ]
    name = md_text(os.path.relpath(record["dir"], out_dir))
    return f"{name}<br>{', '.join(map(md_text, swept))}" if swept else name


def _columns(records: list[dict[str, Any]], out_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(header, values)`` of the metrics table: each run's column, then one per evaluation
    that is not the run's result, labelled with its file and status."""
    columns = []
    for r in records:
        label = _label(r, out_dir)
        columns.append((label, r["metrics"]))
        columns += [
            (f"{label}<br>eval/{md_text(name)}: {md_text(status)}", record)
            for name, record, status in r["evaluations"]
        ]
    return columns


def _section(experiment: str, records: list[dict[str, Any]], out_dir: Path) -> list[str]:
    lines = [f"## {md_text(experiment)}", ""]
    columns = _columns(records, out_dir)
    keys = [k for k in _INFO_KEYS if any(k in values for _, values in columns)]
    keys += sorted({k for _, values in columns for k in values if k.startswith("test/")})
    lines.append("| metric | " + " | ".join(header for header, _ in columns) + " |")
    lines.append("|---|" + "---|" * len(columns))
    lines += [
        f"| {md_text(k)} | " + " | ".join(_fmt(values.get(k)) for _, values in columns) + " |"
        for k in keys
    ]
    lines.append("")
    if experiment in REFERENCES:
        lines += ["Published reference numbers:", "", "| model | value | source |", "|---|---|---|"]
        lines += [
            f"| {what} | {value} | {source} |" for what, value, source in REFERENCES[experiment]
        ]
        lines.append("")
        if experiment in _NOTE:
            lines += [_NOTE[experiment], ""]
    for r in records:
        pictures = [
            RunPaths(r["dir"]).final_grid,
            *sorted(RunPaths(r["dir"]).figures.glob("*.png")),
        ]
        pictures = [p for p in pictures if p.is_file()]
        if pictures:
            lines.append(f"{md_text(os.path.relpath(r['dir'], out_dir))}:")
            lines.append("")
            lines += [
                f"![{md_text(p.stem)}]({md_link(os.path.relpath(p, out_dir))})" for p in pictures
            ]
            lines.append("")
    return lines


def leaderboard_section(runs: list[dict[str, Any]], out_dir: Path) -> list[str]:
    """The leaderboard's tables for ``runs`` (records of :func:`run_record`): each table
    with at least one row matched, its published rows beside, and under it the run
    directory each row came from; one line saying so when no run matches any row.

    Raises:
        dgm_runner.io.results_tables.SpecError: the shipped spec is broken.
    """
    lines = ["## Leaderboard", ""]
    candidates = [(r["dir"], r["config"]) for r in runs]
    shown = 0
    for spec in load_spec(LEADERBOARD_SPEC).values():
        records = match_records(spec, candidates)
        found = [r for r in records if r.state != "not run"]
        if not found:
            continue
        shown += 1
        # the docs' note speaks of the docs' runs: the report keeps the table and protocol
        table = render_records(dataclasses.replace(spec, note=""), records, "dgm-report")
        lines += [f"### {md_text(spec.name)}", "", table, ""]
        lines += [
            f"- {md_text(r.row.label)}: {md_text(os.path.relpath(r.run_dir, out_dir))}"
            for r in found
        ]
        lines.append("")
    if not shown:
        lines += [
            "No run here is one of the leaderboard's (docs/leaderboard.md; the experiments "
            "and protocols its rows match are in configs/leaderboard.yaml).",
            "",
        ]
    return lines


def build_report(roots: list[Path], out: Path) -> Path:
    """Write the markdown report of every run under ``roots`` to ``out`` (atomically).

    Raises:
        FileNotFoundError: no run directory was found under ``roots``.
    """
    runs = [run_record(d) for d in find_run_dirs(roots)]
    if not runs:
        raise FileNotFoundError(
            f"no run directories (metrics.json + checkpoints/) under {', '.join(map(str, roots))}"
        )
    by_experiment: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_experiment.setdefault(r["experiment"], []).append(r)
    out_dir = out.parent.resolve()
    lines = [
        "# dgm_runner results report",
        "",
        f"{len(runs)} runs in {len(by_experiment)} experiments, "
        f"from {', '.join(md_text(r) for r in roots)}. "
        "Metrics are final test-split values (nats per example unless the name says otherwise); "
        "FID/KID/precision/recall use the features of the dataset's own classifier "
        "(`test/fid_classifier_accuracy`), so they compare models on one dataset, "
        "not with Inception-FIDs.",
        "",
    ]
    for experiment in sorted(by_experiment):
        lines += _section(
            experiment,
            [{**r, "dir": r["dir"].resolve()} for r in by_experiment[experiment]],
            out_dir,
        )
    lines += leaderboard_section([{**r, "dir": r["dir"].resolve()} for r in runs], out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, "\n".join(lines))
    return out


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``dgm-report [ROOT ...] [--out PATH]``; the report goes to
    ``<first ROOT>/REPORT.md`` unless ``--out`` says otherwise."""
    parser = argparse.ArgumentParser(
        prog="dgm-report", description="Build a markdown report from run directories."
    )
    parser.add_argument(
        "roots",
        nargs="*",
        default=["outputs"],
        help="directories to search for runs (default: outputs)",
    )
    parser.add_argument(
        "--out", default=None, help="the report file (default: REPORT.md in the first root)"
    )
    args = parser.parse_args(argv)
    _build(args.roots, Path(args.out) if args.out else Path(args.roots[0]) / "REPORT.md")


@one_line_errors("dgm-report")
def _build(roots: list[str], out: Path) -> None:
    """Write the report, inside the command's error boundary (one line for any failure)."""
    try:
        path = build_report([Path(r) for r in roots], out)
    except FileNotFoundError as err:
        print(f"dgm-report: error: {err}", file=sys.stderr)
        sys.exit(1)
    print(f"wrote {path}")
