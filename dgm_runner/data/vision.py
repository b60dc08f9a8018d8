"""MNIST and Fashion-MNIST as in-memory tensors, found offline or downloaded.

Sources (``docs/design.md``, "Data"):

* If ``dataset.root`` is set, it is the only source: its layouts
  ``<root>/<Folder>/raw``, ``<root>/<Folder>`` and ``<root>`` are tried in that order,
  and when none holds the four IDX files the load fails (no fallback, no download).
* Otherwise, in order: the ``DGM_DATA_DIR`` environment variable (same three
  layouts), system copies (Debian's ``dataset-fashion-mnist`` in
  ``/usr/share/datasets``), and torchvision's download folder
  ``<cache>/<Folder>/raw`` in the user cache ``$DGM_CACHE_DIR`` (default
  ``~/.cache/dgm_runner``); when none holds the files and ``dataset.download`` is
  true, torchvision downloads into that folder, which is then the source.

A source directory holds the four IDX files (gzipped or not; format in
:mod:`dgm_runner.data.idx`). They are read through the provenance-keyed cache of
:mod:`dgm_runner.data.cache`, never in place. Within a process the tensors are
memoized on the source files' stamps, so files changed between two loads are read
again.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional

import torch

from dgm_runner.config import NonNegativeInt, PositiveInt, Range, UnitInterval
from dgm_runner.data.amat import load_amat_splits
from dgm_runner.data.base import DataError, DataSplits
from dgm_runner.data.cache import _cached, _discard, _fill, cache_dir, source_stamps
from dgm_runner.data.idx import IDX_FILES, _CacheDamaged, _read_idx, check_idx_file
from dgm_runner.data.protocols import (
    Binarize,
    Dequantize,
    DynamicBinarization,
    FixedSource,
    UniformDequantization,
    check_protocol,
    fixed_binarization,
    split_seed,
)

__all__ = [
    "IDX_FILES",
    "SPECS",
    "cache_dir",
    "check_idx_file",
    "load_vision_dataset",
    "source_stamps",
    "torchvision_root",
]


@dataclass(frozen=True)
class _Spec:
    tv_class: str  # torchvision.datasets class name
    folder: str  # torchvision folder name under the root
    system_dirs: tuple[str, ...] = ()
    install_hint: str = ""
    image_hw: tuple[int, int] = (28, 28)  # (H, W) of the files' images, checked at load


SPECS = {
    "mnist": _Spec("MNIST", "MNIST"),
    "fashion_mnist": _Spec(
        "FashionMNIST",
        "FashionMNIST",
        ("/usr/share/datasets/fashion-mnist",),
        "apt-get install dataset-fashion-mnist, or ",
    ),
}


# --------------------------------------------------------------------------- finding the source


def _find_idx(directory: Path) -> dict[str, Path] | None:
    """Map each IDX file name to its path (plain preferred, else .gz) in ``directory``,
    or None when any of the four is missing."""
    found = {}
    for name in IDX_FILES:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                found[name] = candidate
                break
        else:
            return None
    return found


def _lacking(directory: Path) -> list[str]:
    """The IDX files (neither plain nor .gz) missing from ``directory``."""
    return [
        n for n in IDX_FILES if not ((directory / n).is_file() or (directory / f"{n}.gz").is_file())
    ]


def _layouts(spec: _Spec, base: Path) -> list[Path]:
    return [base / spec.folder / "raw", base / spec.folder, base]


def _download_dir(spec: _Spec) -> Path:
    """Where torchvision downloads (and extracts) the files: ``<cache>/<Folder>/raw``."""
    return cache_dir() / spec.folder / "raw"


def _from_root(name: str, spec: _Spec, root: str) -> dict[str, Path]:
    """The IDX files in the explicit ``dataset.root`` (its only source)."""
    base = Path(root).expanduser()
    layouts = _layouts(spec, base)
    for directory in layouts:
        files = _find_idx(directory)
        if files is not None:
            return files
    unset = "or leave dataset.root unset (null) to use $DGM_DATA_DIR or the download"
    if not base.is_dir():
        raise DataError(
            f"dataset.root={base} does not exist or is not a directory; "
            "set dataset.root to the folder "
            f"holding the {name} IDX files ({', '.join(IDX_FILES)}, plain or .gz), {unset}"
        )
    present = [d for d in layouts if d.is_dir()]
    best = max(present, key=lambda d: len(IDX_FILES) - len(_lacking(d)))  # ties: the most specific
    missing = ", ".join(f"{n}[.gz]" for n in _lacking(best))
    raise DataError(
        f"dataset.root={base} does not hold the {name} dataset: {best} lacks {missing} "
        f"(looked in {', '.join(map(str, layouts))}); "
        f"put the four IDX files in {layouts[0]} or {base}, {unset}"
    )


def _locate(
    name: str, spec: _Spec, root: Optional[str], download: bool
) -> tuple[dict[str, Path], bool]:
    """The four source files and whether they are in torchvision's download folder.

    Raises:
        DataError: nothing found (and no download allowed, or the download failed).
    """
    if root:
        return _from_root(name, spec, root), False
    downloads = _download_dir(spec)
    dirs: list[Path] = []
    if os.environ.get("DGM_DATA_DIR"):
        dirs += _layouts(spec, Path(os.environ["DGM_DATA_DIR"]).expanduser())
    dirs += [Path(d) for d in spec.system_dirs]
    dirs.append(downloads)
    looked = []
    for directory in dirs:
        files = _find_idx(directory)
        if files is not None:
            return files, directory == downloads
        lacking = _lacking(directory) if directory.is_dir() else IDX_FILES
        partial = f" (lacks {', '.join(lacking)})" if len(lacking) < len(IDX_FILES) else ""
        looked.append(f"{directory}{partial}")
    if not download:
        raise DataError(_missing_message(name, spec, looked, "dataset.download=false"))
    import torchvision.datasets as tvd

    try:
        getattr(tvd, spec.tv_class)(str(cache_dir()), train=True, download=True)
    except Exception as err:  # network errors come in many types
        # torchvision's first line ends in a colon; the cause is on the last line
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = (
            f"{lines[0].rstrip(':')}: {lines[-1]}" if len(lines) > 1
            else lines[0] if lines else type(err).__name__
        )  # fmt: skip
        raise DataError(
            _missing_message(name, spec, looked, f"download failed: {reason}")
        ) from None
    files = _find_idx(downloads)
    if files is None:
        raise DataError(
            _missing_message(name, spec, looked, f"the download left no IDX files in {downloads}")
        )
    return files, True


def _missing_message(name: str, spec: _Spec, looked: list[str], reason: str) -> str:
    return (
        f"dataset {name!r} not found ({reason}); looked in: {', '.join(looked)}. "
        f"Fix: {spec.install_hint}set DGM_DATA_DIR or dataset.root to a folder holding "
        f"{spec.folder}/raw/{IDX_FILES[0]}.gz and the other IDX files, or run once online."
    )


def torchvision_root(
    name: Literal["mnist", "fashion_mnist"] = "mnist",
    root: Optional[str] = None,
    download: bool = True,
) -> Path:
    """Find the dataset's source (as :func:`load_vision_dataset`), make or reuse its
    checked cache and return a folder that ``torchvision.datasets.MNIST`` (or
    ``FashionMNIST``) ``(folder, train=..., download=False)`` reads.

    Args:
        name, root, download: as :func:`load_vision_dataset`.

    Returns:
        ``<cache>/<Folder>/by-source/<key>``, holding ``<Folder>/raw/`` with the four
        uncompressed IDX files (do not write there).

    Raises:
        DataError: as :func:`load_vision_dataset` (not found, corrupt, unwritable cache).
    """
    if name not in SPECS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(SPECS)}")
    spec = SPECS[name]
    files, downloaded = _locate(name, spec, root, download)
    return _cached(spec, source_stamps(files), downloaded)[0]


def _freeze(stamps: dict[str, dict[str, Any]]) -> tuple:
    return tuple((n, s["path"], s["size"], s["mtime_ns"]) for n, s in sorted(stamps.items()))


@functools.lru_cache(maxsize=4)
def _load_stamped(name: str, frozen: tuple, downloaded: bool) -> tuple[torch.Tensor, ...]:
    """(train_x, train_y, test_x, test_y) of the sources ``frozen`` (see :func:`_freeze`),
    memoized on those stamps, so changed files are read again."""
    spec = SPECS[name]
    stamps = {n: {"path": p, "size": size, "mtime_ns": mtime} for n, p, size, mtime in frozen}
    keyed, prov = _cached(spec, stamps, downloaded)
    for attempt in range(2):
        raw = keyed / spec.folder / "raw"
        try:
            tensors = [_read_idx(raw / n, prov["files"][n]) for n in IDX_FILES]
            break
        except _CacheDamaged as err:
            if attempt == 1:
                raise DataError(
                    f"{name}: the cache {keyed} is damaged ({err}); delete it and retry"
                ) from None
            _discard(keyed)
            keyed, prov = _fill(spec, stamps, downloaded)
    train_x, train_y, test_x, test_y = tensors
    return train_x, train_y.long(), test_x, test_y.long()


def _load_uint8(name: str, root: Optional[str], download: bool) -> tuple[torch.Tensor, ...]:
    """Load (train_x, train_y, test_x, test_y) as uint8/int64 CPU tensors (images
    ``(N, H, W)``, labels ``(N,)``), memoized on the stamps of the source files found
    (``_load_uint8.cache_clear()`` empties the memo)."""
    spec = SPECS[name]
    files, downloaded = _locate(name, spec, root, download)
    return _load_stamped(name, _freeze(source_stamps(files)), downloaded)


def _clear_memos() -> None:
    """Empty the in-process memos of the loaded files and of their fixed binarizations."""
    _load_stamped.cache_clear()
    _fixed_bits_stamped.cache_clear()


_load_uint8.cache_clear = _clear_memos  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- the public loader


def _too_many(option: str, asked: int, have: int, what: str) -> DataError:
    return DataError(
        f"dataset.{option}={asked} is larger than the {have} {what}; use at most {have} or null"
    )


def load_vision_dataset(
    name: Literal["mnist", "fashion_mnist"] = "mnist",
    root: Optional[str] = None,
    download: bool = True,
    binarize: Binarize = "none",
    threshold: UnitInterval = 0.5,
    threshold_uint8: Optional[Annotated[int, Range(ge=0, le=255)]] = None,
    subset: Optional[PositiveInt] = None,
    test_subset: Optional[PositiveInt] = None,
    per_class: Optional[PositiveInt] = None,
    image_size: Optional[PositiveInt] = None,
    device: str | torch.device = "cpu",
    binarize_seed: NonNegativeInt = 0,
    fixed_source: FixedSource = "seeded",
    dequantize: Dequantize = "none",
) -> DataSplits:
    """Load MNIST or Fashion-MNIST into memory as float tensors on ``device``.

    The data protocols (``binarize``, ``dequantize``) are described, with their sources, in
    :mod:`dgm_runner.data.protocols` and ``docs/evaluation.md``.

    Args:
        name: which dataset.
        root: the only directory to take the files from, when set (its layouts
            ``<root>/<Folder>/raw``, ``<root>/<Folder>``, ``<root>``); None: look in
            ``$DGM_DATA_DIR``, system copies and the cache (see module docstring).
        download: allow torchvision to download into the cache when nothing is found
            (never when ``root`` is set).
        binarize: ``none`` (grey levels); ``threshold``: each pixel ``1.0 if intensity >
            threshold else 0.0``, fixed per image; ``dynamic``: training images drawn
            ``Bernoulli(intensity)`` at every use (``train_transform``; ``train_x`` stays
            grey), test images binarized once with ``binarize_seed``; ``fixed``: both
            splits binarized once with ``binarize_seed`` (or Larochelle & Murray's files,
            ``fixed_source``). Booleans (the spelling before issue 28) are refused with
            their new name.
        threshold: binarization threshold on [0, 1] intensities (``threshold`` only).
        threshold_uint8: when set, binarize with ``pixel > threshold_uint8`` compared
            exactly on the 0..255 scale of the files (after ``image_size``'s area
            averaging, on the mean of the integer pixels: exact in float32), instead of
            ``threshold``: seed 002's "greater than 128" (the former
            ``threshold=0.50196078``, just below 128/255, made pixels equal to 128 one).
        subset: keep only the first ``subset`` training images (after ``per_class``).
        test_subset: keep only the first ``test_subset`` test images.
        per_class: keep only the first ``per_class`` training images of each class, in
            their original order (seed 002 Problem 2: 1000 per digit).
        image_size: downsample to ``image_size x image_size`` by area averaging before
            binarizing (seed 002: 14x14).
        device: where the tensors live.
        binarize_seed: seed of the fixed binarizations (``fixed``, and ``dynamic``'s test
            split): the test split's generator is seeded ``binarize_seed``, the training
            split's ``binarize_seed + 1``; each draws for the whole split before
            ``subset`` / ``per_class`` / ``test_subset`` select images, so an image has the
            same bits in every subset.
        fixed_source: ``seeded`` (drawn here) or ``larochelle``: the
            ``binarized_mnist_{train,valid,test}.amat`` files of Larochelle & Murray
            (2011) from ``root`` (else ``$DGM_DATA_DIR``), train + valid as the 60 000
            training images (:mod:`dgm_runner.data.amat`; no labels, no grey levels).
        dequantize: ``none`` or ``uniform``: training images ``(k + u) / 256``, ``u ~
            U[0, 1)`` per pixel at every use (``train_transform``; ``binarize=none`` only).

    Returns:
        :class:`DataSplits` with ``(N, 1, H, W)`` float32 images in [0, 1] (``H = W = 28``
        for the real datasets, ``image_size`` when set), int64 ``(N,)`` labels, 10 classes
        (1 class, all labels 0, for Larochelle's files); ``binarized`` for ``threshold``,
        ``dynamic`` and ``fixed``; ``grey_test_x``: the grey test images of a binarized
        split (None for Larochelle's files, which have none).

    Raises:
        ValueError: (one line, before any file is read) an invalid combination of options
            (:func:`dgm_runner.data.protocols.check_protocol`), e.g. ``dequantize=uniform``
            with a binarization, or ``binarize=true`` (the old spelling, named).
        DataError: one line saying what to do, when: the dataset is nowhere to be found
            (the message lists every place looked in); ``root`` is set but does not
            exist or lacks a file (named); a file is corrupt (named); the cache cannot
            be written; a file's images are not the dataset's 28x28, or a label file
            holds another count than its image file (the files named, checked before
            ``subset`` / ``per_class`` slice them); ``subset``, ``test_subset`` or
            ``per_class`` asks for more images than the split (or a class) has; the labels
            do not fit the images; Larochelle's ``.amat`` files are requested but missing
            (each named, with the folders looked in) or malformed.
    """
    check_protocol(binarize, dequantize, fixed_source, threshold_uint8, name, image_size, per_class)
    if name not in SPECS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(SPECS)}")
    if binarize == "fixed" and fixed_source == "larochelle":
        return _larochelle(root, subset, test_subset, device)
    train_x, train_y, test_x, test_y = _load_uint8(name, root, download)
    train_rows = test_rows = None  # the rows kept (None: all), for the whole-split draws
    if per_class is not None:
        counts = torch.bincount(train_y, minlength=10)[:10]
        fewest = int(counts.argmin())
        if per_class > int(counts[fewest]):
            raise _too_many(
                "per_class",
                per_class,
                int(counts[fewest]),
                f"training images of class {fewest} in {name}",
            )
        keep = torch.cat([torch.nonzero(train_y == c).flatten()[:per_class] for c in range(10)])
        keep = keep.sort().values
        train_x, train_y, train_rows = train_x[keep], train_y[keep], keep
    if subset is not None:
        if subset > train_x.shape[0]:
            left = f" left by dataset.per_class={per_class}" if per_class is not None else ""
            raise _too_many("subset", subset, train_x.shape[0], f"training images of {name}{left}")
        train_x, train_y = train_x[:subset], train_y[:subset]
        train_rows = torch.arange(subset) if train_rows is None else train_rows[:subset]
    if test_subset is not None:
        if test_subset > test_x.shape[0]:
            raise _too_many("test_subset", test_subset, test_x.shape[0], f"test images of {name}")
        test_x, test_y = test_x[:test_subset], test_y[:test_subset]
        test_rows = torch.arange(test_subset)

    def resized(x: torch.Tensor) -> torch.Tensor:
        if image_size is not None and image_size != x.shape[-1]:
            x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="area")
        return x

    def to_grey(x: torch.Tensor) -> torch.Tensor:
        return resized(x.to(device).unsqueeze(1).float().div_(255.0))

    def fixed(split: Literal["train", "test"], rows: Optional[torch.Tensor]) -> torch.Tensor:
        bits = _fixed_bits(name, root, download, split, binarize_seed, image_size)
        return (bits if rows is None else bits[rows]).to(device).float()

    def split_x(uint8: torch.Tensor, grey: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The split's images as trained on; ``grey``: its :func:`to_grey`, if made already
        (the grey images are not made for a ``threshold_uint8`` split that needs none)."""
        if binarize == "threshold" and threshold_uint8 is not None:
            levels = resized(uint8.to(device).unsqueeze(1).float())  # 0..255, means of integers
            return (levels > threshold_uint8).float()
        grey = to_grey(uint8) if grey is None else grey
        return (grey > threshold).float() if binarize == "threshold" else grey

    grey_test = to_grey(test_x)
    binary = binarize != "none"
    transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    if binarize == "dynamic":
        transform = DynamicBinarization()
    elif dequantize == "uniform":
        transform = UniformDequantization()
    return DataSplits(
        name=name,
        train_x=fixed("train", train_rows) if binarize == "fixed" else split_x(train_x),
        train_y=train_y.to(device, copy=True),  # never the memoized tensor itself
        test_x=fixed("test", test_rows) if binarize in ("fixed", "dynamic")
        else split_x(test_x, grey_test),
        test_y=test_y.to(device, copy=True),
        n_classes=10,
        binarized=binary,
        grey_test_x=grey_test if binary else None,
        train_transform=transform,
    )  # fmt: skip


def _check_options(
    model: Any,
    binarize: object = "none",
    dequantize: object = "none",
    fixed_source: object = "seeded",
    threshold_uint8: Optional[int] = None,
    name: str = "mnist",
    image_size: Optional[int] = None,
    per_class: Optional[int] = None,
    **_: Any,
) -> None:
    """The config validator's check of a ``dataset`` node (``load_vision_dataset.check``):
    :func:`dgm_runner.data.protocols.check_protocol` of its options, before any file is read.

    Raises:
        ValueError: one line (an invalid combination, named)."""
    check_protocol(binarize, dequantize, fixed_source, threshold_uint8, name, image_size, per_class)


load_vision_dataset.check = _check_options  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=2)
def _fixed_bits_stamped(
    name: str,
    frozen: tuple,
    downloaded: bool,
    split: Literal["train", "test"],
    seed: int,
    image_size: Optional[int],
) -> torch.Tensor:
    """The whole ``split`` binarized once (:func:`fixed_binarization`, generator seeded
    :func:`split_seed`) as uint8 ``(N, 1, H, W)`` 0/1 on the CPU, computed on the CPU (the same
    bits on every device); memoized on the sources' stamps, the split, the seed and the size."""
    train_x, _, test_x, _ = _load_stamped(name, frozen, downloaded)
    grey = (train_x if split == "train" else test_x).unsqueeze(1).float().div_(255.0)
    if image_size is not None and image_size != grey.shape[-1]:
        grey = torch.nn.functional.interpolate(grey, size=(image_size, image_size), mode="area")
    return fixed_binarization(grey, split_seed(seed, split)).to(torch.uint8)  # 1/4 the memory


def _fixed_bits(
    name: str,
    root: Optional[str],
    download: bool,
    split: Literal["train", "test"],
    seed: int,
    image_size: Optional[int],
) -> torch.Tensor:
    """:func:`_fixed_bits_stamped` of the dataset's current source files."""
    files, downloaded = _locate(name, SPECS[name], root, download)
    frozen = _freeze(source_stamps(files))
    return _fixed_bits_stamped(name, frozen, downloaded, split, seed, image_size)


def _larochelle(
    root: Optional[str], subset: Optional[int], test_subset: Optional[int], device: Any
) -> DataSplits:
    """``binarize=fixed fixed_source=larochelle``: Larochelle & Murray's files
    (:func:`dgm_runner.data.amat.load_amat_splits`), first ``subset`` / ``test_subset``."""
    train_x, test_x = load_amat_splits(root)
    for option, asked, x, what in (
        ("subset", subset, train_x, "training images of Larochelle's files (train + valid)"),
        ("test_subset", test_subset, test_x, "test images of Larochelle's files"),
    ):
        if asked is not None and asked > x.shape[0]:
            raise _too_many(option, asked, x.shape[0], what)
    train_x, test_x = train_x[:subset], test_x[:test_subset]
    return DataSplits(
        name="mnist",  # MNIST's images: its feature classifier scores the samples (FID)
        train_x=train_x.to(device),
        train_y=torch.zeros(train_x.shape[0], dtype=torch.long, device=device),
        test_x=test_x.to(device),
        test_y=torch.zeros(test_x.shape[0], dtype=torch.long, device=device),
        n_classes=1,
        binarized=True,
    )
