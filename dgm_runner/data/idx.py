"""The IDX file format of MNIST-like datasets: headers, payload checks, reading into tensors.

An IDX file is a 4-byte big-endian magic number (type code ``0x08`` for unsigned bytes
in its third byte, the number of dimensions in its fourth), one 4-byte big-endian size
per dimension, then the payload: exactly the product of the sizes in bytes. Image
files (``*images*``) are 3-D, label files 1-D.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from dgm_runner.data.base import DataError

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

_IDX_UBYTE = 0x08  # IDX type code of unsigned bytes, the only one MNIST-like files use


def _idx_dims(name: str, header: bytes, read: Callable[[int], bytes]) -> tuple[int, ...]:
    """Parse an IDX header (``header`` = its first 4 bytes, ``read(n)`` for the rest) of
    the file called ``name``; raise ValueError saying what is wrong."""
    if len(header) < 4:
        raise ValueError("file is empty or shorter than an IDX header")
    magic = int.from_bytes(header, "big")
    ndim, dtype = magic & 0xFF, magic >> 8
    want = 3 if "images" in name else 1
    if dtype != _IDX_UBYTE or ndim != want:
        raise ValueError(
            f"not an IDX {'image' if want == 3 else 'label'} file (magic 0x{magic:08x}, "
            f"expected 0x{(_IDX_UBYTE << 8) | want:08x})"
        )
    raw_dims = read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise ValueError("truncated IDX header")
    return tuple(int.from_bytes(raw_dims[4 * i : 4 * i + 4], "big") for i in range(ndim))


def _n_bytes(dims: tuple[int, ...]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def _check_payload(dims: tuple[int, ...], payload: int) -> None:
    expected = _n_bytes(dims)
    if payload != expected:
        shape = "x".join(map(str, dims))
        what = "truncated" if payload < expected else "has trailing bytes"
        raise ValueError(
            f"{what}: the header promises {shape} = {expected} bytes of data, "
            f"the file holds {payload}"
        )


def check_idx_file(path: Path) -> None:
    """Check an uncompressed IDX file's header against its size (cheap: no data read).

    Args:
        path: an uncompressed IDX file whose name says what it holds (``*images*``:
            3-D ubyte, else 1-D ubyte).

    Raises:
        DataError: one line naming the file and what is wrong with it.
    """
    try:
        with open(path, "rb") as f:
            dims = _idx_dims(path.name, f.read(4), f.read)
            _check_payload(dims, path.stat().st_size - f.tell())
    except (OSError, ValueError) as err:
        raise DataError(f"{path} is not a valid IDX file: {err}; delete it and retry") from None


def check_idx_set(
    files: Mapping[str, str | Path],
    dims: Mapping[str, Sequence[int]],
    image_hw: tuple[int, int],
    dataset: str,
) -> None:
    """Check the four IDX files of a dataset against each other and against the image size
    the dataset declares, from their headers alone: each split's images are
    ``image_hw`` pixels and its label file holds one label per image (checked before
    ``dataset.subset`` or ``per_class`` slice both and could hide a mismatch).

    Args:
        files: :data:`IDX_FILES` name -> the source file (named in messages).
        dims: :data:`IDX_FILES` name -> the dimensions its header declares.
        image_hw: ``(H, W)`` of the dataset's images (28x28 for MNIST-like datasets).
        dataset: the dataset's name in messages (``MNIST``).

    Raises:
        DataError: one line naming the file(s), the shape or the two counts.
    """
    want_h, want_w = image_hw
    for images, labels in (IDX_FILES[0:2], IDX_FILES[2:4]):
        n, h, w = (int(d) for d in dims[images])
        if (h, w) != (want_h, want_w):
            raise DataError(
                f"{files[images]} holds {n} images of {h}x{w} pixels, but {dataset} images "
                f"are {want_h}x{want_w}: replace it with the {dataset} file (for smaller "
                "images keep the files and set dataset.image_size)"
            )
        (m,) = (int(d) for d in dims[labels])
        if m != n:
            raise DataError(
                f"{files[images]} holds {n} images but {files[labels]} holds {m} labels: "
                "each image needs one label; replace the two files with a matching pair"
            )


class _CacheDamaged(Exception):
    pass


def _read_idx(path: Path, info: dict[str, Any]) -> torch.Tensor:
    """Read a cached IDX file into a uint8 tensor of its header's shape, checking its
    SHA-256 against ``info``; raise :class:`_CacheDamaged` when anything is off."""
    digest = hashlib.sha256()

    try:
        with open(path, "rb") as f:

            def read(n: int) -> bytes:
                b = f.read(n)
                digest.update(b)
                return b

            dims = _idx_dims(path.name, read(4), read)
            buf = bytearray(_n_bytes(dims))
            got = f.readinto(buf)
            if got != len(buf) or f.read(1):
                raise ValueError("size changed")
    except (OSError, ValueError) as err:
        raise _CacheDamaged(f"{path}: {err}") from None
    digest.update(buf)
    if digest.hexdigest() != info.get("sha256"):
        raise _CacheDamaged(f"{path}: content does not match its recorded SHA-256")
    flat = torch.frombuffer(buf, dtype=torch.uint8) if buf else torch.empty(0, dtype=torch.uint8)
    return flat.reshape(dims)
