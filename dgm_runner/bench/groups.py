"""Section ``groups``: our training epoch against its baselines, group by group.

Each group times ours and its baselines interleaved (:func:`~dgm_runner.bench.timing.run_group`:
seconds per epoch, ratios baseline / ours from the same run) and then profiles our step
for its matmul bound (:func:`~dgm_runner.bench.bound.profile_and_bound`).
"""

from __future__ import annotations

from typing import Any, Callable

from dgm_runner.bench.baselines import (
    dataloader_vae_epoch,
    learnergy_rbm_epoch,
    plain_cd_epoch,
    sklearn_rbm_epoch,
)
from dgm_runner.bench.bound import profile_and_bound
from dgm_runner.bench.harness import Bench, compose_cfg
from dgm_runner.bench.timing import run_group

#: VAE groups -> their experiment; RBM groups -> k of CD-k (experiment=rbm_cdk).
VAE_GROUPS = (("vae1", "vae_mlp"), ("vae2", "vae_cnn"), ("vae_bce", "vae_bce"))
RBM_GROUPS = (("rbm_cd1", 1), ("rbm_cd25", 25))


def vae_group(bench: Bench, name: str, experiment: str) -> None:
    """Seconds per epoch of ours (``experiment``) against the DataLoader loop on the same
    model, and their ratio; for ``vae1`` also ours with ``trainer.precision=bf16``
    (autocast: AVX512-BF16 CPUs, CUDA). Writes ``results["groups"][name]``."""
    subset = bench.subset(name)
    overrides = bench.runner_overrides(experiment, subset=subset)
    cfg = compose_cfg(*overrides)
    contenders = {
        "ours": lambda: bench.runner_epoch(overrides),
        "dataloader": lambda: dataloader_vae_epoch(bench, cfg, subset),
    }
    if name == "vae1":
        contenders["ours_bf16"] = lambda: bench.runner_epoch([*overrides, "trainer.precision=bf16"])
    run_group(bench, name, contenders)
    bench.results["groups"][name].update({"experiment": experiment, "overrides": overrides})


def rbm_group(bench: Bench, name: str, k: int) -> None:
    """Seconds per epoch of our CD-k against scikit-learn (k = 1), learnergy and the plain
    PyTorch loop, and the ratios baseline / ours. Writes ``results["groups"][name]``."""
    subset = bench.subset(name)
    overrides = bench.runner_overrides("rbm_cdk", f"objective.k={k}", subset=subset)
    cfg = compose_cfg(*overrides)
    contenders: dict[str, Callable[[], dict[str, Any]]] = {
        "ours": lambda: bench.runner_epoch(overrides)
    }
    if k == 1:
        contenders["sklearn"] = lambda: sklearn_rbm_epoch(bench, cfg, subset)
    contenders["learnergy"] = lambda: learnergy_rbm_epoch(bench, cfg, k, subset)
    contenders["plain_torch"] = lambda: plain_cd_epoch(bench, cfg, k, subset)
    run_group(bench, name, contenders)
    bench.results["groups"][name].update({"experiment": "rbm_cdk", "overrides": overrides})


def groups_section(bench: Bench, groups: list[str]) -> None:
    """Time the ``groups`` asked for (VAE groups first, then RBM groups, each followed by the
    profile and matmul bound of our step). Writes ``results["groups"]`` and
    ``results["bounds"]``."""
    for g, exp in VAE_GROUPS:
        if g in groups:
            vae_group(bench, g, exp)
            profile_and_bound(bench, g, bench.results["groups"][g]["overrides"])
    for g, k in RBM_GROUPS:
        if g in groups:
            rbm_group(bench, g, k)
            profile_and_bound(bench, g, bench.results["groups"][g]["overrides"])
