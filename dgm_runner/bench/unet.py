"""Section ``unet`` (issue 30): training updates per second of our score U-Net step against
a plain PyTorch loop and against diffusers' ``UNet2DModel`` of about the same parameter
count, all in this one process, on the same device and the same MNIST images.

Contenders of the group (:func:`~dgm_runner.bench.timing.run_group`: one untimed warm-up
round, then interleaved rounds, ``ours`` the reference of the ratios):

* ``ours``: one epoch of the runner (:func:`dgm_runner.loop.train`, its own
  ``train/epoch_time_s``) of ``experiment=fm_mnist_cpu`` on the first ``images`` training
  images: ScoreUNet with channels 16/32/64 (272 737 parameters), flow matching, batch 128,
  Adam 1e-3, EMA 0.999, i.e. :func:`dgm_runner.epoch.train_step` as the real loop runs it
  (``index_select`` batches, the EMA update, logged terms summed on the device).
* ``ours_edm``: the same for ``experiment=edm_mnist_cpu`` (same U-Net and batch, EDM's
  preconditioning and loss): what the other objective costs per update.
* ``plain_torch``: the same U-Net module (``model.net`` of the built ScoreUNet), the flow
  matching loss written inline, ``torch.optim.Adam``, ``zero_grad`` / ``backward`` /
  ``step``, batches by ``randperm`` indexing (:func:`plain_fm_epoch`); no EMA.
* ``diffusers`` and ``diffusers_flops``: diffusers' ``UNet2DModel`` (:data:`DIFFUSERS`),
  attention-free, within :data:`PARAM_TOLERANCE` of our parameter count, with the same loss,
  optimiser and batches (:func:`diffusers_fm_epoch`). ``diffusers`` keeps our widths at 28x28
  and 14x14 (16, 32; 32 at 7x7: 263 025 parameters, 0.96x ours) but has 1.76x our forward
  FLOPs (diffusers' up blocks hold ``layers_per_block + 1`` ResNet blocks and its middle
  block two); ``diffusers_flops`` (8, 16, 48: 297 513 parameters, 1.09x) matches our
  forward FLOPs (0.99x): nearly the same arithmetic in other shapes (narrower at 28x28,
  wider at 7x7), so its ratio is closer to one of implementations. Three blocks, two
  downsamplings: 28 -> 14 -> 7 and back, exactly, so the 28x28 images go in unpadded
  (``sample_size=28``); the time goes in as ``1000 t``, as our U-Net embeds it.

The loss of the inline loops (ours under ``model/sde=linear`` computes the same): data
``x0 = 2 x - 1``, ``t ~ U(0, 1)``, ``eps ~ N(0, I)``, ``x_t = (1 - t) x0 + t eps``, target
``eps - x0``, squared error summed over the pixels and averaged over the batch.

Each call builds a fresh model and optimiser (untimed, ours as well) and times one epoch
of ``images / batch_size`` updates; the rate is updates per second, the ratio of a
contender is its seconds per epoch over ours (= our updates/s over its updates/s; > 1:
ours is faster). Writes ``results["unet"]["fm_mnist_cpu"]``. Not in the default sections
(``make bench``'s 10-minute budget): ``--only unet``, about 2 minutes with ``--quick
--threads 1`` (10 updates per contender and round, 3 rounds), about 10 without ``--quick``
(40 updates, 5 rounds).
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Callable

import torch
from torch import nn

from dgm_runner.bench.harness import Bench, compose_cfg
from dgm_runner.bench.timing import run_group, sync
from dgm_runner.build import build_model

#: The experiment "ours" is, and the one timed beside it (its ratio: edm seconds / fm).
FM_EXPERIMENT, EDM_EXPERIMENT = "fm_mnist_cpu", "edm_mnist_cpu"
#: Training images per epoch (multiples of the batch 128): ``--quick`` and full.
IMAGES = {True: 1280, False: 5120}
#: The largest relative difference allowed between a diffusers model's parameter count
#: and ours.
PARAM_TOLERANCE = 0.2
#: diffusers ``UNet2DModel`` keyword arguments of each diffusers contender (besides
#: ``sample_size=28``, one input and output channel, and the defaults: positional time
#: embedding of width ``4 * block_out_channels[0]``, SiLU, GroupNorm eps 1e-5).
DIFFUSERS: dict[str, dict[str, Any]] = {
    "diffusers": {
        "block_out_channels": (16, 32, 32),
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "down_block_types": ("DownBlock2D",) * 3,
        "up_block_types": ("UpBlock2D",) * 3,
        "add_attention": False,
    },
    "diffusers_flops": {
        "block_out_channels": (8, 16, 48),
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "down_block_types": ("DownBlock2D",) * 3,
        "up_block_types": ("UpBlock2D",) * 3,
        "add_attention": False,
    },
}
#: How the 28x28 images reach diffusers' model (bench.json's ``input``).
INPUT_NOTE = (
    "28x28 unpadded: sample_size=28, three blocks with two stride-2 downsamplings "
    "(28 -> 14 -> 7) and two 2x upsamplings back, as our U-Net; timesteps 1000 t"
)

#: ``forward(net, x_t (B, C, H, W), t (B,)) -> velocity (B, C, H, W)``.
Forward = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def param_count(module: nn.Module) -> int:
    """Number of parameters (scalars) of ``module``."""
    return sum(p.numel() for p in module.parameters())


def forward_mflops(net: nn.Module, forward: Forward, shape: tuple[int, ...] = (1, 28, 28)) -> float:
    """Millions of floating-point operations (a multiply-add counts 2) of one forward pass
    of ``net`` on one ``shape`` image (:class:`torch.utils.flop_counter.FlopCounterMode`:
    convolutions, matrix products; not the elementwise ops)."""
    from torch.utils.flop_counter import FlopCounterMode

    x, t = torch.zeros(1, *shape), torch.full((1,), 0.5)
    net = net.to("cpu")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        forward(net, x, t)
    return counter.get_total_flops() / 1e6


def ours_forward(net: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Our U-Net's velocity: ``net(x, t)`` (it embeds ``1000 t``); ``(B, C, H, W)``, ``(B,)``
    -> ``(B, C, H, W)``."""
    return net(x, t)


