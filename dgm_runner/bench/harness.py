"""The bench's shared state (:class:`Bench`) and "ours": one epoch of the runner.

Every section takes the :class:`Bench` of the run: its device, its sizes (``--quick``
subsets), the binarized MNIST tensors the baselines share, and ``results``, the dict
that becomes ``bench.json``.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import dgm_runner
from dgm_runner.io.artifacts import read_jsonl
from dgm_runner.io.layout import RunPaths
from dgm_runner.loop import train

# Overrides of every runner epoch: no logging, a small test split; sample metrics (FID, AIS)
# and figures are removed too (see :func:`strip_extras`): they cost minutes, not epoch time.
COMMON = [
    "trainer.epochs=1",
    "trainer.progress=false",
    "logger=none",
    "dataset.test_subset=1000",
    "trainer.n_samples=16",
    "trainer.export_name=null",
]
RBM_EXTRA = ["sampler.steps=20"]


def quiet() -> None:
    """The bench's output is its table: silence warnings and the runner's logging (set
    when the script runs, not on import: tests import these modules)."""
    warnings.filterwarnings("ignore")
    logging.getLogger("dgm_runner").setLevel(logging.ERROR)
    logging.getLogger("torch.utils.cpp_extension").setLevel(
        logging.ERROR
    )  # "No CUDA runtime" on CPU compiles


def compose_cfg(*overrides: str) -> DictConfig:
    """The composed ``train`` config for ``overrides`` (Hydra's compose API, as the tests)."""
    with initialize_config_dir(config_dir=dgm_runner.CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=list(overrides))


def strip_extras(overrides: list[str]) -> list[str]:
    """``overrides`` plus ``~sample_metrics.<name>`` / ``~figures.<name>`` for every sample
    metric and figure the composed config has (FID, AIS, ...: evaluation cost, not epoch time)."""
    cfg = compose_cfg(*overrides)
    drop = [f"~sample_metrics.{k}" for k in (cfg.get("sample_metrics") or {})]
    drop += [f"~figures.{k}" for k in (cfg.get("figures") or {})]
    return list(overrides) + drop


class Bench:
    """Shared state of one bench run: device, sizes, the MNIST tensors for baselines.

    Args:
        device: where every contender runs (sklearn always on CPU).
        quick: subsets and fewer repeats.
        repeats: interleaved repetitions per group.
    """

    def __init__(self, device: torch.device, quick: bool, repeats: int) -> None:
        self.device = device
        self.quick = quick
        self.repeats = repeats
        self.cuda = device.type == "cuda"
        self.results: dict[str, Any] = {}
        self._binary: dict[float, torch.Tensor] = {}
        self.gibbs: tuple[int, int] | None = None  # (chains, sweeps) override of the sampling study
        self.pc_steps: int | None = None
        self.full_sampling = False  # time the samplers at their full length too

    # -- sizes: full MNIST, or subsets in --quick
    def subset(self, group: str) -> int | None:
        """Training images per epoch for ``group`` (None: all 60 000)."""
        if self.quick:
            return {"vae2": 5000, "rbm_cd25": 5000}.get(group, 15000)
        return {"vae2": 20000, "rbm_cd25": 20000}.get(group)

    def binary_x(self, threshold: float, n: int | None) -> torch.Tensor:
        """``(n, 784)`` binarized MNIST training images (float32, CPU), as the runner sees them."""
        if threshold not in self._binary:
            from dgm_runner.data.vision import load_vision_dataset

            data = load_vision_dataset(
                "mnist", binarize="threshold", threshold=threshold, download=False
            )
            self._binary[threshold] = data.train_x.reshape(data.train_x.shape[0], -1)
        x = self._binary[threshold]
        return x if n is None else x[:n]

    # -- ours
    def runner_overrides(
        self, experiment: str, *extra: str, subset: int | None = None
    ) -> list[str]:
        """The overrides of one runner epoch of ``experiment`` on this bench's device."""
        out = [
            f"experiment={experiment}",
            *COMMON,
            f"trainer.device={self.device.type}",
            f"trainer.num_threads={torch.get_num_threads()}",  # the bench's (--threads)
        ]
        if experiment == "rbm_cdk":
            out += RBM_EXTRA
        if subset is not None:
            out.append(f"dataset.subset={subset}")
        return strip_extras(out + list(extra))

    def runner_epoch(self, overrides: list[str]) -> dict[str, Any]:
        """Train with ``overrides`` in a temporary run directory ("ours" of every group).

        Returns:
            ``{"time": training seconds of the last epoch (the runner's own
            ``train/epoch_time_s``), "epochs": [seconds per epoch], "peak_mem_mb": peak
            CUDA memory (MB) or None, "images": training images per epoch, "threads": the
            run's CPU thread count}``.
        """
        cfg = compose_cfg(*overrides)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        with tempfile.TemporaryDirectory(prefix="dgm_bench_") as run_dir:
            final = train(cfg, run_dir)
            records = read_jsonl(RunPaths(run_dir).metrics_log)
        epochs = [r["train/epoch_time_s"] for r in records]
        t = final.get("train/epoch_time_s", epochs[-1] if epochs else final["time_per_epoch_s"])
        n = cfg.dataset.get("subset") or 60000
        return {
            "time": t,
            "epochs": epochs,
            "peak_mem_mb": self.peak_mem(),
            "images": n,
            "threads": final.get("num_threads"),
        }

    def peak_mem(self) -> float | None:
        """Peak CUDA memory since the last reset (MB), None on CPU."""
        return torch.cuda.max_memory_allocated(self.device) / 2**20 if self.cuda else None
