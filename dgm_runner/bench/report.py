"""The report: the issue's targets judged against the measured ratios (baseline / ours,
measured in the same run) and the matmul bound, the printed tables, and ``bench.md``'s
markdown table. Everything here reads ``results`` (the dict that becomes
``bench.json``); nothing is timed."""

from __future__ import annotations

import statistics
from typing import Any

from dgm_runner.bench.bound import MATMUL_OPS
from dgm_runner.bench.harness import Bench
from dgm_runner.bench.smoke import smoke_table
from dgm_runner.bench.threads import threads_table
from dgm_runner.bench.timing import fmt_s
from dgm_runner.bench.unet import unet_table

# The targets: (group, baseline, minimum ratio baseline / ours).
TARGETS = [
    ("vae1", "dataloader", 2.5),
    ("rbm_cd1", "sklearn", 2.5),
    ("rbm_cd1", "learnergy", 4.0),
    ("rbm_cd25", "learnergy", 2.0),
]
# ... and ours / matmul bound <= this.
BOUND_TARGETS = {"vae1": 2.5}


def check_targets(bench: Bench) -> list[dict[str, Any]]:
    """Judge the issue's targets (:data:`TARGETS`: ratio baseline / ours >= need, the medians
    of the same run; :data:`BOUND_TARGETS`: ours / matmul bound <= limit) and explain a
    missed ratio with the seconds ours would need and what the matmul bound leaves.

    Args:
        bench: anything with ``results`` (``groups``, ``bounds``).

    Returns:
        Rows ``{"target", "group", "value", "need", "met"`` (None: not measured)``,
        "allowed_s", "explanation"}``; also written to ``results["targets"]``.
    """
    groups = bench.results.get("groups", {})
    out = []
    for group, base, need in TARGETS:
        g = groups.get(group, {})
        ratio = g.get("ratios", {}).get(base)
        row = {
            "target": f"{group}: {base} / ours >= {need}",
            "group": group,
            "value": ratio,
            "need": need,
            "met": None if ratio is None else ratio >= need,
        }
        bound = bench.results.get("bounds", {}).get(group)
        if ratio is not None and ratio < need and bound:
            allowed = g["contenders"][base]["median"] / need
            ours = g["contenders"]["ours"]["median"]
            row["allowed_s"] = allowed
            row["explanation"] = (
                f"ours would need {allowed:.3f} s (now {ours:.3f} s); the step's matrix products "
                "alone take "
                f"{bound['bound_s']:.3f} s"
                + (
                    ", more than allowed: out of reach on this machine without doing fewer products"
                    if bound["bound_s"] >= allowed
                    else f", so {allowed - bound['bound_s']:.3f} s would be left for everything "
                    "else "
                    f"(now {ours - bound['bound_s']:.3f} s: see the profile)"
                )
            )
            rest = [op for op in bound.get("top_ops", []) if op["op"] not in MATMUL_OPS][:3]
            if rest:
                row["explanation"] += (
                    "; largest other costs: "
                    + ", ".join(f"{op['op']} {op['share']:.0%}" for op in rest)
                    + " of the profiled step"
                )
        out.append(row)
        bf16 = g.get("contenders", {}).get("ours_bf16")
        if bf16 and base in g.get("contenders", {}):
            value = g["contenders"][base]["median"] / bf16["median"]
            out.append(
                {
                    "target": f"{group}: {base} / ours with trainer.precision=bf16 >= {need}",
                    "group": group,
                    "value": value,
                    "need": need,
                    "met": value >= need,
                }
            )
    for group, limit in BOUND_TARGETS.items():
        ours = groups.get(group, {}).get("contenders", {}).get("ours", {}).get("median")
        bound = bench.results.get("bounds", {}).get(group, {}).get("bound_s")
        value = None if not ours or not bound else ours / bound
        out.append(
            {
                "target": f"{group}: ours / matmul bound <= {limit}",
                "group": group,
                "value": value,
                "need": limit,
                "met": None if value is None else value <= limit,
            }
        )
    bench.results["targets"] = out
    return out