def diffusers_forward(net: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """diffusers ``UNet2DModel``'s output at timesteps ``1000 t`` (the scale of its
    sinusoidal embedding and of ours); ``(B, C, H, W)``, ``(B,)`` -> ``(B, C, H, W)``."""
    return net(x, 1000.0 * t).sample


def diffusers_unet(name: str = "diffusers") -> nn.Module:
    """A fresh diffusers ``UNet2DModel`` of :data:`DIFFUSERS` ``[name]`` for ``(B, 1, 28,
    28)`` images (initialised from torch's global RNG).

    Raises:
        ImportError: diffusers is not installed (``pip install diffusers``, the ``bench``
            extra).
    """
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=28, in_channels=1, out_channels=1, **DIFFUSERS[name])


def fm_cfg(experiment: str = FM_EXPERIMENT):
    """The composed config of ``experiment`` (only its model, batch and learning rate are
    read by the inline loops)."""
    return compose_cfg(f"experiment={experiment}")


def our_net(cfg, seed: int = 0) -> nn.Module:
    """The U-Net of ``cfg``'s ScoreUNet (``model.net``, initialised under ``seed``), the
    module our step trains: ``(B, 1, 28, 28)``, ``(B,)`` -> ``(B, 1, 28, 28)``."""
    torch.manual_seed(seed)
    return build_model(cfg, (1, 28, 28), 10).net


def model_info(cfg) -> dict[str, dict[str, Any]]:
    """Parameter counts and forward MFLOPs per image of our U-Net (``cfg``'s) and of each
    :data:`DIFFUSERS` model, with the relative parameter difference ``params_vs_ours``
    (diffusers / ours - 1) and the diffusers keyword arguments. Without diffusers its rows
    are ``{"skipped": reason}``."""
    ours = our_net(cfg)
    n_ours = param_count(ours)
    out: dict[str, dict[str, Any]] = {
        "ours": {"params": n_ours, "fwd_mflops_per_image": forward_mflops(ours, ours_forward)}
    }
    for name, kwargs in DIFFUSERS.items():
        try:
            net = diffusers_unet(name)
        except ImportError as err:
            out[name] = {"skipped": f"{type(err).__name__}: {err}".splitlines()[0]}
            continue
        n = param_count(net)
        out[name] = {
            "params": n,
            "params_vs_ours": n / n_ours - 1,
            "fwd_mflops_per_image": forward_mflops(net, diffusers_forward),
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
        }
    return out


@functools.lru_cache(maxsize=2)
def mnist_images(n: int) -> torch.Tensor:
    """The first ``n`` MNIST training images, ``(n, 1, 28, 28)`` float32 in [0, 1] on the
    CPU: what ``dataset.subset=n`` gives the runner (``dataset=mnist``, grey levels)."""
    from dgm_runner.data.vision import load_vision_dataset

    return load_vision_dataset("mnist", download=False, subset=n).train_x


