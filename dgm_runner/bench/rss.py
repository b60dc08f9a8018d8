"""Section ``rss``: the peak resident set size (MB) of one training epoch per experiment,
each in a fresh subprocess (``python -m dgm_runner.bench.rss OVERRIDES...``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dgm_runner
from dgm_runner.bench.harness import COMMON, RBM_EXTRA, Bench, compose_cfg, quiet, strip_extras
from dgm_runner.loop import train

# Extra overrides per experiment for the RSS subprocesses (expensive epochs on a subset).
RSS_EXTRA: dict[str, list[str]] = {
    "rbm_cdk": RBM_EXTRA,
    "classifier_mnist": ["dataset.subset=8192"],
    "classifier_fashion": ["dataset.subset=8192"],
    "vae_cnn": ["dataset.subset=8192"],
    "gan_mnist": ["dataset.subset=2048"],
    "score_sde_mnist": ["dataset.subset=1024", "sampler.steps=10", "trainer.eval_every=1"],
    "vqvae_fashion": ["dataset.subset=2048"],
    "vqvae_fashion_prior": ["dataset.subset=2048"],
    # The IWAE evaluation decodes at most _IWAE_ROWS rows at once: 250 test images x k = 1000
    # reach the same peak as 1000 images, in a quarter of the time.
    "vae_bce": ["dataset.test_subset=250"],
    "vae_bernoulli_2d": ["dataset.test_subset=250"],
    "cvae": ["dataset.test_subset=250"],
    "dsm_toy2d": [],
}


def peak_rss_mb() -> float:
    """This process's peak resident set size (MB): ``VmHWM`` of ``/proc/self/status``.

    Not ``getrusage().ru_maxrss``: on Linux that survives ``fork`` + ``exec``, so a child
    started by a big parent reports the parent's size. Falls back to it elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, kB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def rss_child(overrides: list[str]) -> None:
    """(Subprocess) train one epoch with ``overrides`` and print the peak RSS as JSON."""
    cfg = compose_cfg(*overrides)
    t0 = time.perf_counter()
    info: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="dgm_bench_rss_") as run_dir:
            final = train(cfg, run_dir)
        info["epoch_time_s"] = final.get("train/epoch_time_s", final.get("time_per_epoch_s"))
        info["train_images"] = cfg.dataset.get("subset")
    except Exception as err:
        info["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    info["wall_s"] = time.perf_counter() - t0
    info["peak_rss_mb"] = peak_rss_mb()
    print("RSS_JSON " + json.dumps(info), flush=True)


def _child_env() -> dict[str, str]:
    """This process's environment with the directory holding ``dgm_runner`` first on
    ``PYTHONPATH``: the child imports the same checkout, installed or not."""
    root = str(Path(dgm_runner.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def rss_study(bench: Bench, which: str) -> None:
    """Peak RSS of one training epoch (plus its evaluation and sample grid) per experiment,
    each in a fresh subprocess (:func:`peak_rss_mb`). Experiments trained on a subset get an
    estimate for the full training set: + (60 000 - subset) x 784 x 4 bytes of float32
    images. Writes ``results["rss"]``."""
    exps = sorted(p.stem for p in Path(dgm_runner.CONFIG_DIR, "experiment").glob("*.yaml"))
    if which == "core":
        exps = [e for e in exps if e in ("rbm_cdk", "vae_mlp", "vae_cnn")]
    out: dict[str, Any] = {}
    stage1 = tempfile.TemporaryDirectory(
        prefix="dgm_bench_vqvae_"
    )  # for the prior's model.vqvae.run_dir
    for exp in exps:
        if "test_subset" not in compose_cfg(f"experiment={exp}").dataset:
            continue  # not an image dataset (dsm_toy2d's 2-D points)
        extra = RSS_EXTRA.get(exp, [])
        if exp == "vqvae_fashion_prior":  # needs a finished stage 1: one small epoch, here
            stage1_ov = strip_extras(
                ["experiment=vqvae_fashion", *COMMON, "trainer.device=cpu", "dataset.subset=512"]
            )
            train(compose_cfg(*stage1_ov), Path(stage1.name) / "run")
            extra = [*extra, f"model.vqvae.run_dir={Path(stage1.name) / 'run'}"]
        ov = strip_extras([f"experiment={exp}", *COMMON, "trainer.device=cpu", *extra])
        proc = subprocess.run(
            [sys.executable, "-m", "dgm_runner.bench.rss", *ov],
            capture_output=True,
            text=True,
            timeout=600,
            env=_child_env(),
        )
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RSS_JSON ")), None)
        if line is None:
            info = {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
        else:
            info = json.loads(line[len("RSS_JSON ") :])
        sub = info.get("train_images")
        if "peak_rss_mb" in info:
            info["full_data_estimate_mb"] = info["peak_rss_mb"] + (
                (60000 - sub) * 784 * 4 / 2**20 if sub else 0.0
            )
            info["under_2gb"] = info["full_data_estimate_mb"] < 2048
        info["overrides"] = extra
        out[exp] = info
        status = (
            info.get("error")
            or f"{info['peak_rss_mb']:.0f} MB (full data ~{info['full_data_estimate_mb']:.0f} MB)"
        )
        print(f"  rss {exp}: {status}", flush=True)
    stage1.cleanup()
    bench.results["rss"] = out


if __name__ == "__main__":  # the subprocess of rss_study
    quiet()
    rss_child(sys.argv[1:])
