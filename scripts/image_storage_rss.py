"""``python scripts/image_storage_rss.py [--n 100000] [--size 64] [--n-test 1000]``: the peak
resident memory of loading a colour dataset with ``dataset.storage=memory`` against
``memmap``, each in a fresh process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``).

A synthetic decoded cache (random uint8 ``(N, 3, S, S)`` images, written with the cache's own
:func:`dgm_runner.data.image_cache.decoded_dir` into a temporary ``DGM_CACHE_DIR``) stands
in for a decoded image folder, so no image is decoded; each child process builds the
:class:`~dgm_runner.data.base.DataSplits` from it
(:func:`dgm_runner.data.images.splits_from_cache`), reports its peak RSS, then gathers one
epoch of batches of 256 rows with ``train_rows`` and reports the peak again. The
temporary directory (about ``N * 3 * S * S`` bytes) is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _fill(n: int, n_test: int, size: int):
    """A ``decoded_dir`` fill writing random images block by block."""
    from dgm_runner.data.image_cache import NpyWriter

    def fill(tmp: Path) -> dict:
        rng = np.random.default_rng(0)
        shapes = {}
        for split, rows in (("train", n), ("test", n_test)):
            writer = NpyWriter(tmp / f"{split}_x.npy", (rows, 3, size, size), np.uint8)
            for start in range(0, rows, 4096):
                block = min(4096, rows - start)
                writer.append(rng.integers(0, 256, (block, 3, size, size), dtype=np.uint8))
            writer.close()
            labels = NpyWriter(tmp / f"{split}_y.npy", (rows,), np.int64)
            labels.append(np.zeros(rows, np.int64))
            labels.close()
            shapes[f"{split}_x"], shapes[f"{split}_y"] = [rows, 3, size, size], [rows]
        return {"shapes": shapes, "n_classes": 1, "classes": []}

    return fill


def _no_fill(tmp: Path) -> dict:
    raise RuntimeError("the parent process wrote the cache; a child must find it")


def _child(storage: str) -> None:
    """Load the cache named by the environment with ``storage``; print peak RSS as JSON."""
    import torch

    from dgm_runner.data.image_cache import decoded_dir
    from dgm_runner.data.images import splits_from_cache

    size = int(os.environ["RSS_SIZE"])
    before = _peak_mib()
    started = time.perf_counter()
    keyed, meta = decoded_dir("rss", "synthetic", "0", {"size": size}, _no_fill)
    data = splits_from_cache("rss", keyed, meta, storage=storage)
    loaded_s = time.perf_counter() - started
    after_load = _peak_mib()
    started = time.perf_counter()
    perm = torch.randperm(data.train_x.shape[0])
    total = 0.0
    for i in range(0, perm.numel(), 256):
        total += float(data.train_rows(perm[i : i + 256]).sum())
    print(
        json.dumps(
            {
                "storage": storage,
                "train_x": f"{data.train_x.dtype} {tuple(data.train_x.shape)}",
                "peak_rss_mib_before_load": round(before),
                "peak_rss_mib_after_load": round(after_load),
                "peak_rss_mib_after_one_epoch_of_train_rows": round(_peak_mib()),
                "load_s": round(loaded_s, 2),
                "epoch_gather_s": round(time.perf_counter() - started, 2),
            }
        )
    )


def main() -> None:
    """Write the synthetic cache, measure both storages in fresh processes, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="training images")
    parser.add_argument("--n-test", type=int, default=1_000, help="test images")
    parser.add_argument("--size", type=int, default=64, help="image side (3 x S x S)")
    parser.add_argument("--child", choices=("memory", "memmap"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return
    with tempfile.TemporaryDirectory(prefix="dgm-rss-") as tmp:
        os.environ["DGM_CACHE_DIR"] = tmp
        from dgm_runner.data.image_cache import decoded_dir

        fill = _fill(args.n, args.n_test, args.size)
        decoded_dir("rss", "synthetic", "0", {"size": args.size}, fill)
        env = {**os.environ, "RSS_SIZE": str(args.size)}
        gib = args.n * 3 * args.size**2 / 2**30
        print(f"{args.n} train + {args.n_test} test images of 3x{args.size}x{args.size}: "
              f"{gib:.2f} GiB uint8, {4 * gib:.2f} GiB float32 (cache in {tmp})")  # fmt: skip
        for storage in ("memmap", "memory"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", storage],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            print(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
