"""Section ``threads``: ``trainer.num_threads=auto`` against torch's default (one thread per
core), on a quiet machine and beside two busy neighbours (issue 26, item 3).

A neighbour is another process doing what a neighbouring training job does: single-threaded
matrix products, without pause. Each setting is timed on the runner's own epoch
(``train/epoch_time_s``), interleaved with the other over 5 rounds when quiet, 3 loaded; the ratio
default / auto (> 1: auto is faster) comes from medians of the same run and load.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from typing import Any, Iterator

from dgm_runner.bench.harness import Bench
from dgm_runner.bench.timing import load_avg, summary
from dgm_runner.threads import others_busy_cores

#: What one busy neighbour runs (one thread, CPU-bound, until killed).
NEIGHBOUR = (
    "import torch; torch.set_num_threads(1); a = torch.rand(384, 384)\n"
    "while True:\n    a = (a @ a).clamp_(-1, 1)"
)


@contextlib.contextmanager
def neighbours(n: int) -> Iterator[None]:
    """``n`` busy neighbour processes for the block (killed after it); once they run, the
    load window of :func:`dgm_runner.threads.others_busy_cores` starts afresh, as it does for
    a run launched on a busy machine."""
    procs = [subprocess.Popen([sys.executable, "-c", NEIGHBOUR]) for _ in range(n)]
    try:
        time.sleep(2.0 if n else 0.0)  # past torch's import: busy now
        others_busy_cores()
        time.sleep(1.0)
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def threads_study(bench: Bench) -> None:
    """Epoch seconds of RBM CD-1 (all 60 000 images; 20 000 in ``--quick``) and VAE1 (20 000;
    10 000) with ``trainer.num_threads=null`` (torch's default) and ``auto``, quiet and with
    two busy neighbours. Writes ``results["threads"]``: per experiment and load, each
    setting's seconds (median, min, max) and thread count, and ``default_over_auto``."""
    jobs = {
        "rbm_cd1": ("rbm_cdk", 20000 if bench.quick else None),
        "vae1": ("vae_mlp", 10000 if bench.quick else 20000),
    }
    out: dict[str, Any] = {}
    for load, n in (("quiet", 0), ("two busy neighbours", 2)):
        rounds = (3 if bench.quick else 5) if n == 0 else (2 if bench.quick else 3)
        with neighbours(n):  # quiet epochs are short: more rounds against noise
            loadavg = load_avg()
            for name, (exp, subset) in jobs.items():
                times: dict[str, list[float]] = {"null": [], "auto": []}
                threads: dict[str, int] = {}
                for _ in range(rounds):
                    for setting in times:
                        base = bench.runner_overrides(exp, subset=subset)
                        run = bench.runner_epoch([*base, f"trainer.num_threads={setting}"])
                        times[setting].append(run["time"])
                        threads[setting] = run["threads"]
                row = {s: {**summary(t), "threads": threads[s]} for s, t in times.items()}
                row["default_over_auto"] = row["null"]["median"] / row["auto"]["median"]
                row["loadavg"] = loadavg
                out.setdefault(name, {})[load] = row
                print(
                    f"  {name}, {load}: torch default ({threads['null']} threads) "
                    f"{row['null']['median']:.2f} s, auto ({threads['auto']}) "
                    f"{row['auto']['median']:.2f} s per epoch: default / auto = "
                    f"{row['default_over_auto']:.2f}",
                    flush=True,
                )
    bench.results["threads"] = out


def threads_table(results: dict[str, Any]) -> list[str]:
    """The ``threads`` section as Markdown lines (none without it): per experiment and load,
    each setting's thread count and median seconds per epoch, and default / auto."""
    section = results.get("threads")
    if not section:
        return []
    lines = [
        "",
        "| trainer.num_threads | load | torch default: threads, s/epoch | auto: threads, "
        "s/epoch | default / auto |",
        "|---|---|---|---|---|",
    ]
    for name, loads in section.items():
        for load, row in loads.items():
            null, auto = row["null"], row["auto"]
            lines.append(
                f"| {name} | {load} | {null['threads']}, {null['median']:.2f} | "
                f"{auto['threads']}, {auto['median']:.2f} | {row['default_over_auto']:.2f}x |"
            )
    return lines
