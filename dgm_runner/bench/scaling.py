"""Section ``scale``: how the epoch time (seconds) grows with CD-k's k, VAE1's latent size
N_z and the number of training images, with least-squares fits."""

from __future__ import annotations

import statistics
from typing import Any

from dgm_runner.bench.harness import Bench
from dgm_runner.bench.timing import fit_line


def scale_study(bench: Bench) -> None:
    """Epoch time (seconds, our ``train/epoch_time_s``) against k (CD-k), N_z (VAE1) and
    the dataset size (VAE1, RBM CD-1): one epoch per point, on subsets (the cost per image
    is what scales), with ratios to the smallest point and linear fits (R^2; the intercept
    of the dataset-size fit is the fixed cost in seconds). Writes ``results["scale"]``."""
    reps = 1
    out: dict[str, Any] = {}

    def sweep(label: str, points: dict[Any, list[str]]) -> dict[Any, float]:
        times: dict[Any, list[float]] = {p: [] for p in points}
        for _ in range(reps):
            for p, ov in points.items():
                times[p].append(bench.runner_epoch(ov)["time"])
        med = {p: statistics.median(t) for p, t in times.items()}
        print(f"  {label}: " + ", ".join(f"{p}: {v:.2f}s" for p, v in med.items()), flush=True)
        return med

    sub_k = 5000 if bench.quick else 10000
    ks = [1, 5, 25]
    med = sweep(
        f"CD-k ({sub_k} images)",
        {k: bench.runner_overrides("rbm_cdk", f"objective.k={k}", subset=sub_k) for k in ks},
    )
    fit = fit_line(ks, [med[k] for k in ks])
    # our step does 2k + 4 matmuls of (B, 784) x (784, 128) size: that model predicts
    # t(k)/t(1) = (2k+4)/6
    out["cd_k"] = {
        "images": sub_k,
        "seconds": med,
        "per_60k_images": {k: v * 60000 / sub_k for k, v in med.items()},
        "ratio_to_k1": {k: med[k] / med[1] for k in ks},
        "matmul_model_ratio": {k: (2 * k + 4) / 6 for k in ks},
        "linear_fit": fit,
        "seconds_per_gibbs_sweep_per_60k": fit["slope"] * 60000 / sub_k,
        "linear": fit["r2"] > 0.98,
    }
    sub_z = 10000 if bench.quick else 30000
    zs = [2, 5, 10, 20]
    med = sweep(
        f"VAE1 N_z ({sub_z} images)",
        {z: bench.runner_overrides("vae_mlp", f"model.latent_dim={z}", subset=sub_z) for z in zs},
    )
    out["vae1_latent_dim"] = {
        "images": sub_z,
        "seconds": med,
        "ratio_to_nz2": {z: med[z] / med[2] for z in zs},
        "linear_fit": fit_line(zs, [med[z] for z in zs]),
    }
    sizes = [3750, 7500, 15000] if bench.quick else [7500, 15000, 30000, 60000]
    for exp, label in (("vae_mlp", "vae1"), ("rbm_cdk", "rbm_cd1")):
        med = sweep(
            f"{label} dataset.subset", {n: bench.runner_overrides(exp, subset=n) for n in sizes}
        )
        fit = fit_line(sizes, [med[n] for n in sizes])
        out[f"{label}_dataset_size"] = {
            "seconds": med,
            "us_per_image": {n: med[n] / n * 1e6 for n in sizes},
            "linear_fit": fit,
            "fixed_cost_s": fit["intercept"],
        }
    bench.results["scale"] = out
