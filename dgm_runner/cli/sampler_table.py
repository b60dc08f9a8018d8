"""Samplers x NFE for one trained diffusion run: sample quality (classifier-feature FID,
KID, precision / recall against the test split) and sampling seconds per 1000 images for
each row, the table of docs/families/diffusion.md (``scripts/sampler_table.py``)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from dgm_runner.build import restore_run
from dgm_runner.cli.common import USER_ERRORS, sampler_entry
from dgm_runner.config import ConfigError
from dgm_runner.io.layout import RunPaths
from dgm_runner.io.results_tables import SAMPLER_TABLE_KEYS, sampler_table_markdown
from dgm_runner.metrics.features import FeatureClassifierMissing, load_feature_classifier
from dgm_runner.metrics.fid import (
    class_accuracy,
    extract_features,
    frechet_distance,
    kernel_distance,
    precision_recall,
    real_features,
)
from dgm_runner.progress import track
from dgm_runner.samplers.base import draw_samples, sample_labels

log = logging.getLogger("dgm_runner")


def parse_rows(specs: list[str]) -> list[tuple[str, int | None, dict[str, Any]]]:
    """``["ddim:10,20", "ddim:10+eta=1", "heun:5", "rk45+rtol=1e-3"]`` ->
    ``[(entry, steps, extra keys), ...]``. An entry without a ``steps`` key (the adaptive
    ``rk45``, whose NFE its tolerances decide) takes no steps: ``rk45`` or
    ``rk45+rtol=1e-3+atol=1e-3``, steps ``None``.

    Raises:
        ConfigError: a spec is not ``entry:steps[,steps...][+key=value...]`` (or, for an
            entry without steps, ``entry[+key=value...]``), or names no entry of
            ``configs/sampler`` (:func:`dgm_runner.cli.sampler_entry`).
    """
    rows: list[tuple[str, int | None, dict[str, Any]]] = []
    for spec in specs:
        head, *extras = spec.split("+")
        name, colon, steps_part = head.partition(":")
        stepless = bool(name) and not colon and "steps" not in sampler_entry(name)
        if not name or (not steps_part and not stepless):
            raise ConfigError(
                f"row {spec!r}: expected <sampler entry>:<steps>[,<steps>...][+key=value], "
                "e.g. ddim:10,20,50 (an entry without steps, e.g. rk45: rk45[+rtol=1e-3])"
            )
        if colon and name and "steps" not in sampler_entry(name):
            raise ConfigError(
                f"row {spec!r}: sampler {name} takes no steps (e.g. {name}+rtol=1e-3)"
            )
        extra = {}
        for item in extras:
            key, _, value = item.partition("=")
            extra[key] = yaml.safe_load(value)
        if stepless:
            rows.append((name, None, extra))
        else:
            rows += [(name, int(s), extra) for s in steps_part.split(",")]
    return rows


def sampler_table(
    run_dir: str | Path,
    specs: list[str],
    n: int = 1000,
    seed: int = 0,
    batch_size: int = 500,
    checkpoint: str = "last",
    device: str = "auto",
    on_row: Callable[[list[dict[str, Any]]], None] | None = None,
    feature_classifier: str = "shipped",
) -> list[dict[str, Any]]:
    """Sample ``n`` images per row (:func:`parse_rows`) from the run's checkpoint (EMA weights
    where kept) and score them. ``on_row``, when given, is called with the rows measured so
    far after each row (the console entry writes them, so a crash or a signal in a long
    table keeps the rows already measured). ``feature_classifier``: ``shipped`` (MNIST,
    Fashion-MNIST) or the path of a classifier a user trained (``experiment=classifier_cifar10``
    for CIFAR-10, which ships none), as ``sample_metrics.fid.classifier``.

    Returns:
        One dict per row: ``sampler``, ``steps``, ``nfe`` (network evaluations per sample, as
        counted by the sampler), ``seconds_per_1000`` (wall-clock of sampling alone),
        ``fid``, ``kid``, ``kid_std``, ``precision``, ``recall``, ``n``, the feature
        extractor's identity (``reference``: the grey, or colour, test images;
        ``classifier_sha256``, ``classifier_shipped``), plus the extra keys.

    Raises:
        ConfigError: a bad row spec or a sampler that does not fit the model;
        CheckpointError / DataError: as :func:`dgm_runner.build.restore_run`;
        FeatureClassifierMissing: no feature classifier for the dataset.
    """
    rows = parse_rows(specs)
    out = []
    classifier = real = None
    for name, steps, extra in track(rows, "sampler table", unit="row"):
        node = sampler_entry(name)
        if steps is not None:
            node.steps = steps
        for key, value in extra.items():
            node[key] = value
        _, comps, _ = restore_run(run_dir, checkpoint, device, {"sampler": node})
        data, model, sampler = comps.data, comps.model, comps.sampler
        dev = data.test_x.device
        if classifier is None:
            classifier, info = load_feature_classifier(data.name, dev, feature_classifier)
            real = real_features(classifier, info, data.grey_test, batch_size)
        start = time.perf_counter()
        images = draw_samples(model, sampler, n, seed, dev, batch_size)
        seconds = time.perf_counter() - start
        fake = extract_features(classifier, images.float().clamp(0, 1), batch_size)
        kid, kid_std = kernel_distance(real, fake, 100, 1000, seed)
        precision, recall = precision_recall(real, fake, 3)
        row = {
            "sampler": name,
            "steps": steps,
            **extra,
            "nfe": int(getattr(sampler, "nfe", steps or 0)),
            "seconds_per_1000": seconds * 1000.0 / n,
            "fid": frechet_distance(real, fake),
            "kid": kid,
            "kid_std": kid_std,
            "precision": precision,
            "recall": recall,
            "n": n,
            "reference": f"{'grey' if data.grey_test.shape[1] == 1 else 'colour'} test images",
            "classifier_sha256": info.get("sha256"),
            "classifier_shipped": bool(info["shipped"]),
        }
        labels = sample_labels(model, sampler, 0, n, fake.device)
        if labels is not None:  # a class-conditional model (classes cycled)
            row["class_accuracy"] = class_accuracy(classifier, fake, labels)
        log.info("%s", row)
        out.append(row)
        if on_row is not None:
            on_row(list(out))
    return out


def format_markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (FID and KID in the units of docs/evaluation.md's
    tables): :func:`dgm_runner.io.results_tables.sampler_table_markdown`, the same
    formatter as the docs' generated sampler tables."""
    return sampler_table_markdown(rows)


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """FID (log scale) against NFE (log scale), one line per sampler (and extra keys)."""
    from dgm_runner.io.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        extra = ", ".join(f"{k}={v}" for k, v in r.items() if k not in SAMPLER_TABLE_KEYS)
        groups.setdefault(r["sampler"] + (f" ({extra})" if extra else ""), []).append(r)
    for label, group in groups.items():
        group = sorted(group, key=lambda r: r["nfe"])
        ax.plot([r["nfe"] for r in group], [r["fid"] for r in group], marker="o", label=label)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="network evaluations per sample (NFE)",
        ylabel="FID (classifier features)",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_guidance(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Classifier-free guidance's trade (issue 31): FID (left axis, log scale) and class
    accuracy (right axis) against the guidance weight ``w``, from the rows of a
    class-conditional run with a ``guidance`` key (``heun:18+guidance=2``). None (nothing
    written) when fewer than two weights were measured."""
    from dgm_runner.io.plots import pyplot, save_figure

    guided = sorted(
        (r for r in rows if "guidance" in r and "class_accuracy" in r),
        key=lambda r: r["guidance"],
    )
    if len({r["guidance"] for r in guided}) < 2:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    w = [r["guidance"] for r in guided]
    ax.plot(w, [r["fid"] for r in guided], marker="o", color="C0", label="FID")
    ax.set(yscale="log", xlabel="guidance weight w", ylabel="FID (classifier features)")
    right = ax.twinx()
    right.plot(w, [r["class_accuracy"] for r in guided], marker="s", color="C1")
    right.set_ylabel("class accuracy", color="C1")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"{guided[0]['sampler']}, {guided[0]['nfe']} NFE, {guided[0]['n']} samples")
    return save_figure(fig, path)


def write(rows: list[dict[str, Any]], out: Path) -> None:
    """``out.json``, ``out.md`` and ``out.png`` (:func:`plot`), and for rows of several
    guidance weights ``out_guidance.png`` (:func:`plot_guidance`); atomic writes."""
    from dgm_runner.io.atomic import atomic_open, write_json

    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), rows)
    with atomic_open(out.with_suffix(".md"), "w") as f:
        f.write(format_markdown(rows) + "\n")
    plot(rows, out.with_suffix(".png"))
    plot_guidance(rows, out.with_name(out.name + "_guidance.png"))


def main() -> None:
    """Console entry point of ``dgm-sampler-table RUN_DIR --rows ddim:10,20 heun:5,10``: the
    samplers x NFE table of a trained diffusion run into ``RUN_DIR/eval/sampler_table.*``."""
    parser = argparse.ArgumentParser(
        prog="dgm-sampler-table", description="Samplers x NFE table of a trained diffusion run."
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument(
        "--rows",
        nargs="+",
        required=True,
        help="entry:steps[,steps...][+key=value], e.g. ddim:10,20 ddim:20+eta=1",
    )
    parser.add_argument("--n", type=int, default=1000, help="samples per row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--classifier",
        default="shipped",
        help="feature classifier: shipped, or the file of one you trained "
        "(dgm-train experiment=classifier_cifar10 for CIFAR-10)",
    )
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--out", type=Path, default=None, help="output stem (default RUN_DIR/eval/sampler_table)"
    )
    args = parser.parse_args()
    out = args.out or RunPaths(args.run_dir).sampler_table
    try:
        rows = sampler_table(
            args.run_dir,
            args.rows,
            args.n,
            args.seed,
            args.batch_size,
            on_row=lambda done: write(done, out),
            feature_classifier=args.classifier,
        )
    except (*USER_ERRORS, FeatureClassifierMissing) as err:
        print(f"dgm-sampler-table: error: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
    print(format_markdown(rows))
