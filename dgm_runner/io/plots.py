"""Matplotlib on a headless machine: the Agg backend and atomic PNG writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dgm_runner.io.atomic import atomic_open
from dgm_runner.io.layout import RunPaths


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the non-interactive Agg backend selected."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(
    fig: Any, path: str | Path, dpi: int = 120, bbox_inches: str | None = "tight"
) -> Path:
    """Write ``fig`` as a PNG atomically (temp file + rename), close it, return ``path``."""
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi, bbox_inches=bbox_inches)
    pyplot().close(fig)
    return path


def figure_path(run_dir: str | Path, name: str) -> Path:
    """``<run_dir>/figures/<name>.png`` (:meth:`RunPaths.figure`), with the folder created."""
    path = RunPaths(run_dir).figure(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