def markdown_report(results: dict[str, Any]) -> str:
    """The table of docs/speed.md: one row per contender of each group (median seconds per epoch,
    ratio baseline / ours), the matmul bound, and the targets with their verdicts."""
    meta = results["meta"]
    lines = [
        f"{meta['device']} ({meta['cpu']}, {meta['cpu_count']} cores), torch {meta['torch']}, "
        f"{meta['threads']} threads, medians of {meta['repeats']} interleaved repeats"
        + (f"; {meta['load_warning']}" if meta.get("load_warning") else "")
        + ".",
        "",
        "| group (images per epoch) | contender | median s | min-max s | baseline / ours |",
        "|---|---|---|---|---|",
    ]
    for gname, g in results.get("groups", {}).items():
        for cname, st in g["contenders"].items():
            ratio = g["ratios"].get(cname)
            shown = "" if ratio is None else f"{ratio:.2f}x"
            if ratio and cname.startswith("ours_"):  # a variant of ours: how much faster
                shown = f"({1 / ratio:.2f}x faster than ours)"
            lines.append(
                f"| {gname} ({st['images']}) | {'**ours**' if cname == 'ours' else cname} | "
                f"{st['median']:.3f} | "
                f"{st['min']:.3f}-{st['max']:.3f} | {shown} |"
            )
        bound = results.get("bounds", {}).get(gname)
        if bound:
            lines.append(
                f"| {gname} | matmul bound (GEMM/conv kernels alone) | {bound['bound_s']:.3f} | | |"
            )
    lines += ["", "| target | measured | verdict |", "|---|---|---|"]
    for t in results.get("targets", []):
        verdict = (
            "n/a"
            if t["met"] is None
            else ("met" if t["met"] else "missed: " + t.get("explanation", ""))
        )
        lines.append(f"| {t['target']} | {fmt_s(t['value'])} | {verdict} |")
    lines += threads_table(results) + smoke_table(results) + unet_table(results)
    return "\n".join(lines) + "\n"


def print_report(bench: Bench) -> None:
    """Print the tables: groups (median/min/max seconds per epoch, ratios and paired ratios
    baseline / ours), bounds, targets, profiles of misses, then the other sections."""
    res = bench.results
    print("\n" + "=" * 100)
    meta = res["meta"]
    print(
        f"device {meta['device']} ({meta['cpu']}), torch {meta['torch']}, {meta['threads']} "
        "threads, "
        f"{'quick' if bench.quick else 'full'}, {bench.repeats} interleaved repeats; "
        f"load average {meta['loadavg_start']} -> {meta.get('loadavg_end')}"
    )
    if meta.get("load_warning"):
        print("WARNING: " + meta["load_warning"])
    _print_groups(res, bench.cuda)
    _print_targets(res)
    _print_compile_and_scale(res)
    _print_rss_and_sampling(res)
    for line in threads_table(res) + smoke_table(res) + unet_table(res):
        print(line)


def _print_groups(res: dict[str, Any], cuda: bool) -> None:
    """One row per contender of each group (+ images/s and peak MB on CUDA), its skipped
    contenders and the matmul-bound row; nothing when the run has no groups."""
    if not res.get("groups"):
        return
    extra = "  images/s  peak MB" if cuda else ""
    print(
        f"\n{'group':10s} {'contender':12s} {'images':>7s} {'median s':>9s} {'min':>7s} "
        f"{'max':>7s} {'ratio':>7s} {'paired':>7s}{extra}"
    )
    for gname, g in res.get("groups", {}).items():
        for cname, s in g["contenders"].items():
            ratio = g["ratios"].get(cname)
            paired = g["paired_ratios"].get(cname)
            line = (
                f"{gname:10s} {cname:12s} {s['images']:7d} {s['median']:9.3f} {s['min']:7.3f} "
                f"{s['max']:7.3f} "
                f"{'' if ratio is None else f'{ratio:.2f}x':>7s} "
                f"{'' if paired is None else f'{paired:.2f}x':>7s}"
            )
            if cuda:
                line += f"  {s['images_per_s']:8.0f}  {fmt_s(s['peak_mem_mb']):>7s}"
            print(line)
        for cname, why in g["skipped"].items():
            print(f"{gname:10s} {cname:12s} skipped: {why}")
        bound = res.get("bounds", {}).get(gname)
        if bound and "ours" in g["contenders"]:
            ours = g["contenders"]["ours"]["median"]
            scaled = bound["bound_s"]  # measured on the group's own images
            print(
                f"{gname:10s} {'matmul-bound':12s} {g['contenders']['ours']['images']:7d} "
                f"{scaled:9.3f}"
                f"   (ours = {ours / scaled:.2f}x the bound, i.e. {scaled / ours:.0%} of our "
                "epoch is GEMM/conv time;"
                f" {bound['gemm_calls_per_step']:.0f} GEMMs/step)"
            )
    print(
        "\nratio = median(baseline) / median(ours): > 1 means ours is faster; paired = median of "
        "per-round ratios"
    )


