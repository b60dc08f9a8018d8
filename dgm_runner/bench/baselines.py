"""The baselines: each epoch (or sampler) ours is compared with, written the obvious way.

Every function here times its own epoch in wall-clock seconds (CUDA work synchronised
before and after) on the bench's device, over the same images as ours, so that the
report's ratios baseline / ours compare like with like within one run.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from dgm_runner.bench.harness import Bench
from dgm_runner.bench.timing import sync
from dgm_runner.build import build_model


def dataloader_vae_epoch(
    bench: Bench, cfg: DictConfig, subset: int | None, seed: int = 0
) -> dict[str, Any]:
    """One epoch of ``cfg``'s VAE written the obvious way (pytorch/examples' ``vae/main.py``):
    ``torchvision.datasets.MNIST`` + ``ToTensor`` (+ a thresholding ``Lambda`` for binarized
    data) in a ``DataLoader(shuffle=True, num_workers=0)``, default ``Adam``, the ELBO
    written inline, ``loss.item()`` every step.

    Returns:
        ``{"time": wall-clock seconds of the epoch, "peak_mem_mb": peak CUDA
        memory (MB) or None, "images": training images}``.
    """
    import torchvision
    from torch.utils.data import DataLoader, Subset
    from torchvision import transforms

    from dgm_runner.data.vision import load_vision_dataset, torchvision_root

    load_vision_dataset("mnist", download=False)  # decompresses the IDX files into the cache
    tf = [transforms.ToTensor()]
    if cfg.dataset.binarize == "threshold":  # the only protocol the benchmarks time
        thr = float(cfg.dataset.threshold)
        tf.append(transforms.Lambda(lambda x: (x > thr).float()))
    ds = torchvision.datasets.MNIST(
        str(torchvision_root("mnist", download=False)),
        train=True,
        download=False,
        transform=transforms.Compose(tf),
    )
    if subset is not None:
        ds = Subset(ds, range(subset))
    torch.manual_seed(seed)
    model = build_model(cfg, (1, 28, 28), 10).to(bench.device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr)
    loader = DataLoader(ds, batch_size=cfg.trainer.batch_size, shuffle=True, num_workers=0)
    mse = cfg.objective.likelihood == "mse"
    if bench.cuda:
        torch.cuda.reset_peak_memory_stats(bench.device)
    model.train()
    sync(bench.device)
    t0 = time.perf_counter()
    total = 0.0
    for x, _ in loader:
        x = x.to(bench.device)
        opt.zero_grad()
        mu, logvar = model.encode(x)
        std = torch.exp(0.5 * logvar)
        z = mu + torch.randn_like(std) * std
        recon = model.decode(z)
        if mse:
            rec = F.mse_loss(recon, x, reduction="sum")
        else:
            rec = F.binary_cross_entropy(recon, x, reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        loss = (rec + kld) / x.shape[0]
        loss.backward()
        opt.step()
        total += loss.item()
    sync(bench.device)
    return {"time": time.perf_counter() - t0, "peak_mem_mb": bench.peak_mem(), "images": len(ds)}


def sklearn_rbm_epoch(bench: Bench, cfg: DictConfig, subset: int | None) -> dict[str, Any]:
    """One epoch (``n_iter=1``) of scikit-learn's ``BernoulliRBM`` (PCD-1, float32 input,
    same hidden size, batch size and learning rate; CPU only).

    Returns:
        ``{"time": wall-clock seconds of fit, "images": training images}``.
    """
    import numpy as np
    from sklearn.neural_network import BernoulliRBM

    x = np.ascontiguousarray(
        bench.binary_x(float(cfg.dataset.threshold), subset).numpy(), dtype=np.float32
    )
    rbm = BernoulliRBM(
        n_components=cfg.model.hidden_dim,
        learning_rate=cfg.optimizer.lr,
        batch_size=cfg.trainer.batch_size,
        n_iter=1,
        random_state=0,
    )
    from threadpoolctl import threadpool_limits

    # numpy's BLAS gets the threads torch has (both default to all cores), never more
    with threadpool_limits(limits=torch.get_num_threads()):
        t0 = time.perf_counter()
        rbm.fit(x)
        return {"time": time.perf_counter() - t0, "images": x.shape[0]}


def _import_learnergy():
    """learnergy's Bernoulli RBM class, with its console/file log handlers removed (it would
    write ``learnergy.log`` into the working directory); raises ImportError if missing."""
    from learnergy.models.bernoulli import RBM as LearnergyRBM

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("learnergy"):
            lg = logging.getLogger(name)
            for h in list(lg.handlers):
                lg.removeHandler(h)
            lg.addHandler(logging.NullHandler())
            lg.propagate = False
    return LearnergyRBM


def learnergy_rbm_epoch(
    bench: Bench, cfg: DictConfig, k: int, subset: int | None
) -> dict[str, Any]:
    """One epoch of learnergy's ``bernoulli.RBM`` (CD-k, SGD with the same lr and momentum)
    over an in-memory ``TensorDataset`` with its own ``fit`` (which also computes the
    pseudo-likelihood of every batch: that is its epoch).

    Returns:
        ``{"time": wall-clock seconds of the epoch, "peak_mem_mb": peak CUDA
        memory (MB) or None, "images": training images}``.
    """
    from torch.utils.data import TensorDataset

    LearnergyRBM = _import_learnergy()
    x = bench.binary_x(float(cfg.dataset.threshold), subset)
    torch.manual_seed(0)
    rbm = LearnergyRBM(
        n_visible=x.shape[1],
        n_hidden=cfg.model.hidden_dim,
        steps=k,
        learning_rate=cfg.optimizer.lr,
        momentum=cfg.optimizer.momentum,
        use_gpu=bench.cuda,
    )
    rbm.dump = lambda **kw: None  # its per-epoch history; irrelevant here
    ds = TensorDataset(x, torch.zeros(x.shape[0]))
    if bench.cuda:
        torch.cuda.reset_peak_memory_stats(bench.device)
    sync(bench.device)
    t0 = time.perf_counter()
    rbm.fit(ds, batch_size=cfg.trainer.batch_size, epochs=1)
    sync(bench.device)
    return {"time": time.perf_counter() - t0, "peak_mem_mb": bench.peak_mem(), "images": x.shape[0]}


def plain_cd_epoch(bench: Bench, cfg: DictConfig, k: int, subset: int | None) -> dict[str, Any]:
    """One CD-k epoch written the obvious way in PyTorch: in-memory tensors, a random
    permutation, ``torch.bernoulli`` draws, the CD gradient by hand
    (``v0^T p(h|v0) - vk^T p(h|vk)``, 2k + 3 matmuls), SGD with momentum by hand.

    Returns:
        ``{"time": wall-clock seconds of the epoch, "peak_mem_mb": peak CUDA
        memory (MB) or None, "images": training images}``.
    """
    dev = bench.device
    x = bench.binary_x(float(cfg.dataset.threshold), subset).to(dev)
    n, d = x.shape
    h_dim, bs = cfg.model.hidden_dim, cfg.trainer.batch_size
    lr, mom = cfg.optimizer.lr, cfg.optimizer.momentum
    g = torch.Generator(device=dev).manual_seed(0)
    W = torch.randn(d, h_dim, device=dev, generator=g) * 0.01
    b, c = torch.zeros(d, device=dev), torch.zeros(h_dim, device=dev)
    mW, mb, mc = torch.zeros_like(W), torch.zeros_like(b), torch.zeros_like(c)
    if bench.cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    sync(dev)
    t0 = time.perf_counter()
    perm = torch.randperm(n, device=dev, generator=g)
    for i in range(0, n, bs):
        v0 = x[perm[i : i + bs]]
        ph0 = torch.sigmoid(v0 @ W + c)
        h = torch.bernoulli(ph0, generator=g)
        for j in range(k):
            v = torch.bernoulli(torch.sigmoid(h @ W.t() + b), generator=g)
            ph = torch.sigmoid(v @ W + c)
            if j < k - 1:
                h = torch.bernoulli(ph, generator=g)
        m = v0.shape[0]
        mW.mul_(mom).add_((v0.t() @ ph0 - v.t() @ ph) / m)
        mb.mul_(mom).add_((v0 - v).mean(0))
        mc.mul_(mom).add_((ph0 - ph).mean(0))
        W.add_(mW, alpha=lr)
        b.add_(mb, alpha=lr)
        c.add_(mc, alpha=lr)
    sync(dev)
    return {"time": time.perf_counter() - t0, "peak_mem_mb": bench.peak_mem(), "images": n}


# --------------------------------------------------------------------------- plain samplers
# Untimed here: :mod:`dgm_runner.bench.sampling` times them against ours.


def plain_gibbs(
    rbm: torch.nn.Module, n_chains: int, steps: int, device: torch.device
) -> torch.Tensor:
    """``n_chains`` block-Gibbs chains of the RBM ``rbm`` (``W, b, c``) for ``steps`` sweeps,
    written the obvious way: ``torch.bernoulli`` of the sigmoid, visible units started at
    Bernoulli(1/2). Returns the last sweep's visible probabilities ``(n_chains, D)``."""
    with torch.no_grad():
        W, b, c = rbm.W, rbm.b, rbm.c
        v = torch.bernoulli(torch.full((n_chains, W.shape[0]), 0.5, device=device))
        for _ in range(steps):
            h = torch.bernoulli(torch.sigmoid(v @ W + c))
            p = torch.sigmoid(h @ W.t() + b)
            v = torch.bernoulli(p)
        return p


