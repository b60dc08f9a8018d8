"""The matmul bound of our training step: what an epoch would cost if nothing but its
matrix products ran (the step's GEMMs replayed alone plus its profiled convolution kernel
time), and the torch.profiler table that explains a missed target."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from dgm_runner.bench.harness import Bench, compose_cfg
from dgm_runner.bench.timing import quiet_stderr, sync
from dgm_runner.build import build_components, make_optimizer
from dgm_runner.config import trainer_config
from dgm_runner.epoch import Averager, train_step
from dgm_runner.objectives.base import Batch

# GEMM-like ops replayed for the matmul-only bound; ops whose name contains "conv" are
# counted by their profiled kernel time instead.
# op name -> (torch function, number of tensor arguments) for the replay
MM_OPS = {
    "aten::mm": (torch.mm, 2),
    "aten::addmm": (torch.addmm, 3),
    "aten::bmm": (torch.bmm, 2),
    "aten::baddbmm": (torch.baddbmm, 3),
    "aten::mv": (torch.mv, 2),
    "aten::addmv": (torch.addmv, 3),
}
# The profile rows that are the step's matrix products (the bound), not overhead.
MATMUL_OPS = {
    *MM_OPS,
    "aten::addmm_",
    "aten::mkldnn_convolution",
    "aten::convolution_backward",
    "aten::_convolution",
}


def _step_setup(bench: Bench, overrides: list[str]):
    """Build our components for ``overrides`` and a function running ``n`` of our
    training steps exactly as the loop does (:func:`dgm_runner.epoch.train_step`)."""
    cfg = compose_cfg(*overrides)
    torch.manual_seed(0)
    comps = build_components(cfg, bench.device)
    model, objective, data = comps.model, comps.objective, comps.data
    impl = trainer_config(cfg).optimizer_impl
    optimizers = {
        g: make_optimizer(p, cfg.optimizer, impl) for g, p in objective.param_groups(model).items()
    }
    bs = cfg.trainer.batch_size
    n_train = data.train_x.shape[0]
    perm = torch.randperm(n_train, device=bench.device)
    state = {"step": 0}

    def run(n: int) -> None:
        window = Averager()
        for _ in range(n):
            i = state["step"] % (n_train // bs)
            idx = perm[i * bs : (i + 1) * bs]
            batch = Batch(data.train_x.index_select(0, idx), data.train_y.index_select(0, idx))
            train_step(model, objective, optimizers, batch, state["step"], window)
            state["step"] += 1
        window.means()  # one host sync, as the loop's log interval
        sync(bench.device)

    return run, n_train / bs


def profile_and_bound(
    bench: Bench, name: str, overrides: list[str], n_steps: int = 20
) -> dict[str, Any]:
    """Profile ``n_steps`` of our step and derive the compute bound of an epoch.

    The bound is the step's GEMMs (``mm``/``addmm``/``bmm``/``mv``... with the recorded
    shapes, on fresh contiguous tensors) replayed alone, plus the profiled time of its
    convolution kernels, times the steps per epoch: what the epoch would cost if nothing
    but its matrix products ran.

    Returns:
        ``{"bound_s", "gemm_s", "conv_s"`` (seconds per epoch of the group's images),
        ``"gemm_calls_per_step", "step_ms"`` (unprofiled milliseconds per step),
        ``"steps_per_epoch", "top_ops": [{"op", "ms_per_epoch", "calls_per_step",
        "share"`` (of the profiled self time)``}...]}``; also written to
        ``results["bounds"][name]``.
    """
    from torch.profiler import ProfilerActivity, profile

    run, steps_per_epoch = _step_setup(bench, overrides)
    run(10)  # warm-up
    t0 = time.perf_counter()
    run(n_steps)
    step_ms = (time.perf_counter() - t0) / n_steps * 1000
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if bench.cuda else [])
    with quiet_stderr(), profile(activities=activities, record_shapes=True) as prof:
        run(n_steps)
    mm_calls, conv_us = [], 0.0
    for evt in prof.events():
        if evt.name in MM_OPS:
            mm_calls.append((evt.name, [list(s) for s in evt.input_shapes]))
        elif "conv" in evt.name:
            conv_us += evt.self_device_time_total if bench.cuda else evt.self_cpu_time_total
    gemm_s = _replay_gemms(bench, mm_calls) * steps_per_epoch / n_steps
    conv_s = conv_us / 1e6 * steps_per_epoch / n_steps
    table = prof.key_averages()
    key = "self_device_time_total" if bench.cuda else "self_cpu_time_total"
    total = sum(getattr(e, key) for e in table) or 1.0
    top = sorted(table, key=lambda e: getattr(e, key), reverse=True)[:10]
    top_ops = [
        {
            "op": e.key,
            "ms_per_epoch": getattr(e, key) / 1000 * steps_per_epoch / n_steps,
            "calls_per_step": e.count / n_steps,
            "share": getattr(e, key) / total,
        }
        for e in top
    ]
    out = {
        "bound_s": gemm_s + conv_s,
        "gemm_s": gemm_s,
        "conv_s": conv_s,
        "gemm_calls_per_step": len(mm_calls) / n_steps,
        "step_ms": step_ms,
        "steps_per_epoch": steps_per_epoch,
        "top_ops": top_ops,
    }
    bench.results.setdefault("bounds", {})[name] = out
    return out


def _replay_gemms(bench: Bench, calls: list[tuple[str, list[list[int]]]], rounds: int = 3) -> float:
    """Seconds for one pass over ``calls`` (the median of ``rounds`` passes)."""
    dev = bench.device
    ops = []
    for name, shapes in calls:
        if name in MM_OPS:
            fn, n_args = MM_OPS[name]
            ops.append((fn, [torch.randn(s, device=dev) if s else None for s in shapes[:n_args]]))
    for fn, args in ops:  # warm-up
        fn(*args)
    times = []
    for _ in range(rounds):
        sync(dev)
        t0 = time.perf_counter()
        for fn, args in ops:
            fn(*args)
        sync(dev)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
