"""Section ``ddp``: training throughput (images per second) of one run on 1 and on N
processes launched by ``torchrun`` (``trainer.strategy=ddp``, :mod:`dgm_runner.distributed`).

Each point is a real ``torchrun --nproc_per_node=P -m dgm_runner`` launch of one epoch on
a subset of MNIST; the throughput is the subset size over the run's own
``time_per_epoch_s`` (training only: start-up, data loading and evaluation excluded). The
cores are shared fairly: P processes of ``cores / P`` threads each (torchrun would give
every process one thread). Points are interleaved over the repeats; the medians and the
ratio N-process / 1-process throughput are reported (on one CPU the processes share the
same cores, so a ratio near or below 1 is the honest answer there).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from dgm_runner.bench.harness import Bench
from dgm_runner.io.layout import RunPaths

#: experiment -> (overrides, images per epoch): the MLP VAE and the CPU score U-Net.
RUNS = {
    "vae_mlp": (["experiment=vae_mlp"], 20000),
    "edm_unet": (["experiment=edm_mnist_cpu", "~sample_metrics.bpd"], 2000),
}


def launch(overrides: list[str], procs: int, threads: int, workdir: Path) -> float:
    """One torchrun launch of one epoch; its training seconds (``time_per_epoch_s``).

    Raises:
        RuntimeError: the launch failed (its stderr's tail in the message).
    """
    torchrun = Path(sys.executable).with_name("torchrun")
    run_dir = Path(tempfile.mkdtemp(dir=workdir, prefix=f"p{procs}_"))
    cmd = [
        str(torchrun),
        f"--nproc_per_node={procs}",
        "--standalone",
        "-m",
        "dgm_runner",
        *overrides,
        "trainer.epochs=1",
        "trainer.progress=false",
        f"trainer.num_threads={threads}",
        "logger=none",
        "~sample_metrics.fid",
        "dataset.test_subset=500",
        f"hydra.run.dir={run_dir}",
    ]
    out = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr[-2000:]}")
    return float(json.loads(RunPaths(run_dir).metrics.read_text())["time_per_epoch_s"])


def ddp_study(bench: Bench, procs: tuple[int, ...] = (1, 2)) -> None:
    """Images per second of one training epoch for each process count in ``procs`` and
    each run of :data:`RUNS`, with the ratio to 1 process. Writes ``results["ddp"]``."""
    cores = os.cpu_count() or 1
    reps = 2 if bench.quick else 3
    out: dict[str, Any] = {"cores": cores, "repeats": reps}
    with tempfile.TemporaryDirectory(prefix="dgm_bench_ddp_") as tmp:
        for name, (overrides, n) in RUNS.items():
            if bench.quick:
                n //= 4
            secs: dict[int, list[float]] = {p: [] for p in procs}
            for _ in range(reps):
                for p in procs:
                    ov = [*overrides, f"dataset.subset={n}"]
                    secs[p].append(launch(ov, p, max(1, cores // p), Path(tmp)))
            rate = {p: n / statistics.median(s) for p, s in secs.items()}
            out[name] = {
                "images": n,
                "seconds": secs,
                "images_per_s": rate,
                "ratio_to_1": {p: rate[p] / rate[procs[0]] for p in procs},
            }
            print(
                f"  {name} ({n} images): "
                + ", ".join(
                    f"{p} proc x {max(1, cores // p)} threads {rate[p]:.0f} img/s "
                    f"({rate[p] / rate[procs[0]]:.2f}x)"
                    for p in procs
                ),
                flush=True,
            )
    bench.results["ddp"] = out
