"""Figures of the score-matching experiments (seed 001 Q4)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from dgm_runner.data.base import DataSplits
from dgm_runner.io.plots import figure_path, pyplot, save_figure


def toy_data(model: torch.nn.Module, data: DataSplits, run_dir: Path, seed: int) -> Path:
    """Scatter plot of the ``(N, 2)`` training points."""
    plt = pyplot()
    x = data.train_float().cpu()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(x[:, 0], x[:, 1], s=3, alpha=0.6)
    ax.set_aspect("equal")
    ax.set_title(f"{data.name}: {x.shape[0]} training points")
    return save_figure(fig, figure_path(run_dir, "data"))


@torch.no_grad()
def score_field(
    model: torch.nn.Module,
    data: DataSplits,
    run_dir: Path,
    seed: int,
    levels: tuple[int, ...] = (0, 4, 9),
    grid: int = 25,
) -> Path:
    """Quiver plots of the learned score ``s(x, sigma_i)`` on a ``grid x grid`` lattice
    over the data's bounding box, one panel per level index in ``levels`` (0 = largest
    sigma), over the data points.

    Raises:
        ValueError: a level index is out of range.
    """
    plt = pyplot()
    sigmas = model.sigmas
    _check_levels(levels, len(sigmas))
    x = data.train_float()
    lo, hi = x.min(0).values - 0.5, x.max(0).values + 0.5
    gx = torch.linspace(float(lo[0]), float(hi[0]), grid, device=x.device)
    gy = torch.linspace(float(lo[1]), float(hi[1]), grid, device=x.device)
    pts = torch.cartesian_prod(gx, gy)
    fig, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 5))
    for ax, i in zip(axes if len(levels) > 1 else [axes], levels):
        s = model.score(pts, sigmas[i].expand(pts.shape[0]))
        mag = s.norm(dim=1)
        s = s / mag[:, None].clamp_min(1e-8)  # direction only; length is shown by colour
        ax.scatter(x[:, 0].cpu(), x[:, 1].cpu(), s=1, alpha=0.3, color="tab:gray")
        q = ax.quiver(
            pts[:, 0].cpu(),
            pts[:, 1].cpu(),
            s[:, 0].cpu(),
            s[:, 1].cpu(),
            mag.log().cpu(),
            cmap="viridis",
        )
        ax.set_title(f"s(x, sigma_{i + 1} = {float(sigmas[i]):.3g})")
        ax.set_aspect("equal")
        fig.colorbar(q, ax=ax, fraction=0.046, label="log ||s||")
    return save_figure(fig, figure_path(run_dir, "score_field"))


def _check_levels(levels: Any, n_levels: int) -> None:
    """Raises ValueError: an index of ``levels`` is outside ``[0, n_levels)``."""
    if any(not 0 <= i < n_levels for i in levels):
        raise ValueError(
            f"levels {list(levels)} out of range for the model's {n_levels} noise levels "
            f"(indices 0..{n_levels - 1}, 0 = largest sigma)"
        )


def check_score_field(
    model_config: dict[str, Any], levels: tuple[int, ...] = (0, 4, 9), **_: Any
) -> None:
    """Before any work (:func:`dgm_runner.config.validate`): every index of ``levels`` is
    one of the model's noise levels, ``model_config["n_levels"]`` or the model class's
    default. A model without ``n_levels`` is not checked here (:func:`score_field` raises
    then).

    Raises:
        ValueError: a level index is out of range.
    """
    from hydra.utils import get_object

    n_levels = model_config.get("n_levels")
    if n_levels is None:
        param = inspect.signature(get_object(model_config["_target_"])).parameters.get("n_levels")
        if param is None or param.default is inspect.Parameter.empty:
            return
        n_levels = param.default
    _check_levels(levels, n_levels)


score_field.check = check_score_field  # type: ignore[attr-defined]