def inline_fm_epoch(
    bench: Bench,
    net: nn.Module,
    forward: Forward,
    images: torch.Tensor,
    batch_size: int,
    lr: float,
    seed: int = 0,
) -> dict[str, Any]:
    """One epoch of flow matching written inline on ``net``: ``torch.randperm`` batches of
    ``images`` ``(N, 1, 28, 28)`` in [0, 1] (indexed ``x[idx]``), ``x0 = 2 x - 1``, ``t ~
    U(0, 1)``, ``eps ~ N(0, I)``, ``x_t = (1 - t) x0 + t eps``, loss ``|forward(net, x_t, t) -
    (eps - x0)|^2`` summed over pixels and averaged over the batch, ``torch.optim.Adam(lr)``
    with ``zero_grad`` / ``backward`` / ``step``. Only the epoch is timed (model and
    optimiser are built before, the data moved to the device before).

    Returns:
        ``{"time": wall-clock seconds of the epoch, "updates": optimiser steps, "images":
        N, "updates_per_s", "loss": the last batch's loss (read after the clock stops),
        "peak_mem_mb": peak CUDA memory (MB) or None}``.
    """
    dev = bench.device
    torch.manual_seed(seed)
    net = net.to(dev).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    x_all = images.to(dev)
    n = x_all.shape[0]
    updates = math.ceil(n / batch_size)
    if bench.cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    sync(dev)
    t0 = time.perf_counter()
    perm = torch.randperm(n, device=dev)
    for i in range(updates):
        x0 = x_all[perm[i * batch_size : (i + 1) * batch_size]] * 2.0 - 1.0
        t = torch.rand(x0.shape[0], device=dev)
        eps = torch.randn_like(x0)
        tb = t[:, None, None, None]
        x_t = (1.0 - tb) * x0 + tb * eps
        loss = (forward(net, x_t, t) - (eps - x0)).pow(2).flatten(1).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync(dev)
    elapsed = time.perf_counter() - t0
    return {
        "time": elapsed,
        "updates": updates,
        "images": n,
        "updates_per_s": updates / elapsed,
        "loss": float(loss.detach()),
        "peak_mem_mb": bench.peak_mem(),
    }


def plain_fm_epoch(bench: Bench, cfg, n: int, seed: int = 0) -> dict[str, Any]:
    """:func:`inline_fm_epoch` of our U-Net (``cfg``'s ScoreUNet's ``net``, fresh under
    ``seed``) on the first ``n`` MNIST images, with ``cfg``'s batch size and learning rate:
    the plain PyTorch loop. Returns its dict (seconds, updates, updates per second)."""
    net = our_net(cfg, seed)
    return inline_fm_epoch(
        bench,
        net,
        ours_forward,
        mnist_images(n),
        int(cfg.trainer.batch_size),
        float(cfg.optimizer.lr),
        seed,
    )


def diffusers_fm_epoch(
    bench: Bench, cfg, n: int, name: str = "diffusers", seed: int = 0
) -> dict[str, Any]:
    """:func:`inline_fm_epoch` of diffusers' ``UNet2DModel`` :data:`DIFFUSERS` ``[name]``
    (fresh under ``seed``) on the first ``n`` MNIST images, 28x28 unpadded, with ``cfg``'s
    batch size and learning rate. Returns its dict (seconds, updates, updates per second).

    Raises:
        ImportError: diffusers is not installed.
    """
    torch.manual_seed(seed)
    net = diffusers_unet(name)
    return inline_fm_epoch(
        bench,
        net,
        diffusers_forward,
        mnist_images(n),
        int(cfg.trainer.batch_size),
        float(cfg.optimizer.lr),
        seed,
    )


def runner_fm_epoch(bench: Bench, overrides: list[str], batch_size: int) -> dict[str, Any]:
    """One runner epoch (:meth:`~dgm_runner.bench.harness.Bench.runner_epoch`, its own
    ``train/epoch_time_s``) with ``overrides``, plus ``"updates"`` (``ceil(images /
    batch_size)``) and ``"updates_per_s"``."""
    run = bench.runner_epoch(overrides)
    run["updates"] = math.ceil(run["images"] / batch_size)
    run["updates_per_s"] = run["updates"] / run["time"]
    return run