def _print_targets(res: dict[str, Any]) -> None:
    """The targets with MET / MISSED, the explanations of misses and our step's profile."""
    targets = res.get("targets", [])
    if targets:
        print("\ntargets:")
        for t in targets:
            mark = "n/a" if t["met"] is None else ("MET" if t["met"] else "MISSED")
            print(f"  {t['target']:45s} measured {fmt_s(t['value']):>6s}  {mark}")
    for t in targets:
        if t["met"] is False and t.get("explanation"):
            print(f"  {t['target']}: {t['explanation']}")
    for group in dict.fromkeys(t["group"] for t in targets if t["met"] is False):
        bound = res.get("bounds", {}).get(group)
        if bound:
            print(
                f"\nprofile of our {group} step ({bound['step_ms']:.2f} ms/step unprofiled; ms "
                "per epoch of the group's images):"
            )
            for op in bound["top_ops"]:
                print(
                    f"  {op['op']:45s} {op['ms_per_epoch']:8.1f} ms  "
                    f"{op['calls_per_step']:5.1f}/step  {op['share']:6.1%}"
                )


def _print_compile_and_scale(res: dict[str, Any]) -> None:
    """The ``compile`` verdicts and the ``scale`` sweeps (seconds per epoch, fits)."""
    if "compile" in res:
        print("\ntrainer.compile:")
        for exp, c in res["compile"].items():
            print(f"  {exp}: {c.get('verdict') or c.get('error')}")
    if "scale" in res:
        sc = res["scale"]
        print("\nscale:")
        ck = sc["cd_k"]
        print(
            f"  CD-k, s/epoch of {ck['images']} images: "
            + ", ".join(f"k={k}: {v:.2f}" for k, v in ck["seconds"].items())
            + "; t(k)/t(1) = "
            + ", ".join(f"{v:.1f}" for v in ck["ratio_to_k1"].values())
            + " (2k+4 matmul model: "
            + ", ".join(f"{v:.1f}" for v in ck["matmul_model_ratio"].values())
            + f"); linear fit R^2 = {ck['linear_fit']['r2']:.3f}, "
            f"{ck['seconds_per_gibbs_sweep_per_60k']:.2f} s per sweep per 60k images"
        )
        z = sc["vae1_latent_dim"]
        print(
            f"  VAE1 N_z, s/epoch of {z['images']} images: "
            + ", ".join(f"{k}: {v:.2f}" for k, v in z["seconds"].items())
        )
        for key in ("vae1_dataset_size", "rbm_cd1_dataset_size"):
            d = sc[key]
            print(
                f"  {key}: "
                + ", ".join(f"{n}: {v:.2f}s" for n, v in d["seconds"].items())
                + f"; {statistics.fmean(d['us_per_image'].values()):.0f} us/image, "
                f"fixed cost {d['fixed_cost_s']:.2f} s"
            )


def _print_rss_and_sampling(res: dict[str, Any]) -> None:
    """Peak RSS per experiment (MB) and the sampling seconds with the ratios plain / ours."""
    if "rss" in res:
        print("\npeak RSS (one epoch + evaluation, CPU, subprocess each):")
        for exp, r in res["rss"].items():
            if "peak_rss_mb" in r and "error" not in r:
                note = (
                    f" (trained on {r['train_images']}; full data "
                    f"~{r['full_data_estimate_mb']:.0f} MB)"
                    if r.get("train_images")
                    else ""
                )
                print(
                    f"  {exp:22s} {r['peak_rss_mb']:7.0f} MB{note}  "
                    f"{'< 2 GB' if r['under_2gb'] else '>= 2 GB!'}"
                )
            else:
                print(f"  {exp:22s} error: {r.get('error')}")
    if "sampling" in res:
        print(
            "\nsampling (seconds; * = extrapolated from the compared length, constant cost per "
            "step):"
        )
        for label, s in res["sampling"].items():
            if "steps" in s:
                size = f"{s.get('chains', s.get('images'))} x {s['steps']} steps"
                print(
                    f"  {label:14s} ours "
                    f"{s['ours_s']:8.2f}{'*' if s.get('extrapolated') else ' '} ({size}); "
                    f"at {s['compared_at_steps']} steps: ours "
                    f"{s['ours_short_s']:.2f}, plain {s['plain_short_s']:.2f}, plain/ours "
                    f"{s['ratio']:.2f}x "
                    f"({s['ours_ms_per_step']:.1f} vs {s['plain_ms_per_step']:.1f} ms/step)"
                )
            else:
                print(
                    f"  {label:14s} ours {s['ours_s']:8.2f} ({s['samples']} samples), plain "
                    f"{s['plain_s']:.2f}, plain/ours {s['ratio']:.2f}x"
                )
