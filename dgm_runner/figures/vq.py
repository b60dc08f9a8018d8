"""Figures of the VQ-VAE experiment (seed 003 programming question 1)."""

from __future__ import annotations

from pathlib import Path

import torch

from dgm_runner.data.base import DataSplits
from dgm_runner.io.artifacts import save_grid
from dgm_runner.io.plots import figure_path
from dgm_runner.models.vqvae import VQVAE


@torch.no_grad()
def vq_reconstructions(
    model: VQVAE, data: DataSplits, run_dir: Path, seed: int, n: int = 8
) -> Path:
    """The first ``n`` test images (top row) above their VQ-VAE reconstructions
    ``sigmoid(decoder(z_q(x)))`` (bottom row): ``figures/reconstructions.png``, 2 rows x
    ``n`` columns. ``seed`` is unused (the figure is deterministic)."""
    was_training = model.training
    model.eval()
    x = data.test_x[:n]
    recon = model.decode_indices(model.encode_indices(x))
    path = figure_path(run_dir, "reconstructions")
    save_grid(torch.cat([x, recon]), path, nrow=n)
    model.train(was_training)
    return path
