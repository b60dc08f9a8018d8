"""Figure of the normalizing flows (RealNVP, Glow): samples at two temperatures and a latent
interpolation between two test images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dgm_runner.config import PositiveFloat, PositiveInt
from dgm_runner.data.base import DataSplits
from dgm_runner.data.protocols import dequantize_levels, pixel_levels
from dgm_runner.io.plots import figure_path, pyplot, save_figure
from dgm_runner.models.flows.multiscale import MultiScaleFlow


def _pair(labels: torch.Tensor) -> tuple[int, int]:
    """Test-image indices ``(0, j)``: ``j`` the first image of another class than image 0
    (image 1 when every label is the same).

    Raises:
        ValueError: fewer than 2 test images.
    """
    if labels.numel() < 2:
        raise ValueError("flow_samples: the interpolation needs at least 2 test images")
    other = torch.nonzero(labels != labels[0]).flatten()
    return 0, int(other[0]) if other.numel() else 1


def _grid(images: torch.Tensor, nrow: int) -> np.ndarray:
    """``(n, C, H, W)`` in [0, 1] -> ``(H', W', 3)`` for ``imshow`` (grey images as RGB, 2-px
    white padding)."""
    from torchvision.utils import make_grid

    grid = make_grid(images.float().clamp(0, 1).cpu(), nrow=nrow, padding=2, pad_value=1.0)
    return grid.permute(1, 2, 0).numpy()


@torch.no_grad()
def flow_samples(
    model: MultiScaleFlow,
    data: DataSplits,
    run_dir: Path,
    seed: int,
    temperatures: tuple[PositiveFloat, ...] = (1.0, 0.7),
    n: PositiveInt = 64,
    steps: PositiveInt = 10,
) -> Path:
    """``figures/flow_samples.png``: one panel per temperature ``T`` of ``temperatures``
    with ``n`` samples ``f^{-1}(T eps)`` (an 8x8 grid for 64; the same ``eps ~ N(0, I)``,
    drawn from ``seed``, at every temperature), and below them the latent interpolation
    ``f^{-1}((1 - a) f(y_0) + a f(y_1))``, ``a = 0, 1/steps, ..., 1``, between two test
    images of different classes, dequantized as the evaluation does (``y = (k + u) / 256``,
    ``u`` drawn from ``seed``). Samples are clamped to [0, 1].

    Raises:
        ValueError: fewer than 2 test images.
    """
    plt = pyplot()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    panels = []
    for t in temperatures:
        gen = torch.Generator(device=device).manual_seed(seed)
        panels.append((f"samples, T = {t:g}", model.sample(n, t, gen)))
    i, j = _pair(data.test_y)
    gen = torch.Generator(device=data.test_x.device).manual_seed(seed)
    y = dequantize_levels(pixel_levels(data.test_x[[i, j]]), gen).to(device)
    eps = model(y)[0]
    a = torch.linspace(0, 1, steps + 1, device=device, dtype=eps.dtype)[:, None]
    path_images = model.inverse((1 - a) * eps[0] + a * eps[1])
    model.train(was_training)

    nrow = max(1, round(n**0.5))
    fig = plt.figure(figsize=(4.2 * len(panels), 4.2 + 1.6))
    grid = fig.add_gridspec(2, len(panels), height_ratios=[4.2, 1.2])
    for col, (title, images) in enumerate(panels):
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(_grid(images, nrow))
        ax.set_title(title)
        ax.axis("off")
    ax = fig.add_subplot(grid[1, :])
    ax.imshow(_grid(path_images, steps + 1))
    ax.set_title(f"latent interpolation between test images {i} and {j}")
    ax.axis("off")
    return save_figure(fig, figure_path(run_dir, "flow_samples"))
