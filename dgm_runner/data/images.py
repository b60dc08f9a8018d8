"""Colour and any-size image datasets (CIFAR-10, CelebA, a folder of images) as
:class:`~dgm_runner.data.base.DataSplits` of ``(N, C, H, W)`` images in [0, 1].

Where the files come from and how each dataset is split: :mod:`dgm_runner.data.image_sources`;
how one image is decoded (mode, crop, resize): :mod:`dgm_runner.data.image_decode`; the
decoded uint8 arrays are written once into the provenance-keyed cache of
:mod:`dgm_runner.data.image_cache` and read from there.

Storage (``dataset.storage``): ``memory`` reads the training split into a float32 tensor on
the device (``levels / 255``); ``memmap`` keeps it as the cache's uint8 file, memory-mapped
on the CPU (``DataSplits.train_x`` is then uint8 levels and
:meth:`~dgm_runner.data.base.DataSplits.train_rows` converts each batch, so memory holds
only the pages in use); ``auto`` picks ``memmap`` when the float32 training split would
exceed ``memory_budget_mb``. The test split is always float32 in memory on the device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import numpy as np
import torch

from dgm_runner.config import NonNegativeInt, PositiveInt, Range
from dgm_runner.data.augment import RandomHorizontalFlip, chain
from dgm_runner.data.base import DataError, DataSplits
from dgm_runner.data.image_cache import (
    decoded_dir,
    mapped_rows,
    read_array,
    read_float,
    stamp_digest,
)
from dgm_runner.data.image_sources import Decode, find
from dgm_runner.data.protocols import DEQUANTIZE, Dequantize, UniformDequantization

__all__ = ["IMAGE_DATASETS", "load_image_dataset", "splits_from_cache"]

ImageDataset = Literal["cifar10", "celeba", "image_folder"]
IMAGE_DATASETS: tuple[str, ...] = ("cifar10", "celeba", "image_folder")
Storage = Literal["auto", "memory", "memmap"]
STORAGE: tuple[str, ...] = ("auto", "memory", "memmap")
#: A held-out fraction strictly between 0 and 1.
Fraction = Annotated[float, Range(gt=0, lt=1)]
_MB = 1 << 20


def _too_many(option: str, asked: int, have: int, what: str) -> DataError:
    return DataError(
        f"dataset.{option}={asked} is larger than the {have} {what}; use at most {have} or null"
    )


def load_image_dataset(
    name: ImageDataset = "cifar10",
    root: Optional[str] = None,
    download: bool = True,
    channels: Optional[Literal[1, 3]] = None,
    image_size: Optional[PositiveInt] = None,
    crop: Optional[PositiveInt] = None,
    test_fraction: Optional[Fraction] = None,
    split_seed: Optional[NonNegativeInt] = None,
    subset: Optional[PositiveInt] = None,
    test_subset: Optional[PositiveInt] = None,
    dequantize: Dequantize = "none",
    storage: Storage = "auto",
    memory_budget_mb: PositiveInt = 2048,
    device: str | torch.device = "cpu",
    hflip: bool = False,
) -> DataSplits:
    """Load CIFAR-10, CelebA or a folder of images as 8-bit images in [0, 1].

    Sources, layouts and splits: :mod:`dgm_runner.data.image_sources`. Decoding (the same
    for the three: 16-bit grey scaled, transparency over white, ITU-R 601-2 luma for
    ``channels=1``, centred square crop, antialiased bilinear resize):
    :mod:`dgm_runner.data.image_decode`.

    Args:
        name: ``cifar10`` (3x32x32, 10 classes, the official 50 000 / 10 000 split),
            ``celeba`` (centre 140x140 crop resized to 64x64, Tolstikhin et al. 2018; train =
            partition 0, test = partition 2; one class) or ``image_folder`` (``root``
            required; first-level folders as classes).
        root: the only folder to take the files from, when set; None: ``$DGM_DATA_DIR``,
            then the cache (download).
        download: allow torchvision to download CIFAR-10 / CelebA into the cache when
            nothing is found (never when ``root`` is set).
        channels: 1 (grey, ITU-R 601-2 luma) or 3 (RGB); None: 3 for cifar10 and celeba,
            for an image folder 1 when every file is grey, else 3.
        image_size: output side; None: 32 (cifar10), 64 (celeba), or the side every image
            of the folder already has (mixed sizes are refused).
        crop: side of the centred square crop before resizing; None: 140 (celeba), the
            shorter side (cifar10: none; an image folder: the largest centred square).
        test_fraction: image folders only: the held-out fraction in (0, 1), default 0.1.
        split_seed: image folders only: the split's generator seed, default 0.
        subset: keep only the first ``subset`` training images.
        test_subset: keep only the first ``test_subset`` test images.
        dequantize: ``none`` or ``uniform``: training images ``(k + u) / 256`` per pixel
            at every use (:class:`~dgm_runner.data.protocols.UniformDequantization`).
        storage: ``memory``, ``memmap`` or ``auto`` (module docstring).
        memory_budget_mb: ``auto``'s threshold on the float32 training split, in MiB.
        device: where the test split, the labels and an in-memory training split live
            (a memory-mapped training split stays on the CPU; batches move to ``device``).
        hflip: mirror each training image left-right with probability 1/2 at every use
            (:class:`~dgm_runner.data.augment.RandomHorizontalFlip`, before the
            dequantization; the CIFAR-10 diffusion literature's augmentation). Test images
            are never flipped.

    Returns:
        :class:`DataSplits` named ``name``: ``train_x`` float32 ``(N, C, S, S)`` in [0, 1],
        or uint8 levels when memory-mapped; ``test_x`` float32; int64 labels;
        ``n_classes``; not binarized.

    Raises:
        ValueError: (one line, before any file is read) options that do not fit the
            dataset (:func:`_check_options`).
        DataError: one line saying what to do: the files are nowhere to be found (what to
            put where); ``root`` lacks a file or holds no image; a file is unreadable,
            truncated, or a pickle that names anything but numpy arrays (the file named);
            images of different sizes without ``image_size`` (two named); a split left
            empty; ``subset`` / ``test_subset`` larger than the split; the cache cannot be
            written.
    """
    _check_options({}, name, root, channels, test_fraction, split_seed, dequantize, storage)
    opts = Decode(channels, crop, image_size, test_fraction, split_seed)
    found = find(name, root, download, opts)
    digest = stamp_digest(found.files)
    keyed, meta = decoded_dir(name, str(found.folder), digest, found.options.as_json(), found.fill)
    return splits_from_cache(
        name, keyed, meta, subset, test_subset, dequantize, storage, memory_budget_mb, device, hflip
    )


def splits_from_cache(
    name: str,
    keyed: Path,
    meta: dict[str, Any],
    subset: Optional[int] = None,
    test_subset: Optional[int] = None,
    dequantize: str = "none",
    storage: str = "auto",
    memory_budget_mb: int = 2048,
    device: str | torch.device = "cpu",
    hflip: bool = False,
) -> DataSplits:
    """The :class:`DataSplits` of a decoded cache directory (:func:`load_image_dataset`'s
    last step; arguments as there, ``keyed`` / ``meta`` from
    :func:`dgm_runner.data.image_cache.decoded_dir`).

    Raises:
        DataError: ``subset`` / ``test_subset`` larger than the split (one line).
    """
    shapes = meta["shapes"]
    for option, asked, split, what in (
        ("subset", subset, "train", "training"),
        ("test_subset", test_subset, "test", "test"),
    ):
        if asked is not None and asked > shapes[f"{split}_x"][0]:
            raise _too_many(option, asked, shapes[f"{split}_x"][0], f"{what} images of {name}")
    n_train = shapes["train_x"][0] if subset is None else subset
    float_mb = 4 * n_train * int(np.prod(shapes["train_x"][1:])) / _MB
    mapped = storage == "memmap" or (storage == "auto" and float_mb > memory_budget_mb)
    if mapped:
        train_x = mapped_rows(keyed / "train_x.npy", subset)
    else:
        train_x = read_float(keyed / "train_x.npy", device, subset)
    transform = chain(
        RandomHorizontalFlip() if hflip else None,
        UniformDequantization() if dequantize == "uniform" else None,
    )
    return DataSplits(
        name=name,
        train_x=train_x,
        train_y=torch.from_numpy(read_array(keyed / "train_y.npy", subset)).to(device),
        test_x=read_float(keyed / "test_x.npy", device, test_subset),
        test_y=torch.from_numpy(read_array(keyed / "test_y.npy", test_subset)).to(device),
        n_classes=int(meta["n_classes"]),
        binarized=False,
        train_transform=transform,
    )


def _check_options(
    model: Any,
    name: object = "cifar10",
    root: object = None,
    channels: object = None,
    test_fraction: object = None,
    split_seed: object = None,
    dequantize: object = "none",
    storage: object = "auto",
    **_: Any,
) -> None:
    """The config validator's check of a ``dataset`` node (``load_image_dataset.check``),
    before any file is read.

    Raises:
        ValueError: one line: an unknown dataset, ``channels`` other than 1 or 3,
            ``dequantize`` or ``storage`` not one of its values, ``image_folder`` with
            ``root`` null, ``test_fraction`` / ``split_seed`` with a dataset that has an
            official split.
    """
    if name not in IMAGE_DATASETS:
        raise ValueError(f"name={name!r} is invalid: allowed values are {IMAGE_DATASETS}")
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise ValueError(f"channels={channels!r} is invalid: allowed values are 1, 3 or null")
    if dequantize not in DEQUANTIZE:
        raise ValueError(f"dequantize={dequantize!r} is invalid: allowed values are {DEQUANTIZE}")
    if storage not in STORAGE:
        raise ValueError(f"storage={storage!r} is invalid: allowed values are {STORAGE}")
    if name == "image_folder" and root is None:
        raise ValueError("name=image_folder needs root: set dataset.root=DIR to a folder of images")
    if name != "image_folder":
        bad = [
            f"{key}={value}"
            for key, value in (("test_fraction", test_fraction), ("split_seed", split_seed))
            if value is not None
        ]
        if bad:
            raise ValueError(
                f"{', '.join(bad)} applies to name=image_folder only; {name} has its official "
                "test split: remove it"
            )


load_image_dataset.check = _check_options  # type: ignore[attr-defined]
