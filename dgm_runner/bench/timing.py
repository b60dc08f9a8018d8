"""Timing helpers: honest wall-clock seconds, summaries, and the interleaved groups whose
ratios (baseline / ours, both measured in the same run) the report judges."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from dgm_runner.bench.harness import Bench


@contextlib.contextmanager
def quiet_stderr():
    """Silence file descriptor 2 (kineto prints profiler start/stop lines from C++)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work (no-op on CPU), so wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summary(times: list[float]) -> dict[str, Any]:
    """``{"median", "min", "max", "times"}`` of a list of seconds (all in seconds)."""
    return {
        "median": statistics.median(times),
        "min": min(times),
        "max": max(times),
        "times": times,
    }


def fmt_s(x: float | None) -> str:
    """Seconds (or a ratio), 3 significant digits; ``-`` for None."""
    return "-" if x is None else f"{x:.3g}"


def load_avg() -> list[float] | None:
    """1/5/15-minute load averages (None where unavailable)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def fit_line(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least-squares ``y = a + b x`` and its R^2: ``{"intercept": a, "slope": b, "r2"}``
    (units of ``y`` and ``y`` per unit of ``x``)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys) or 1e-12
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys))
    return {"intercept": a, "slope": b, "r2": 1 - ss_res / ss_tot}


def group_repeats(bench: Bench, name: str) -> int:
    """Repeats of a group: ``bench.repeats`` for the target pairs (VAE1, RBM CD-1), about
    half as many (at least 2) for the slower or target-free ones (time budget)."""
    return bench.repeats if name in ("vae1", "rbm_cd1") else max(2, (bench.repeats + 1) // 2)


def run_group(
    bench: Bench,
    name: str,
    contenders: dict[str, Callable[[], dict[str, Any]]],
    section: str = "groups",
    repeats: int | None = None,
) -> dict[str, Any]:
    """Time every contender :func:`group_repeats` times, interleaved (A B C A B C ...),
    after one untimed warm-up round; ``ours`` is the reference of the ratios. A contender
    that raises in the warm-up (missing optional package, unsupported device) is skipped.
    Writes ``results[section][name]``.

    Args:
        contenders: name -> a call timing one epoch, returning at least ``{"time": seconds,
            "images": training images}`` (and optionally ``"peak_mem_mb"``).
        section: the key of ``results`` the group goes under (``groups``; another section's
            own key keeps ``--merge`` from replacing the ``groups`` of an earlier run).
        repeats: timed rounds (None: :func:`group_repeats`).

    Returns:
        ``{"contenders": {name: summary of its seconds per epoch (+ images, images_per_s,
        peak_mem_mb)}, "ratios": {baseline: median(baseline) / median(ours)},
        "paired_ratios": {baseline: median over rounds of baseline / ours of the same
        round}, "skipped": {name: reason}, "repeats"}``; a ratio > 1 means ours is faster.
    """
    skipped: dict[str, str] = {}
    live = dict(contenders)
    print(f"\n[{name}] warm-up", flush=True)
    for cname, fn in list(live.items()):
        try:
            fn()
        except Exception as err:  # missing optional package, unsupported device, ...
            skipped[cname] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            print(f"  {cname}: skipped ({skipped[cname]})", flush=True)
            live.pop(cname)
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in live}
    repeats = group_repeats(bench, name) if repeats is None else repeats
    for r in range(repeats):
        for cname, fn in live.items():
            runs[cname].append(fn())
        print(
            f"  round {r + 1}/{repeats}: "
            + ", ".join(f"{c} {runs[c][-1]['time']:.2f}s" for c in live),
            flush=True,
        )
    out: dict[str, Any] = {
        "contenders": {},
        "ratios": {},
        "paired_ratios": {},
        "skipped": skipped,
        "repeats": repeats,
    }
    for cname, rs in runs.items():
        s = summary([x["time"] for x in rs])
        s["images"] = rs[0]["images"]
        s["images_per_s"] = rs[0]["images"] / s["median"]
        mem = [x.get("peak_mem_mb") for x in rs if x.get("peak_mem_mb") is not None]
        s["peak_mem_mb"] = max(mem) if mem else None
        out["contenders"][cname] = s
    if "ours" in runs:
        ours = out["contenders"]["ours"]["median"]
        for cname in runs:
            if cname != "ours":
                out["ratios"][cname] = out["contenders"][cname]["median"] / ours
                out["paired_ratios"][cname] = statistics.median(
                    b["time"] / a["time"] for a, b in zip(runs["ours"], runs[cname])
                )
    bench.results.setdefault(section, {})[name] = out
    return out