def plain_ancestral(vae: torch.nn.Module, n: int, device: torch.device) -> None:
    """``n`` ancestral samples of the VAE as pytorch/examples draws them:
    ``model.decode(torch.randn(64, N_z))``, batch after batch (the images are discarded)."""
    with torch.no_grad():  # pytorch/examples: model.decode(torch.randn(64, 20)), batch after batch
        for _ in range(0, n, 64):
            vae.decode(torch.randn(64, vae.latent_dim, device=device))


def plain_predictor_corrector(
    net: Any, pc: Any, steps: int, device: torch.device, n: int = 64
) -> torch.Tensor:
    """Song et al.'s tutorial notebook written out: ``steps`` predictor-corrector steps
    (one Langevin corrector step at ``pc.snr``, then reverse-time Euler-Maruyama) from the
    SDE's prior to ``t = pc.t_min`` for ``n`` images of the score model ``net``. Returns the
    final denoised mean ``(n, *image_shape)``."""
    with torch.no_grad():
        x = net.sde.prior_sample((n, *net.image_shape), None, device)
        ts = torch.linspace(1.0, pc.t_min, steps, device=device)
        dt = (1.0 - pc.t_min) / steps
        for t in ts:
            tt = torch.ones(n, device=device) * t
            grad = net.score(x, tt)
            noise = torch.randn_like(x)
            step = (
                2
                * (
                    pc.snr
                    * noise.reshape(n, -1).norm(dim=-1).mean()
                    / grad.reshape(n, -1).norm(dim=-1).mean()
                )
                ** 2
            )
            x = x + step * grad + torch.sqrt(2 * step) * noise
            g = net.sde.diffusion(tt).reshape(n, 1, 1, 1)
            x_mean = x + (g**2 * net.score(x, tt) - net.sde.drift(x, tt)) * dt
            x = x_mean + math.sqrt(dt) * g * torch.randn_like(x)
        return x_mean
