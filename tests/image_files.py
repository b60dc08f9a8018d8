"""Small image datasets in the real on-disk formats, written by the tests themselves (no
colour dataset is reachable on the machines this project is tested on): CIFAR-10's python
batches and a folder of PNG / JPEG files with class sub-folders."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def write_cifar(root: Path, per_batch: int = 4, n_test: int = 3, seed: int = 0) -> dict[str, tuple]:
    """The python CIFAR-10 layout under ``root``: ``cifar-10-batches-py/{data_batch_1..5,
    test_batch}``, dicts of bytes keys, b"data" uint8 (N, 3072) (1024 R, 1024 G, 1024 B
    values, row-major), b"labels" lists; pickle protocol 2, as the originals.

    Returns:
        ``{file name: (data (N, 3072) uint8, labels)}``.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    written = {}
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        batch = {b"batch_label": b"x", b"data": data, b"labels": labels, b"filenames": [b"f"] * n}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        written[name] = (data, labels)
    return written


def write_image_folder(root: Path, per_class: int, size: int = 20, seed: int = 0) -> None:
    """``root/{cats,dogs}/`` with ``per_class`` RGB images each of ``size x (size + 4)``
    pixels (not square: the loader crops), alternately PNG and JPEG."""
    rng = np.random.default_rng(seed)
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)
            Image.fromarray(pixels, "RGB").save(root / cls / f"{i:03d}.{('png', 'jpg')[i % 2]}")
