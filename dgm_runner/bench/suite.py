"""One whole bench run: the sections asked for, the printed report, ``bench.json`` and
``bench.md`` (what ``scripts/bench.py`` calls after parsing its flags)."""

from __future__ import annotations

import json
import os
import platform
import time
from argparse import Namespace
from pathlib import Path
from typing import Any

import torch

from dgm_runner.bench.compile_cost import compile_study
from dgm_runner.bench.ddp import ddp_study
from dgm_runner.bench.groups import groups_section
from dgm_runner.bench.harness import Bench
from dgm_runner.bench.report import check_targets, markdown_report, print_report
from dgm_runner.bench.rss import rss_study
from dgm_runner.bench.sampling import sampling_study
from dgm_runner.bench.scaling import scale_study
from dgm_runner.bench.smoke import smoke_study
from dgm_runner.bench.threads import threads_study
from dgm_runner.bench.timing import cpu_name, load_avg
from dgm_runner.bench.unet import unet_study

#: The sections of ``--only``, in the order they run.
SECTIONS = ("groups", "compile", "scale", "rss", "sampling", "ddp", "threads")
#: Sections run only when named in ``--only`` (long: ``unet`` takes about 2 minutes in
#: ``--quick``, 10 in a full run, beyond ``make bench``'s 10-minute budget).
EXTRA_SECTIONS = ("smoke", "unet")


def make_bench(args: Namespace) -> Bench:
    """The :class:`Bench` of ``args`` (device, repeats, sampling sizes) with its
    ``results["meta"]``: device, CPU, threads, versions, load average at the start."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    repeats = args.repeats or (3 if args.quick else 5)
    bench = Bench(device, args.quick, repeats)
    if args.gibbs:
        bench.gibbs = tuple(int(v) for v in args.gibbs.split(","))
    bench.pc_steps = args.pc_steps
    bench.full_sampling = args.full_sampling
    bench.results["meta"] = {
        "device": str(device)
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "quick": args.quick,
        "repeats": repeats,
        "loadavg_start": load_avg(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return bench


def finish_meta(meta: dict[str, Any], t_start: float) -> None:
    """Add the end load average, the wall-clock seconds of the run and, when other jobs
    kept the cores busy, a ``load_warning`` (absolute seconds inflated, ratios noisier)."""
    meta["loadavg_end"] = load_avg()
    meta["wall_s"] = time.perf_counter() - t_start
    # the load at the end includes this process's own threads: count only the rest
    loads = [
        v[0] - own
        for v, own in ((meta["loadavg_start"], 0), (meta["loadavg_end"], torch.get_num_threads()))
        if v
    ]
    if loads and max(loads) > 0.75 * (os.cpu_count() or 1):
        meta["load_warning"] = (
            f"the machine was busy (1-min load of other jobs up to {max(loads):.2f} on "
            f"{os.cpu_count()} cores): other jobs "
            "share the cores, absolute times are inflated and ratios noisier (torch's "
            "multi-threaded "
            "kernels suffer most: --threads 1 is steadier on a busy machine)"
        )


def write_results(bench: Bench, out: str, merge: bool) -> dict[str, Any]:
    """Write ``bench.results`` to ``out`` (JSON; with ``merge``, the sections run now
    replace those of an existing file and its ``meta_runs`` gets this run's meta) and, when
    it has groups, the markdown table next to it (``.md``). Returns what was written."""
    results = bench.results
    if merge and Path(out).is_file():
        results = {
            **json.loads(Path(out).read_text()),
            **{k: v for k, v in results.items() if k != "meta"},
        }
        results.setdefault("meta_runs", []).append(bench.results["meta"])
    Path(out).write_text(json.dumps(results, indent=1, default=str))
    if "groups" in results:
        Path(out).with_suffix(".md").write_text(markdown_report(results))
    return results


#: The sections after ``groups``, in the order they run: (name, printed header, study).
_STUDIES = (
    ("compile", "compile", lambda bench, args: compile_study(bench)),
    ("scale", "scale", lambda bench, args: scale_study(bench)),
    (
        "rss",
        "peak RSS",
        lambda bench, args: rss_study(bench, args.rss or ("core" if args.quick else "all")),
    ),
    ("sampling", "sampling", lambda bench, args: sampling_study(bench)),
    ("ddp", "ddp: 1 vs 2 processes", lambda bench, args: ddp_study(bench)),
    (
        "threads",
        "threads: trainer.num_threads=auto vs torch's default",
        lambda bench, args: threads_study(bench),
    ),
    (
        "unet",
        "unet: updates/s of our U-Net step vs a plain PyTorch loop and diffusers' UNet2DModel",
        lambda bench, args: unet_study(bench),
    ),
    (
        "smoke",
        "smoke: every experiment's +debug=smoke run, a fresh process each",
        lambda bench, args: smoke_study(bench),
    ),
)


def run(args: Namespace) -> None:
    """Run the sections of ``args.only`` (see ``scripts/bench.py --help`` for every flag),
    print the report and write ``args.out`` (seconds throughout; ratios baseline / ours
    from this run)."""
    bench = make_bench(args)
    sections = set(args.only.split(","))
    t_start = time.perf_counter()
    print(
        f"bench on {bench.results['meta']['device']}, {torch.get_num_threads()} threads, load "
        f"{load_avg()}",
        flush=True,
    )
    if "groups" in sections:
        groups_section(bench, args.groups.split(","))
        check_targets(bench)
    for name, header, study in _STUDIES:
        if name in sections:
            print(f"\n[{header}]", flush=True)
            study(bench, args)
    meta = bench.results["meta"]
    finish_meta(meta, t_start)
    print_report(bench)
    write_results(bench, args.out, args.merge)
    print(f"\nwrote {args.out} ({meta['wall_s']:.0f} s)")
