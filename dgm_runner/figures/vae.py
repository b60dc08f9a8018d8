"""Figures of the VAE seeds (001 Q2, 002 Problem 2, 004 Q3)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from dgm_runner.config import PositiveInt
from dgm_runner.data.base import DataSplits
from dgm_runner.io.artifacts import read_jsonl, save_grid
from dgm_runner.io.layout import RunPaths
from dgm_runner.io.plots import figure_path, pyplot, save_figure
from dgm_runner.models.vae import GaussianVAE


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def prior_samples_10x2(
    model: GaussianVAE, data: DataSplits, run_dir: Path, seed: int, rows: int = 10
) -> Path:
    """Seed 001 Q2 e-i: ``rows`` draws ``z ~ N(0, I)``; each row shows ``p(x|z)`` (the
    Bernoulli means as a grey image) then one sample ``x ~ p(x|z)``.

    Layout: a grid of ``rows`` rows x 2 columns of ``H x W`` images, 2-px padding.
    """
    model.eval()
    gen = torch.Generator(device=_device(model)).manual_seed(seed)
    z = torch.randn(rows, model.latent_dim, generator=gen, device=_device(model))
    y = torch.arange(rows, device=z.device) % model.n_classes if model.conditional else None
    probs = model.decode(z, y)
    sample = torch.bernoulli(probs, generator=gen)
    images = torch.stack([probs, sample], dim=1).flatten(0, 1)  # row-major: p, sample, p, ...
    path = figure_path(run_dir, "prior_samples_10x2")
    save_grid(images, path, nrow=2)
    return path


@torch.no_grad()
def _posterior_means(
    model: GaussianVAE, x: torch.Tensor, y: torch.Tensor, batch: int = 2000
) -> torch.Tensor:
    outs = []
    for s in range(0, x.shape[0], batch):
        mu, _ = model.encode(x[s : s + batch], y[s : s + batch] if model.conditional else None)
        outs.append(mu)
    return torch.cat(outs)


@torch.no_grad()
def latent_scatter(
    model: GaussianVAE, data: DataSplits, run_dir: Path, seed: int, max_points: int = 60000
) -> Path:
    """Seed 001 Q2 e-ii: the means of ``q(z|x)`` for the training images in the latent
    plane, coloured by digit, with a legend. For ``latent_dim > 2`` the first two
    coordinates are shown (axis labels say so)."""
    model.eval()
    plt = pyplot()
    rows = torch.arange(min(max_points, data.train_x.shape[0]), device=data.device)
    mu = _posterior_means(model, data.train_rows(rows), data.train_y[:max_points]).cpu()
    labels = data.train_y[:max_points].cpu()
    fig, ax = plt.subplots(figsize=(6.5, 6))
    cmap = plt.get_cmap("tab10")
    for c in range(data.n_classes):
        m = labels == c
        ax.scatter(
            mu[m, 0], mu[m, 1], s=2, alpha=0.5, color=cmap(c % 10), label=str(c), rasterized=True
        )
    ax.legend(title="digit", markerscale=6, loc="best", fontsize=8)
    ax.set_xlabel("z[0] (mean of q(z|x))")
    ax.set_ylabel("z[1]")
    ax.set_title(f"latent means of {mu.shape[0]} training images")
    return save_figure(fig, figure_path(run_dir, "latent_scatter"))


def _pair_indices(
    labels: torch.Tensor, pairs: Optional[list[list[int]]], n_pairs: int, seed: int
) -> list[list[int]]:
    """Training-image index pairs of different classes: random (``pairs=None``) or the
    first image of each named class."""
    if pairs is None:
        if torch.unique(labels).numel() < 2:
            raise ValueError("interpolation needs training images of two different classes")
        g = torch.Generator().manual_seed(seed)
        n, out = labels.numel(), []
        while len(out) < n_pairs:
            i, j = torch.randint(0, n, (2,), generator=g).tolist()
            if int(labels[i]) != int(labels[j]):
                out.append([i, j])
        return out
    out = []
    for a, b in pairs:
        if a == b:
            raise ValueError(f"interpolation pair ({a}, {b}) must be two different classes")
        idx = []
        for c in (a, b):
            hits = torch.nonzero(labels == c).flatten()
            if hits.numel() == 0:
                raise ValueError(f"interpolation: class {c} is not in the training data")
            idx.append(int(hits[0]))
        out.append(idx)
    return out


@torch.no_grad()
def interpolation(
    model: GaussianVAE,
    data: DataSplits,
    run_dir: Path,
    seed: int,
    pairs: Optional[list[list[int]]] = None,
    step: float = 0.1,
    n_pairs: PositiveInt = 3,
) -> Path:
    """Seed 001 Q2 e-iii: "sample 3 pairs of data points with different classes", take
    their posterior means ``mu_a``, ``mu_b``, and show ``p(x|z_alpha)`` for
    ``z_alpha = (1 - alpha) mu_a + alpha mu_b``, alpha = 0, step, ..., 1.

    By default (``pairs=None``) the ``n_pairs`` pairs of training images are drawn at
    random with ``seed`` (the second image of a pair redrawn until its class differs);
    ``pairs=[[a, b], ...]`` (an option) takes the first training image of classes a and b.
    Layout: one row per pair, ``1/step + 1`` columns (11 for step 0.1).

    Raises:
        ValueError: a class is missing from the training data, a pair is not two
            different classes, or the data has a single class.
    """
    model.eval()
    alphas = torch.linspace(0, 1, round(1 / step) + 1, device=_device(model))
    rows = []
    for idx in _pair_indices(data.train_y, pairs, n_pairs, seed):
        a = int(data.train_y[idx[0]])
        x, y = data.train_rows(torch.tensor(idx, device=data.device)), data.train_y[idx]
        mu = _posterior_means(model, x, y)
        z = (1 - alphas[:, None]) * mu[0] + alphas[:, None] * mu[1]
        yz = torch.full((len(alphas),), a, device=z.device) if model.conditional else None
        rows.append(model.decode(z, yz))
    path = figure_path(run_dir, "interpolation")
    save_grid(torch.cat(rows), path, nrow=len(alphas))
    return path


@torch.no_grad()
def reconstructions(
    model: GaussianVAE, data: DataSplits, run_dir: Path, seed: int, n: int = 8
) -> Path:
    """Seed 002 Problem 2 / seed 004: the first ``n`` test images (top row) above their
    reconstructions ``E[x | z = mu(x)]`` (bottom row). Layout: 2 rows x ``n`` columns."""
    model.eval()
    x, y = data.test_x[:n], data.test_y[:n]
    yy = y if model.conditional else None
    mu, _ = model.encode(x, yy)
    path = figure_path(run_dir, "reconstructions")
    save_grid(torch.cat([x, model.decode(mu, yy)]), path, nrow=n)
    return path


@torch.no_grad()
def class_grid(
    model: GaussianVAE, data: DataSplits, run_dir: Path, seed: int, per_class: int = 8
) -> Path:
    """Seed 004 Q3 d: samples ``E[x | z, y]``, ``z ~ N(0, I)``, one row per class
    y = 0..9, ``per_class`` columns (a 10 x 8 grid).

    Raises:
        ValueError: the model is not conditional.
    """
    if not model.conditional:
        raise ValueError("class_grid needs a conditional model (model.conditional=true)")
    model.eval()
    gen = torch.Generator(device=_device(model)).manual_seed(seed)
    n = model.n_classes * per_class
    z = torch.randn(n, model.latent_dim, generator=gen, device=_device(model))
    y = torch.arange(model.n_classes, device=z.device).repeat_interleave(per_class)
    path = figure_path(run_dir, "class_grid")
    save_grid(model.decode(z, y), path, nrow=per_class)
    return path


def elbo_curves(model: GaussianVAE, data: DataSplits, run_dir: Path, seed: int) -> Path:
    """Seed 002 Problem 2: (left) the two ELBO terms, reconstruction ``E_q[-log p(x|z)]``
    and ``KL(q || p)``, against weight updates; (right) the reconstruction
    log-likelihood ``E_q[log p(x|z)]`` on training mini-batches against the same on the
    validation images (every ``trainer.val_every_steps`` updates). Reads
    ``train_history.jsonl`` (set ``trainer.log_every=1`` for every update).

    Raises:
        FileNotFoundError: the run has no ``train_history.jsonl``.
    """
    plt = pyplot()
    lines = read_jsonl(RunPaths(run_dir).history)
    train = [r for r in lines if "train/recon" in r]
    val = [r for r in lines if "val/recon" in r]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in train]
    ax1.plot(
        steps, [r["train/recon"] for r in train], lw=0.6, label="reconstruction  E_q[-log p(x|z)]"
    )
    ax1.plot(steps, [r["train/kl"] for r in train], lw=0.6, label="KL(q(z|x) || p(z))")
    ax1.set_xlabel("weight update")
    ax1.set_ylabel("nats per example")
    ax1.set_yscale("log")
    ax1.legend()
    ax1.set_title("ELBO terms (training mini-batches)")
    ax2.plot(steps, [-r["train/recon"] for r in train], lw=0.6, alpha=0.7, label="train mini-batch")
    if val:
        ax2.plot(
            [r["step"] for r in val], [-r["val/recon"] for r in val], "o-", ms=3, label="validation"
        )
    ax2.set_xlabel("weight update")
    ax2.set_ylabel("E_q[log p(x|z)]  (nats per example)")
    ax2.legend()
    ax2.set_title("reconstruction log-likelihood")
    return save_figure(fig, figure_path(run_dir, "elbo_curves"))


def training_curves(
    model: torch.nn.Module,
    data: DataSplits,
    run_dir: Path,
    seed: int,
    keys: tuple[str, ...] = ("train/loss",),
    log_y: tuple[str, ...] = (),
) -> Path:
    """One panel per key of ``train_history.jsonl`` (e.g. ``train/decoder_std``) against
    weight updates; keys in ``log_y`` on a log scale.

    Raises:
        ValueError: a key never appears in the history.
    """
    plt = pyplot()
    lines = read_jsonl(RunPaths(run_dir).history)
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(r["step"], r[key]) for r in lines if key in r]
        if not pts:
            raise ValueError(f"training_curves: {key!r} is not in train_history.jsonl")
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=0.8)
        ax.set_xlabel("weight update")
        ax.set_title(key)
        if key in log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    return save_figure(fig, figure_path(run_dir, "training_curves"))
