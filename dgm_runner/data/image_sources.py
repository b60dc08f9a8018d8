"""Where each colour dataset's files are, and how they become the decoded cache's arrays.

Sources (``docs/design.md``, "Data"), as for MNIST (:mod:`dgm_runner.data.vision`):

* ``cifar10``: the python version of CIFAR-10 in torchvision's layout,
  ``cifar-10-batches-py/{data_batch_1..5,test_batch}`` (``batches.meta`` is not needed),
  from ``cifar-10-python.tar.gz`` of https://www.cs.toronto.edu/~kriz/cifar.html.
  ``dataset.root`` when set is the only source (``<root>/cifar-10-batches-py`` or
  ``<root>`` itself); else ``$DGM_DATA_DIR`` (the same two layouts), then
  ``<cache>/cifar10/cifar-10-batches-py``, where ``torchvision.datasets.CIFAR10(...,
  download=True)`` downloads and extracts when ``dataset.download`` is true. The official
  split: 50 000 training images (the five data batches, in order), 10 000 test images.
* ``celeba``: torchvision's layout, ``celeba/img_align_celeba/*.jpg`` (the 202 599
  aligned and cropped 178x218 faces of ``img_align_celeba.zip``) and
  ``celeba/list_eval_partition.txt``; the same order of sources (``<root>/celeba`` or
  ``<root>``), the download through ``torchvision.datasets.CelebA(..., download=True)``
  (Google Drive) into ``<cache>/celeba/celeba``. Training split: partition 0 (162 770
  images); test split: partition 2 (19 962); the validation partition 1 is not used. No
  labels (one class).
* ``image_folder``: every ``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.gif`` or ``.webp``
  file under ``dataset.root`` (recursive, sorted by relative path; hidden files and folders
  skipped). When no image sits directly in the root, each image's first-level folder is its
  class (sorted folder names -> 0..K-1, as ``torchvision.datasets.ImageFolder``); else one
  class. A held-out test split of ``round(test_fraction * N)`` images (at least 1, at most
  ``N - 1``) drawn by a
  permutation from a ``torch.Generator`` seeded ``split_seed``; each split keeps the sorted
  order.

Every image is decoded by :func:`dgm_runner.data.image_decode.to_array` (one protocol for
the three) into :mod:`dgm_runner.data.image_cache`'s keyed directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch

from dgm_runner.data.base import DataError
from dgm_runner.data.cache import cache_dir
from dgm_runner.data.image_cache import NpyWriter
from dgm_runner.data.image_decode import (
    grey_modes,
    open_image,
    oriented_size,
    read_cifar_batch,
    to_array,
)
from dgm_runner.progress import track

__all__ = [
    "CELEBA_CROP",
    "CIFAR_FILES",
    "IMAGE_EXTENSIONS",
    "Decode",
    "Found",
    "find",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_FILES = (*CIFAR_TRAIN, "test_batch")
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR_FOLDER = "cifar-10-batches-py"
_CELEBA_FOLDER = "celeba"
_CELEBA_IMAGES = "img_align_celeba"
_CELEBA_PARTITION = "list_eval_partition.txt"
#: CelebA's centred square crop before resizing: 140x140 of the 178x218 aligned faces, then
#: 64x64 (Tolstikhin et al. 2018, "Wasserstein Auto-Encoders", Sec. 4).
CELEBA_CROP = 140
CELEBA_SIZE = 64
_CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
_LABEL_DIGITS = 10  # CIFAR-10's classes


@dataclass(frozen=True)
class Decode:
    """The decode options that are part of the cache key.

    Attributes:
        channels: 1 or 3; None (image folders only): 1 when every file is grey, else 3.
        crop: side of the centred square crop; None: the shorter side.
        size: output side; None: the crop's side (every image of the folder the same size).
        test_fraction, split_seed: an image folder's held-out split (None for the datasets
            with an official split).
    """

    channels: Optional[int]
    crop: Optional[int]
    size: Optional[int]
    test_fraction: Optional[float] = None
    split_seed: Optional[int] = None

    def as_json(self) -> dict[str, Any]:
        """The options as a JSON dict (recorded in the cache's meta and key)."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Found:
    """A dataset's source: the folder, every file read (in decode order, stamped for the cache
    key), the decode options with the dataset's defaults filled in (part of the key) and the
    fill of the decoded cache (``fill(tmp_dir) -> meta``)."""

    folder: Path
    files: list[Path]
    options: Decode
    fill: Callable[[Path], dict[str, Any]]


# --------------------------------------------------------------------------- finding the files


def _missing(directory: Path, needed: Iterable[str]) -> list[str]:
    return [n for n in needed if not (directory / n).exists()]


def _search(
    name: str,
    root: Optional[str],
    download: bool,
    folder: str,
    needed: tuple[str, ...],
    fix: str,
    fetch: Callable[[Path], None],
) -> Path:
    """The folder holding ``needed``: in ``root`` only (``<root>/<folder>``, ``<root>``), else
    ``$DGM_DATA_DIR`` (the same layouts), then ``<cache>/<name>/<folder>``, downloaded there
    by ``fetch(<cache>/<name>)`` when allowed.

    Raises:
        DataError: one line: what is missing where, and ``fix``.
    """
    if root:
        base = Path(root).expanduser()
        layouts = [base / folder, base]
        for directory in layouts:
            if not _missing(directory, needed):
                return directory
        if not base.is_dir():
            raise DataError(f"dataset.root={base} does not exist or is not a directory; {fix}")
        best = min(layouts, key=lambda d: len(_missing(d, needed)))
        raise DataError(
            f"dataset.root={base} does not hold {name}: {best} lacks "
            f"{', '.join(_missing(best, needed))}; {fix}"
        )
    downloads = cache_dir() / name / folder
    dirs: list[Path] = []
    if os.environ.get("DGM_DATA_DIR"):
        base = Path(os.environ["DGM_DATA_DIR"]).expanduser()
        dirs += [base / folder, base]
    dirs.append(downloads)
    looked = []
    for directory in dirs:
        lacking = _missing(directory, needed)
        if not lacking:
            return directory
        partial = f" (lacks {', '.join(lacking)})" if len(lacking) < len(needed) else ""
        looked.append(f"{directory}{partial}")
    where = f"looked in: {', '.join(looked)}"
    if not download:
        raise DataError(f"dataset {name!r} not found (dataset.download=false); {where}; {fix}")
    try:
        fetch(downloads.parent)
    except Exception as err:  # network errors come in many types
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = lines[-1] if lines else type(err).__name__
        raise DataError(
            f"dataset {name!r} not found (download failed: {reason}); {where}; {fix}"
        ) from None
    lacking = _missing(downloads, needed)
    if lacking:
        raise DataError(
            f"dataset {name!r}: the download left no {', '.join(lacking)} in {downloads}; {fix}"
        )
    return downloads


def _fetch_cifar(into: Path) -> None:
    import torchvision.datasets as tvd

    tvd.CIFAR10(str(into), train=True, download=True)


def _fetch_celeba(into: Path) -> None:
    import torchvision.datasets as tvd

    tvd.CelebA(str(into), split="all", target_type=[], download=True)


def _list_folder(root: str) -> tuple[Path, list[Path], list[int], list[str]]:
    """The image files under ``root`` (sorted by relative path), their labels and the class
    names (first-level folders when no image sits in ``root`` itself, else none).

    Raises:
        DataError: ``root`` is not a directory, or holds no image file.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(
            f"dataset.root={base} does not exist or is not a directory; set dataset.root "
            "to a folder of images (class sub-folders optional)"
        )
    rel: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS:
                rel.append(Path(dirpath, f).relative_to(base))
    if not rel:
        raise DataError(
            f"dataset.root={base} holds no image file ({', '.join(IMAGE_EXTENSIONS)}, searched "
            "recursively); put images there or point dataset.root at the folder that has them"
        )
    rel.sort(key=lambda p: p.as_posix())
    if all(len(p.parts) > 1 for p in rel):
        classes = sorted({p.parts[0] for p in rel})
        index = {c: i for i, c in enumerate(classes)}
        labels = [index[p.parts[0]] for p in rel]
    else:
        classes, labels = [], [0] * len(rel)
    return base.resolve(), [base.resolve() / p for p in rel], labels, classes


# --------------------------------------------------------------------------- writing the splits


class _Splits:
    """The writers of a keyed directory's ``train_x`` / ``test_x`` (uint8 ``(N, C, S, S)``)
    and its labels."""

    def __init__(self, tmp: Path, sizes: dict[str, int], image_shape: tuple[int, int, int]):
        self.tmp, self.writers, self.labels = tmp, {}, {}
        try:
            for split, n in sizes.items():
                self.writers[split] = NpyWriter(tmp / f"{split}_x.npy", (n, *image_shape), np.uint8)
                self.labels[split] = []
        except BaseException:
            self.abandon()
            raise

    def append(self, split: str, rows: np.ndarray, labels: Iterable[int]) -> None:
        self.writers[split].append(rows)
        self.labels[split].extend(int(v) for v in labels)

    def close(self) -> dict[str, list[int]]:
        """Close the files and write the labels; return the four arrays' shapes."""
        shapes = {}
        for split, writer in self.writers.items():
            writer.close()
            y = np.asarray(self.labels[split], dtype=np.int64)
            labels = NpyWriter(self.tmp / f"{split}_y.npy", y.shape, np.int64)
            labels.append(y)
            labels.close()
            shapes[f"{split}_x"], shapes[f"{split}_y"] = list(writer.shape), list(y.shape)
        return shapes

    def abandon(self) -> None:
        for writer in self.writers.values():
            writer.abandon()


def _write(
    tmp: Path,
    splits: dict[str, list[tuple[Path, int]]],
    image_shape: tuple[int, int, int],
    opts: Decode,
    desc: str,
) -> dict[str, list[int]]:
    """Decode the files of each split (``{"train": [(path, label), ...], "test": ...}``) into
    ``tmp``'s arrays; return their shapes."""
    channels, _, size = image_shape
    out = _Splits(tmp, {s: len(items) for s, items in splits.items()}, image_shape)
    try:
        for split, items in splits.items():
            for path, label in track(items, f"{desc} ({split})", unit="image", every=10):
                with open_image(path) as image:
                    row = to_array(image, channels, opts.crop, size, path)
                if row.shape != image_shape:  # the first image of a folder set the shape
                    raise DataError(
                        f"the image {path} decodes to {row.shape[2]}x{row.shape[1]}, not "
                        f"{image_shape[2]}x{image_shape[1]} as the others; set dataset.image_size"
                    )
                out.append(split, row[None], (label,))
        return out.close()
    except BaseException:
        out.abandon()
        raise


# --------------------------------------------------------------------------- the three datasets


def _cifar(root: Optional[str], download: bool, opts: Decode) -> Found:
    fix = (
        f"put {_CIFAR_FOLDER}/ ({', '.join(CIFAR_FILES)}) from {CIFAR_URL} in $DGM_DATA_DIR "
        "or dataset.root, or run once online with dataset.download=true"
    )
    folder = _search("cifar10", root, download, _CIFAR_FOLDER, CIFAR_FILES, fix, _fetch_cifar)
    downloaded = folder == cache_dir() / "cifar10" / _CIFAR_FOLDER
    files = [folder.resolve() / n for n in CIFAR_FILES]
    size = 32 if opts.size is None else opts.size
    channels = 3 if opts.channels is None else opts.channels
    side = 32 if opts.crop is None else opts.crop
    plain = channels == 3 and side == 32 and size == 32  # the rows as stored

    def fill(tmp: Path) -> dict[str, Any]:
        from PIL import Image

        read = {"train": [], "test": []}  # all of CIFAR-10 is 180 MB of uint8
        for path in track(files, "decoding cifar10", unit="batch", every=20):
            data, labels = read_cifar_batch(path, downloaded)
            if not plain:
                images = (Image.fromarray(img.transpose(1, 2, 0)) for img in data)
                data = np.stack([to_array(im, channels, side, size, path) for im in images])
            read["test" if path.name == "test_batch" else "train"].append((data, labels))
        sizes = {split: sum(len(y) for _, y in parts) for split, parts in read.items()}
        out = _Splits(tmp, sizes, (channels, size, size))
        try:
            for split, parts in read.items():
                for data, labels in parts:
                    out.append(split, data, labels)
            shapes = out.close()
        except BaseException:
            out.abandon()
            raise
        return {"shapes": shapes, "n_classes": _LABEL_DIGITS, "classes": _cifar_names(folder)}

    return Found(folder, files, Decode(channels, side, size), fill)


def _cifar_names(folder: Path) -> list[str]:
    """CIFAR-10's class names (fixed; ``batches.meta`` lists the same)."""
    return [
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    ]  # fmt: skip


def _celeba(root: Optional[str], download: bool, opts: Decode) -> Found:
    fix = (
        f"put {_CELEBA_FOLDER}/{_CELEBA_IMAGES}/ (the aligned JPEGs of img_align_celeba.zip) and "
        f"{_CELEBA_FOLDER}/{_CELEBA_PARTITION} from {_CELEBA_URL} (Google Drive) in "
        "$DGM_DATA_DIR or dataset.root, or run once online with dataset.download=true"
    )
    needed = (_CELEBA_IMAGES, _CELEBA_PARTITION)
    folder = _search("celeba", root, download, _CELEBA_FOLDER, needed, fix, _fetch_celeba)
    folder = folder.resolve()
    partition = folder / _CELEBA_PARTITION
    splits: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
    try:
        lines = partition.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(
            f"cannot read {partition} ({err}); replace it with an intact copy"
        ) from None
    for number, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2") or "/" in parts[0]:
            raise DataError(
                f"{partition}, line {number}: expected '<image>.jpg <0|1|2>', got {line.strip()!r}"
            )
        if parts[1] != "1":  # 0: training, 2: test; 1 (validation) is not used
            split = "train" if parts[1] == "0" else "test"
            splits[split].append((folder / _CELEBA_IMAGES / parts[0], 0))
    for split, items in splits.items():
        if not items:
            raise DataError(f"{partition} lists no image of the {split} partition")
    channels = 3 if opts.channels is None else opts.channels
    size = CELEBA_SIZE if opts.size is None else opts.size
    resolved = Decode(channels, CELEBA_CROP if opts.crop is None else opts.crop, size)

    def fill(tmp: Path) -> dict[str, Any]:
        shapes = _write(tmp, splits, (channels, size, size), resolved, "decoding celeba")
        return {"shapes": shapes, "n_classes": 1, "classes": []}

    files = [partition, *(p for items in splits.values() for p, _ in items)]
    return Found(folder, files, resolved, fill)


def _image_folder(root: Optional[str], opts: Decode) -> Found:
    if not root:
        raise DataError("dataset=image_folder needs dataset.root=DIR, a folder of images")
    folder, files, labels, classes = _list_folder(root)
    n = len(files)
    fraction = 0.1 if opts.test_fraction is None else opts.test_fraction
    if n < 2:
        raise DataError(
            f"dataset.root={folder} holds {n} image; a training and a test split need at "
            "least 2: add images"
        )
    n_test = min(n - 1, max(1, round(fraction * n)))

    seed = 0 if opts.split_seed is None else opts.split_seed
    resolved = Decode(opts.channels, opts.crop, opts.size, fraction, seed)

    def fill(tmp: Path) -> dict[str, Any]:
        channels, side = _survey(files, opts)
        size = side if opts.size is None else opts.size
        gen = torch.Generator().manual_seed(seed)
        test = set(torch.randperm(n, generator=gen)[:n_test].tolist())
        splits: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
        for i, (path, label) in enumerate(zip(files, labels)):
            splits["test" if i in test else "train"].append((path, label))
        shapes = _write(tmp, splits, (channels, size, size), opts, "decoding image_folder")
        return {"shapes": shapes, "n_classes": max(1, len(classes)), "classes": classes}

    return Found(folder, files, resolved, fill)


def _survey(files: list[Path], opts: Decode) -> tuple[int, int]:
    """(channels, crop side) of an image folder, from the files' headers: channels 1 when
    every file is grey (``opts.channels`` None), the crop side from ``opts.crop`` or the
    one size all images share (their shorter side) when neither crop nor size is set.

    Raises:
        DataError: an unreadable file (named); images of different sizes without
            ``image_size`` or ``crop`` (two of them named).
    """
    grey, first, side = True, None, opts.crop
    for path in track(files, "reading image headers", unit="image", every=10):
        with open_image(path) as image:
            grey = grey and image.mode in grey_modes
            wh = oriented_size(image)
        if opts.size is None and opts.crop is None:
            if first is None:
                first = (path, wh)
            elif wh != first[1]:
                raise DataError(
                    f"images of different sizes in dataset.root: {first[0]} is "
                    f"{first[1][0]}x{first[1][1]}, {path} is {wh[0]}x{wh[1]}; set "
                    "dataset.image_size=N to centre-crop and resize every image to NxN"
                )
            side = min(wh)
    channels = opts.channels if opts.channels is not None else (1 if grey else 3)
    return channels, side if side is not None else 0  # side unused when opts.size is set


def find(name: str, root: Optional[str], download: bool, opts: Decode) -> Found:
    """The source of dataset ``name`` (``cifar10``, ``celeba``, ``image_folder``).

    Raises:
        DataError: one line: nothing found (what to put where), an unknown name.
    """
    if name == "cifar10":
        return _cifar(root, download, opts)
    if name == "celeba":
        return _celeba(root, download, opts)
    if name == "image_folder":
        return _image_folder(root, opts)
    raise DataError(f"unknown image dataset {name!r}; known: cifar10, celeba, image_folder")
