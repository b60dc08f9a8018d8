"""Small synthetic MNIST-layout sources (IDX files) for the data tests."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from dgm_runner.data import vision


def idx_images(n: int, h: int = 28, w: int = 28, seed: int = 0) -> bytes:
    """An IDX image file of ``n`` random ``h x w`` uint8 images."""
    pixels = np.random.default_rng(seed).integers(0, 256, n * h * w, dtype=np.uint8)
    return struct.pack(">IIII", 0x803, n, h, w) + pixels.tobytes()


def idx_labels(labels: list[int]) -> bytes:
    """An IDX label file."""
    return struct.pack(">II", 0x801, len(labels)) + bytes(labels)


def write_mnist(
    root: Path, train_x: bytes, train_y: bytes, test_x: bytes, test_y: bytes, gz: bool = True
) -> Path:
    """Write the four files into ``root/MNIST/raw/`` (gzipped or not); returns ``root``."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, data in zip(vision.IDX_FILES, (train_x, train_y, test_x, test_y)):
        if gz:
            with gzip.open(raw / f"{name}.gz", "wb") as f:
                f.write(data)
        else:
            (raw / name).write_bytes(data)
    return root