def unet_study(
    bench: Bench,
    images: int | None = None,
    batch_size: int | None = None,
    experiments: tuple[str, ...] = (FM_EXPERIMENT, EDM_EXPERIMENT),
    repeats: int | None = None,
) -> dict[str, Any]:
    """Time the contenders of the module docstring on the first ``images`` MNIST training
    images (None: :data:`IMAGES`, 1280 in ``--quick``, 5120 otherwise), batches of
    ``batch_size`` (None: the experiment's, 128), ``repeats`` interleaved rounds (None:
    ``bench.repeats``); ``experiments`` are the runner's (the first is ``ours``, an
    ``edm_mnist_cpu`` among the rest ``ours_edm``). A diffusers contender without diffusers
    is skipped with its one-line reason.

    Returns:
        ``results["unet"]["fm_mnist_cpu"]``: :func:`~dgm_runner.bench.timing.run_group`'s
        dict (seconds per epoch; ``ratios`` contender / ours) with, per contender,
        ``updates`` and ``updates_per_s`` (median), plus ``models`` (:func:`model_info`),
        ``images``, ``batch_size``, ``updates``, ``input``, ``param_tolerance``, the runner
        overrides.
    """
    n = images or IMAGES[bench.quick]
    cfg = fm_cfg(experiments[0] if experiments else FM_EXPERIMENT)
    bs = batch_size or int(cfg.trainer.batch_size)
    extra = [f"trainer.batch_size={bs}"] if batch_size else []
    if batch_size:
        cfg.trainer.batch_size = bs
    overrides = {exp: bench.runner_overrides(exp, *extra, subset=n) for exp in experiments}
    contenders: dict[str, Callable[[], dict[str, Any]]] = {}
    for i, exp in enumerate(experiments):
        label = "ours" if i == 0 else ("ours_edm" if exp == EDM_EXPERIMENT else f"ours_{exp}")
        contenders[label] = functools.partial(runner_fm_epoch, bench, overrides[exp], bs)
    contenders["plain_torch"] = functools.partial(plain_fm_epoch, bench, cfg, n)
    for name in DIFFUSERS:
        contenders[name] = functools.partial(diffusers_fm_epoch, bench, cfg, n, name)
    models = model_info(cfg)
    for name, info in models.items():
        if "params" in info:
            print(
                f"  {name}: {info['params']} parameters, "
                f"{info['fwd_mflops_per_image']:.1f} forward MFLOPs per image",
                flush=True,
            )
    key = experiments[0] if experiments else FM_EXPERIMENT
    out = run_group(bench, key, contenders, section="unet", repeats=repeats or bench.repeats)
    updates = math.ceil(n / bs)
    for s in out["contenders"].values():
        s["updates"] = updates
        s["updates_per_s"] = updates / s["median"]
    out.update(
        {
            "experiments": list(experiments),
            "overrides": overrides,
            "images": n,
            "batch_size": bs,
            "updates": updates,
            "models": models,
            "input": INPUT_NOTE,
            "param_tolerance": PARAM_TOLERANCE,
        }
    )
    return out


def unet_table(results: dict[str, Any]) -> list[str]:
    """The ``unet`` section as Markdown lines (none without it): per contender its
    parameters, forward MFLOPs per image, median updates per second (and seconds per epoch),
    the ratio contender / ours of median seconds per epoch (> 1: ours is faster) and the
    median of the per-round ratios; skipped contenders with their reason."""
    section = results.get("unet")
    if not section:
        return []
    lines: list[str] = []
    for key, g in section.items():
        models = g.get("models", {})
        lines += [
            "",
            f"U-Net training step ({key}: {g['updates']} updates of batch {g['batch_size']} on "
            f"{g['images']} MNIST images, medians of {g['repeats']} interleaved rounds)",
            "",
            "| contender | parameters | fwd MFLOPs/image | updates/s | s/epoch (min-max) "
            "| contender / ours | paired |",
            "|---|---|---|---|---|---|---|",
        ]
        for cname, s in g["contenders"].items():
            # ours, ours_edm and plain_torch train our U-Net; the diffusers rows their own
            info = models.get(cname, {}) if cname in DIFFUSERS else models.get("ours", {})
            params = f"{info['params']:,}" if "params" in info else ""
            if "params_vs_ours" in info:
                params += f" ({info['params_vs_ours'] + 1:.2f}x)"
            flops = f"{info['fwd_mflops_per_image']:.1f}" if "params" in info else ""
            ratio, paired = g["ratios"].get(cname), g.get("paired_ratios", {}).get(cname)
            lines.append(
                f"| {'**ours**' if cname == 'ours' else cname} | {params} | {flops} | "
                f"{s['updates_per_s']:.2f} | {s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f}) "
                f"| {'' if ratio is None else f'{ratio:.2f}x'} "
                f"| {'' if paired is None else f'{paired:.2f}x'} |"
            )
        for cname, why in g.get("skipped", {}).items():
            lines.append(f"| {cname} | | | skipped: {why} | | | |")
    lines += [
        "",
        "contender / ours = median seconds per epoch of the contender over ours = our "
        "updates/s over its updates/s: > 1 means ours is faster; paired = median of the "
        "per-round ratios.",
    ]
    return lines
