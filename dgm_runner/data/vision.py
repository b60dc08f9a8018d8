"""MNIST and Fashion-MNIST as in-memory tensors, found offline or downloaded.

Sources, in order (``../shared/DESIGN.md``, "Data"):

1. ``dataset.root`` if set,
2. the ``DGM_DATA_DIR`` environment variable,
3. system copies (Debian's ``dataset-fashion-mnist`` in ``/usr/share/datasets``),
4. the user cache ``$DGM_CACHE_DIR`` (default ``~/.cache/dgm_runner``), where
   torchvision downloads when ``dataset.download`` is true.

A source directory holds the four IDX files (gzipped or not) either directly or in the
torchvision layout ``<dir>/<Folder>/raw/``. Sources are treated as read-only: the files
are decompressed into ``<cache>/<Folder>/raw/`` and read there by torchvision.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch

from dgm_runner.config import PositiveInt, UnitInterval
from dgm_runner.data.base import DataError, ImageData
from dgm_runner.io.atomic import atomic_open, write_json

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class _Spec:
    tv_class: str  # torchvision.datasets class name
    folder: str  # torchvision folder name under the root
    system_dirs: tuple[str, ...] = ()
    install_hint: str = ""


SPECS = {
    "mnist": _Spec("MNIST", "MNIST"),
    "fashion_mnist": _Spec(
        "FashionMNIST",
        "FashionMNIST",
        ("/usr/share/datasets/fashion-mnist",),
        "apt-get install dataset-fashion-mnist, or ",
    ),
}


def cache_dir() -> Path:
    """The user cache for decompressed and downloaded data (``$DGM_CACHE_DIR`` or
    ``$XDG_CACHE_HOME/dgm_runner``, default ``~/.cache/dgm_runner``)."""
    if os.environ.get("DGM_CACHE_DIR"):
        return Path(os.environ["DGM_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dgm_runner"


def _find_idx(directory: Path) -> dict[str, Path] | None:
    """Map each IDX file name to its path (plain or .gz) in ``directory``, or None."""
    found = {}
    for name in IDX_FILES:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                found[name] = candidate
                break
        else:
            return None
    return found


def _candidate_dirs(spec: _Spec, root: Optional[str]) -> list[Path]:
    dirs: list[Path] = []
    for base in (root, os.environ.get("DGM_DATA_DIR")):
        if base:
            base_path = Path(base).expanduser()
            dirs += [base_path / spec.folder / "raw", base_path / spec.folder, base_path]
    dirs += [Path(d) for d in spec.system_dirs]
    return dirs


_IDX_UBYTE = 0x08  # IDX type code of unsigned bytes, the only one MNIST-like files use


def _idx_dims(name: str, header: bytes, read) -> tuple[int, ...]:
    """Parse an IDX header (``header`` = its first 4 bytes, ``read(n)`` for the rest) of
    the file called ``name``; raise ValueError saying what is wrong."""
    if len(header) < 4:
        raise ValueError("file is empty or shorter than an IDX header")
    magic = int.from_bytes(header, "big")
    ndim, dtype = magic & 0xFF, magic >> 8
    want = 3 if "images" in name else 1
    if dtype != _IDX_UBYTE or ndim != want:
        raise ValueError(f"not an IDX {'image' if want == 3 else 'label'} file (magic 0x{magic:08x}, "
                         f"expected 0x{(_IDX_UBYTE << 8) | want:08x})")
    raw_dims = read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise ValueError("truncated IDX header")
    return tuple(int.from_bytes(raw_dims[4 * i : 4 * i + 4], "big") for i in range(ndim))


def _check_payload(dims: tuple[int, ...], payload: int) -> None:
    expected = 1
    for d in dims:
        expected *= d
    if payload != expected:
        shape = "x".join(map(str, dims))
        what = "truncated" if payload < expected else "has trailing bytes"
        raise ValueError(f"{what}: the header promises {shape} = {expected} bytes of data, the file holds {payload}")


def check_idx_file(path: Path) -> None:
    """Check an uncompressed IDX file's header against its size (cheap: no data read).

    Raises:
        DataError: one line naming the file and what is wrong with it.
    """
    try:
        with open(path, "rb") as f:
            dims = _idx_dims(path.name, f.read(4), f.read)
            _check_payload(dims, path.stat().st_size - f.tell())
    except (OSError, ValueError) as err:
        raise DataError(f"{path} is not a valid IDX file: {err}; delete it and retry") from None


def _stamp(src: Path) -> str:
    st = src.stat()
    return f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _materialize(files: dict[str, Path], dest: Path) -> None:
    """Decompress/copy the IDX files into ``dest``, atomically and checked.

    A cached copy is reused only while it was made from the same source file (path,
    size, modification time, recorded in ``dest/.sources.json``), so pointing
    ``dataset.root`` at another copy of the data never silently reads a stale cache.
    A corrupt or truncated source raises :class:`DataError` and leaves the cache as it was.
    """
    dest.mkdir(parents=True, exist_ok=True)
    stamps_file = dest / ".sources.json"
    try:
        stamps = json.loads(stamps_file.read_text())
    except (OSError, ValueError):
        stamps = {}
    changed = False
    for name, src in files.items():
        target = dest / name
        if src.parent.resolve() == dest.resolve():  # the cache itself (or torchvision's download)
            if src.suffix != ".gz":
                check_idx_file(src)
                continue
        stamp = _stamp(src)
        if target.is_file() and stamps.get(name) == stamp:
            continue
        opener = gzip.open if src.suffix == ".gz" else open
        try:
            with opener(src, "rb") as fin, atomic_open(target, "wb") as fout:
                head = fin.read(4)
                dims = _idx_dims(name, head, fin.read)
                fout.write(head)
                for d in dims:
                    fout.write(d.to_bytes(4, "big"))
                start = fout.tell()
                shutil.copyfileobj(fin, fout)
                _check_payload(dims, fout.tell() - start)
        except (OSError, EOFError, zlib.error, ValueError) as err:
            raise DataError(f"cannot read {src} (unreadable: {err}); replace it with an intact copy") from None
        stamps[name] = stamp
        changed = True
    if changed:
        write_json(stamps_file, stamps)


@functools.lru_cache(maxsize=8)
def _load_uint8(name: str, root: Optional[str], download: bool) -> tuple[torch.Tensor, ...]:
    """Load (train_x, train_y, test_x, test_y) as uint8/int64 CPU tensors, memoized."""
    import torchvision.datasets as tvd

    spec = SPECS[name]
    cache = cache_dir()
    raw = cache / spec.folder / "raw"
    looked = []
    for directory in _candidate_dirs(spec, root) + [raw]:
        looked.append(str(directory))
        files = _find_idx(directory)
        if files is not None:
            _materialize(files, raw)
            break
    else:
        if not download:
            raise DataError(_missing_message(name, spec, looked, "dataset.download=false"))
        try:
            getattr(tvd, spec.tv_class)(str(cache), train=True, download=True)
        except Exception as err:  # network errors come in many types
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise DataError(_missing_message(name, spec, looked, f"download failed: {reason}")) from None
    cls = getattr(tvd, spec.tv_class)
    try:
        train = cls(str(cache), train=True, download=False)
        test = cls(str(cache), train=False, download=False)
    except Exception as err:
        reason = str(err).splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{name}: the IDX files in {raw} are unreadable ({reason}); delete them and retry") from None
    return train.data, train.targets.long(), test.data, test.targets.long()


def _missing_message(name: str, spec: _Spec, looked: list[str], reason: str) -> str:
    return (
        f"dataset {name!r} not found ({reason}); looked in: {', '.join(looked)}. "
        f"Fix: {spec.install_hint}set DGM_DATA_DIR or dataset.root to a folder holding "
        f"{spec.folder}/raw/{IDX_FILES[0]}.gz and the other IDX files, or run once online."
    )


def load_vision_dataset(
    name: Literal["mnist", "fashion_mnist"] = "mnist",
    root: Optional[str] = None,
    download: bool = True,
    binarize: bool = False,
    threshold: UnitInterval = 0.5,
    subset: Optional[PositiveInt] = None,
    test_subset: Optional[PositiveInt] = None,
    per_class: Optional[PositiveInt] = None,
    image_size: Optional[PositiveInt] = None,
    device: str | torch.device = "cpu",
) -> ImageData:
    """Load MNIST or Fashion-MNIST into memory as float tensors on ``device``.

    Args:
        name: which dataset.
        root: a directory to look in first (see module docstring).
        download: allow torchvision to download into the cache when nothing is found.
        binarize: map each pixel to ``1.0 if intensity > threshold else 0.0``; the
            intensity is in [0, 1], so the result is fixed per image (no resampling).
        threshold: binarization threshold on [0, 1] intensities (seed 002 uses 128/255).
        subset: keep only the first ``subset`` training images (after ``per_class``).
        test_subset: keep only the first ``test_subset`` test images.
        per_class: keep only the first ``per_class`` training images of each class, in
            their original order (seed 002 Problem 2: 1000 per digit).
        image_size: downsample to ``image_size x image_size`` by area averaging before
            binarizing (seed 002: 14x14).
        device: where the tensors live.

    Returns:
        :class:`ImageData` with ``(N, 1, 28, 28)`` float32 images in [0, 1].

    Raises:
        DataError: the dataset is nowhere to be found (the message lists every place
            looked in and how to fix it) or its files are corrupt.
    """
    if name not in SPECS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(SPECS)}")
    train_x, train_y, test_x, test_y = _load_uint8(name, root, download)
    if per_class is not None:
        keep = torch.cat([torch.nonzero(train_y == c).flatten()[:per_class] for c in range(10)])
        keep = keep.sort().values
        train_x, train_y = train_x[keep], train_y[keep]
    if subset is not None:
        train_x, train_y = train_x[:subset], train_y[:subset]
    if test_subset is not None:
        test_x, test_y = test_x[:test_subset], test_y[:test_subset]

    def to_float(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device).unsqueeze(1).float().div_(255.0)
        if image_size is not None and image_size != x.shape[-1]:
            x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="area")
        return (x > threshold).float() if binarize else x

    return ImageData(
        name=name,
        train_x=to_float(train_x),
        train_y=train_y.to(device),
        test_x=to_float(test_x),
        test_y=test_y.to(device),
        n_classes=10,
        binarized=binarize,
    )
