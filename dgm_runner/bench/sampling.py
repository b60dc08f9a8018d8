"""Section ``sampling``: seconds of our samplers against plain loops written the obvious
way (:mod:`dgm_runner.bench.baselines`), and the ratio plain / ours from the same run."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from dgm_runner.bench.baselines import plain_ancestral, plain_gibbs, plain_predictor_corrector
from dgm_runner.bench.harness import Bench, compose_cfg
from dgm_runner.bench.timing import sync
from dgm_runner.build import build_components


def timed(device: torch.device, fn: Callable[..., Any], *args: Any) -> float:
    """Wall-clock seconds of ``fn(*args)``, CUDA work synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn(*args)
    sync(device)
    return time.perf_counter() - t0


def compare_chains(
    bench: Bench,
    out: dict[str, Any],
    label: str,
    ours: Callable[[int], Any],
    plain: Callable[[int], Any],
    steps: int,
    **meta: Any,
) -> None:
    """Time the chain samplers ``ours(n)`` and ``plain(n)`` (``n`` steps each) and write
    ``out[label]``: seconds of both at the compared length, ours extrapolated to ``steps``,
    milliseconds per step and the ratio plain / ours.

    A chain of fixed size costs the same per step: both contenders are timed at a
    twentieth of the length (all of it with --quick or --full-sampling) and the full
    length is extrapolated from ours, which keeps `make bench` under 10 minutes.
    """
    short = steps if bench.quick or bench.full_sampling else max(1, steps // 20)
    t_ours, t_plain = timed(bench.device, ours, short), timed(bench.device, plain, short)
    out[label] = {
        "ours_s": t_ours * steps / short,
        "extrapolated": short != steps,
        "steps": steps,
        "compared_at_steps": short,
        "ours_short_s": t_ours,
        "plain_short_s": t_plain,
        "ratio": t_plain / t_ours,
        "ours_ms_per_step": t_ours / short * 1000,
        "plain_ms_per_step": t_plain / short * 1000,
        "plain_s_extrapolated": t_plain * steps / short,
        **meta,
    }
    print(
        f"  {label}: at {short} steps ours {t_ours:.2f}s, plain {t_plain:.2f}s; {steps} steps: "
        "ours "
        f"{out[label]['ours_s']:.1f}s{' (extrapolated)' if short != steps else ''}",
        flush=True,
    )


def gibbs_chains(bench: Bench, out: dict[str, Any]) -> None:
    """RBM block-Gibbs chains (experiment=rbm_cdk's sampler) against :func:`plain_gibbs`:
    10 000 chains x 1000 sweeps (``--quick``: 1000 x 200; ``--gibbs`` sets both). Writes
    ``out["rbm_gibbs"]`` (:func:`compare_chains`)."""
    dev = bench.device
    n_chains, n_steps = bench.gibbs or ((1000, 200) if bench.quick else (10000, 1000))
    comps = build_components(compose_cfg(*bench.runner_overrides("rbm_cdk")), dev)
    rbm, gibbs = comps.model, comps.sampler

    def our_gibbs(steps: int) -> torch.Tensor:
        gibbs.steps = steps
        return gibbs.sample(rbm, n_chains, torch.Generator(device=dev).manual_seed(0))

    compare_chains(
        bench,
        out,
        "rbm_gibbs",
        our_gibbs,
        lambda steps: plain_gibbs(rbm, n_chains, steps, dev),
        n_steps,
        chains=n_chains,
    )


def vae_ancestral(bench: Bench, out: dict[str, Any]) -> None:
    """10 000 ancestral samples of experiment=vae_mlp's VAE, ours against
    :func:`plain_ancestral` (one pass: no steps). Writes ``out["vae_ancestral"]``:
    ``{"ours_s", "plain_s"`` (seconds), ``"ratio"`` (plain / ours), ``"samples"}``."""
    dev = bench.device
    comps = build_components(compose_cfg(*bench.runner_overrides("vae_mlp")), dev)
    vae, anc = comps.model, comps.sampler
    vae.eval()
    n_vae = 10000

    def our_vae(_: int) -> torch.Tensor:
        return anc.sample(vae, n_vae, torch.Generator(device=dev).manual_seed(0))

    t_ours, t_plain = (
        timed(dev, our_vae, 1),
        timed(dev, lambda _: plain_ancestral(vae, n_vae, dev), 1),
    )
    out["vae_ancestral"] = {
        "ours_s": t_ours,
        "plain_s": t_plain,
        "ratio": t_plain / t_ours,
        "samples": n_vae,
    }
    print(
        f"  vae_ancestral: ours {t_ours:.2f}s, plain {t_plain:.2f}s ({n_vae} samples)", flush=True
    )


def predictor_corrector(bench: Bench, out: dict[str, Any]) -> None:
    """experiment=score_sde_mnist's predictor-corrector sampler for 64 images against
    :func:`plain_predictor_corrector`: 500 steps (``--quick``: 50; ``--pc-steps`` sets it).
    Writes ``out["pc_sampler"]`` (:func:`compare_chains`)."""
    dev = bench.device
    pc_steps = bench.pc_steps or (50 if bench.quick else 500)
    comps = build_components(
        compose_cfg(*bench.runner_overrides("score_sde_mnist", "dataset.subset=128")), dev
    )
    net, pc = comps.model, comps.sampler
    net.eval()

    def our_pc(steps: int) -> torch.Tensor:
        pc.steps = steps
        return pc.sample(net, 64, torch.Generator(device=dev).manual_seed(0))

    compare_chains(
        bench,
        out,
        "pc_sampler",
        our_pc,
        lambda steps: plain_predictor_corrector(net, pc, steps, dev),
        pc_steps,
        images=64,
    )


def sampling_study(bench: Bench) -> None:
    """Sampling against plain loops written the obvious way: 10 000 RBM Gibbs chains x
    1000 sweeps, 10 000 VAE ancestral samples, the predictor-corrector sampler at 500
    steps for 64 images (untrained models: timings only; ``--quick``: 1000 x 200, 10 000,
    50 steps). The chain samplers are timed, ours and plain, at a twentieth of their length and
    the full length extrapolated (the cost per step is constant; ``--full-sampling`` times
    it all), which keeps the full run inside its time budget. Seconds, and ratios plain /
    ours measured in the same run. Writes ``results["sampling"]``."""
    out: dict[str, Any] = {}
    gibbs_chains(bench, out)
    vae_ancestral(bench, out)
    predictor_corrector(bench, out)
    bench.results["sampling"] = out
