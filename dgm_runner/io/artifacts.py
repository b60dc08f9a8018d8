"""Run-directory artifacts: metrics files and 8x8 sample grids."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torchvision.utils import make_grid, save_image

from dgm_runner.io.atomic import WriteError, atomic_open
from dgm_runner.io.plots import pyplot


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> torch.Tensor:
    """Write ``(n, C, H, W)`` images in [0, 1] as a grid PNG with ``nrow`` images per row
    (default: square, 8x8 for n = 64; 2-px white padding), atomically; returns the
    ``(C, H', W')`` grid tensor (for TensorBoard)."""
    nrow = nrow or max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    images = images.detach().float().clamp(0, 1).cpu()
    grid = make_grid(images, nrow=nrow, padding=2, pad_value=1.0)
    with atomic_open(path, "wb") as f:
        save_image(grid, f, format="png")
    return grid


def append_jsonl(path: str | Path, *records: dict[str, Any]) -> None:
    """Append one JSON line per record and fsync (a crash loses at most these lines).

    Raises:
        WriteError: the append failed (e.g. a full disk); what it wrote of these lines is
            cut off again, so the file holds whole lines only.
    """
    if not records:
        return
    path = Path(path)
    size = path.stat().st_size if path.exists() else 0
    try:
        with open(path, "a") as f:
            f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        with contextlib.suppress(OSError):
            os.truncate(path, size)
        raise WriteError(
            f"cannot append to {path}: {err.strerror or err}; free space and retry"
        ) from None


def truncate_jsonl(path: str | Path, key: str, last: float) -> int:
    """Drop the records of a JSON-lines file whose ``key`` is above ``last`` (atomic rewrite;
    a missing file or a torn last line is fine). A resumed run calls it with its checkpoint's
    epoch / step, so lines written after that checkpoint by a killed process (SIGKILL
    between a line and ``last.pt``) are not repeated when those epochs run again.

    Returns:
        How many records were dropped.
    """
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line torn by the kill
            dropped += 1
            continue
        if record.get(key, -math.inf) > last:
            dropped += 1
        else:
            kept.append(line + "\n")
    if dropped:
        with atomic_open(path, "w") as f:
            f.write("".join(kept))
    return dropped


def save_samples(
    samples: torch.Tensor, path: str | Path, reference: torch.Tensor | None = None
) -> torch.Tensor:
    """Write samples as a picture and return it as a ``(C, H, W)`` tensor in [0, 1].

    ``(n, C, H, W)`` images: a square grid (:func:`save_grid`). ``(n, 2)`` points: a
    scatter plot over ``reference`` points (the data) when given.
    """
    if samples.ndim == 4:
        return save_grid(samples, path)
    import numpy as np
    from PIL import Image

    plt = pyplot()
    pts = samples.detach().float().cpu()
    fig, ax = plt.subplots(figsize=(5, 5))
    if reference is not None:
        ref = reference.detach().float().cpu()
        ax.scatter(ref[:, 0], ref[:, 1], s=2, alpha=0.3, color="tab:gray", label="data")
    ax.scatter(
        pts[:, 0], pts[:, 1], s=3, alpha=0.7, color="tab:blue", label=f"{pts.shape[0]} samples"
    )
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    with atomic_open(path, "wb") as f:
        f.write(data)
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0
