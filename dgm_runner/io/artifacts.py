"""Run-directory artifacts: metrics files and 8x8 sample grids."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torchvision.utils import make_grid, save_image

from dgm_runner.io.atomic import atomic_open


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
    """Append one JSON line per record and fsync (a crash loses at most these lines)."""
    if not records:
        return
    with open(path, "a") as f:
        f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())
