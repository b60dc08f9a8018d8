"""The decoded-image cache: uint8 ``.npy`` arrays written once, read in memory or memory-mapped.

A colour dataset's images are decoded once (:mod:`dgm_runner.data.image_decode`) into
``<cache>/<name>/decoded/<key>/`` (``<cache>`` is :func:`dgm_runner.data.cache.cache_dir`):
``train_x.npy`` / ``test_x.npy`` uint8 ``(N, C, H, W)``, ``train_y.npy`` / ``test_y.npy``
int64 ``(N,)`` and ``meta.json`` (format, key, dataset, source folder, decode options,
shapes, classes). ``<key>`` hashes the path, size and ``mtime_ns`` of every source file
(:func:`stamp_digest`; for an image folder every image, in sorted order) and the decode
options, so a changed, added or removed file, or another ``image_size``, gives another key.

As :mod:`dgm_runner.data.cache`: a keyed directory is filled in a temporary directory
``.tmp-<key>-<random>/`` (each array written with plain writes, so a full disk is an
``OSError``, never a ``SIGBUS`` of a memory map) and renamed onto ``<key>`` only once
complete, with ``meta.json`` last; a crash, a kill, a full disk or an unreadable image
during decoding leaves no keyed directory, only a temp dir that a later fill deletes when it
is over an hour old. A keyed directory is read only when ``meta.json`` records its key and
the arrays have the recorded shapes; otherwise it is discarded and filled again. Keyed
directories of the same source folder and options with another key (their files changed)
are deleted after a fill.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from dgm_runner.data.base import DataError
from dgm_runner.data.cache import (
    _TMP_PREFIX,
    _write_error,
    cache_dir,
    publish_keyed,
    sweep_keyed,
)

__all__ = [
    "ARRAYS",
    "NpyWriter",
    "decoded_dir",
    "mapped_rows",
    "read_float",
    "stamp_digest",
]

#: Bump when the decoding protocol changes (it is part of every key).
FORMAT = 1
_META = "meta.json"
_DECODED = "decoded"
#: The arrays of a keyed directory.
ARRAYS = ("train_x", "train_y", "test_x", "test_y")
_CHUNK_BYTES = 8 << 20  # uint8 bytes read per block when converting to float


def stamp_digest(files: list[Path]) -> str:
    """SHA-256 of the resolved path, size and ``mtime_ns`` of each file, in the given order.

    Raises:
        DataError: a file vanished or cannot be stat'ed (one line naming it).
    """
    digest = hashlib.sha256()
    for path in files:
        try:
            st = os.stat(path)
        except OSError as err:
            raise DataError(
                f"cannot read {path} ({err.strerror or err}); check the file and retry"
            ) from None
        digest.update(
            f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape")
        )
    return digest.hexdigest()


def _key(parts: dict[str, Any]) -> str:
    blob = json.dumps({"format": FORMAT, **parts}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class NpyWriter:
    """A ``.npy`` file of known shape written row block by row block with plain writes.

    Args:
        path: the new file.
        shape: the array's shape; ``append`` must supply exactly ``shape[0]`` rows.
        dtype: its dtype.

    Raises:
        DataError: the file cannot be written (full disk, ...), or :meth:`close` finds
            another number of rows than ``shape[0]``.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: Any) -> None:
        self.path, self.shape, self.dtype = path, tuple(shape), np.dtype(dtype)
        self.rows = 0
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": self.shape,
        }
        try:
            self._file = open(path, "xb")
            np.lib.format.write_array_header_1_0(self._file, header)
        except OSError as err:
            raise _write_error(path.parent, err) from None

    def append(self, rows: np.ndarray) -> None:
        """Write ``rows`` (``(B, *shape[1:])``) after the rows written so far."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.shape[1:]:
            raise ValueError(f"rows of shape {rows.shape[1:]} in an array of {self.shape}")
        try:
            self._file.write(rows.tobytes())
        except OSError as err:
            raise _write_error(self.path.parent, err) from None
        self.rows += rows.shape[0]

    def close(self) -> None:
        """Flush and fsync the file; check that every row was written."""
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        except OSError as err:
            raise _write_error(self.path.parent, err) from None
        if self.rows != self.shape[0]:
            raise DataError(f"{self.path}: {self.rows} rows written of {self.shape[0]}; retry")

    def abandon(self) -> None:
        """Close without checks (the temporary directory is deleted anyway)."""
        try:
            self._file.close()
        except OSError:
            pass


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a C-order ``.npy`` file."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read(f)
        if fortran:
            raise ValueError("Fortran order")
        return tuple(shape), dtype, f.tell()


def _meta_of(keyed: Path, key: str) -> Optional[dict[str, Any]]:
    """``keyed``'s meta if it records ``key`` and its arrays have the recorded shapes and
    the files the sizes those shapes give; else None (the directory must not be read)."""
    try:
        meta = json.loads((keyed / _META).read_text(encoding="utf-8"))
        if not (isinstance(meta, dict) and meta.get("format") == FORMAT and meta.get("key") == key):
            return None
        for name in ARRAYS:
            shape, dtype, offset = _header(keyed / f"{name}.npy")
            if list(shape) != meta["shapes"][name]:
                return None
            size = offset + int(np.prod(shape)) * dtype.itemsize
            if (keyed / f"{name}.npy").stat().st_size != size:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return meta


def _sweep(decoded: Path, keep: str, source: str, options: dict[str, Any]) -> None:
    """:func:`~dgm_runner.data.cache.sweep_keyed` of the decoded caches: keyed directories
    of the same source folder and options under another key (their files changed) go."""

    def superseded(entry: Path) -> bool:
        meta = json.loads((entry / _META).read_text(encoding="utf-8"))
        return meta.get("source") == source and meta.get("options") == options

    sweep_keyed(decoded, keep, superseded)


def decoded_dir(
    name: str,
    source: str,
    digest: str,
    options: dict[str, Any],
    fill: Callable[[Path], dict[str, Any]],
) -> tuple[Path, dict[str, Any]]:
    """The keyed directory of ``name``'s images decoded with ``options``: reused when its
    meta checks out, else filled by ``fill`` in a temporary directory and renamed into place.

    Args:
        name: the dataset (``<cache>/<name>/decoded/``).
        source: the source folder (recorded; keyed directories of the same source and
            options under another key are deleted after a fill).
        digest: :func:`stamp_digest` of the source files.
        options: the decode options (JSON values), part of the key.
        fill: writes the four arrays into the directory it is given (with :class:`NpyWriter`)
            and returns the meta to record (``shapes`` of the four arrays and anything else).

    Returns:
        (the keyed directory, its meta).

    Raises:
        DataError: ``fill`` raised it (a bad file, named), or the cache cannot be written.
    """
    key = _key({"name": name, "digest": digest, "options": options})
    decoded = cache_dir() / name / _DECODED
    target = decoded / key
    meta = _meta_of(target, key)
    if meta is not None:
        return target, meta
    try:
        decoded.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{key}-", dir=decoded))
    except OSError as err:
        raise _write_error(decoded, err) from None
    try:
        meta = {
            "format": FORMAT,
            "key": key,
            "name": name,
            "source": source,
            "options": options,
            **fill(tmp),
        }
        found = publish_keyed(tmp, target, _META, meta, lambda: _meta_of(target, key))
        if found is not None:
            return target, found  # the other run's copy of the same images
        _sweep(decoded, key, source, options)
        return target, meta
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def mapped_rows(path: Path, n: Optional[int] = None) -> torch.Tensor:
    """The first ``n`` rows (all: None) of a ``.npy`` file as a memory-mapped CPU tensor
    (copy-on-write: the tensor is writable, a write never reaches the file, and
    ``torch.from_numpy`` has no read-only array to warn about). Pages are read from disk
    when a row is first used."""
    arr = np.load(path, mmap_mode="c")
    return torch.from_numpy(arr[:n] if n is not None else arr)


def read_float(path: Path, device: Any, n: Optional[int] = None) -> torch.Tensor:
    """The first ``n`` rows (all: None) of a uint8 ``.npy`` file as float32 ``levels / 255``
    on ``device``, read block by block with plain reads (the peak memory is the float tensor
    plus one block, not the whole uint8 file as well)."""
    shape, dtype, offset = _header(path)
    rows = shape[0] if n is None else min(n, shape[0])
    row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
    out = torch.empty((rows, *shape[1:]), dtype=torch.float32, device=device)
    step = max(1, _CHUNK_BYTES // max(row_bytes, 1))
    with open(path, "rb") as f:
        f.seek(offset)
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            block = np.fromfile(f, dtype=dtype, count=(stop - start) * row_bytes // dtype.itemsize)
            levels = torch.from_numpy(block.reshape(stop - start, *shape[1:]))
            out[start:stop] = levels.to(device).float().div_(255.0)
    return out


def read_array(path: Path, n: Optional[int] = None) -> np.ndarray:
    """The first ``n`` rows (all: None) of a small ``.npy`` file (labels) in memory."""
    arr = np.load(path)
    return arr[:n] if n is not None else arr
