"""Run-directory artifacts: metrics files and 8x8 sample grids."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch

from dgm_runner.io.atomic import WriteError, atomic_open, write_bytes
from dgm_runner.io.plots import pyplot

log = logging.getLogger("dgm_runner")


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> torch.Tensor:
    """Write ``(n, C, H, W)`` images in [0, 1] as a grid PNG with ``nrow`` images per row
    (default: square, 8x8 for n = 64; 2-px white padding), atomically; returns the
    ``(C, H', W')`` grid tensor (for TensorBoard)."""
    # imported here: torchvision's package import (models, ops, torch._dynamo) costs a
    # command 2-4 s of start-up, which a refused or grid-less command need not pay
    from torchvision.utils import make_grid, save_image

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


def _parse_jsonl(path: Path) -> tuple[list[tuple[bytes, dict[str, Any]]], list[bytes]]:
    """``([(line, record), ...], [bad line, ...])`` of a JSON-lines file: a line is bad
    when it is not UTF-8, not JSON or not a JSON object (torn by a kill, garbage from a
    disk or an editor). Blank lines are neither. Lines are bytes without their newline."""
    good, bad = [], []
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError and JSONDecodeError alike
            record = None
        if isinstance(record, dict):
            good.append((line, record))
        else:
            bad.append(line)
    return good, bad


def _warn_bad_lines(path: Path, bad: list[bytes], fate: str) -> None:
    """The one warning line about ``bad`` lines of ``path`` (``fate``: what became of them)."""
    log.warning("%s: %d torn or unreadable line(s) %s", path, len(bad), fate)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records (JSON objects) of a JSON-lines file such as ``metrics.jsonl`` or
    ``train_history.jsonl``, in file order. Torn or garbage lines are skipped with one
    warning line (:func:`truncate_jsonl` moves them aside when a run resumes).

    Raises:
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    good, bad = _parse_jsonl(path)
    if bad:
        _warn_bad_lines(path, bad, "skipped")
    return [record for _, record in good]


def truncate_jsonl(path: str | Path, key: str, last: float) -> int:
    """Drop the records of a JSON-lines file whose ``key`` is above ``last`` (atomic rewrite;
    a missing file is fine). A resumed run calls it with its checkpoint's epoch / step, so
    lines written after that checkpoint by a killed process (SIGKILL between a line and
    ``last.pt``) are not repeated when those epochs run again.

    Torn or garbage lines (not UTF-8, not a JSON object, or ``key`` not a number) are
    appended to ``<path>.corrupt`` before the file is rewritten without them, and reported
    in one warning line naming both files: never dropped without a word.

    Returns:
        How many lines were removed (records after ``last`` and bad lines).

    Raises:
        WriteError: ``<path>.corrupt`` or ``path`` cannot be written (the file is then
            unchanged).
    """
    path = Path(path)
    if not path.is_file():
        return 0
    good, bad = _parse_jsonl(path)
    kept, after = [], 0
    for line, record in good:
        value = record.get(key, -math.inf)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            bad.append(line)
        elif value > last:
            after += 1
        else:
            kept.append(line + b"\n")
    if bad:
        corrupt = path.with_name(f"{path.name}.corrupt")
        before = corrupt.read_bytes() if corrupt.is_file() else b""
        write_bytes(corrupt, before + b"".join(line + b"\n" for line in bad))
        _warn_bad_lines(path, bad, f"moved to {corrupt}")
    if bad or after:
        write_bytes(path, b"".join(kept))
    return after + len(bad)


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
