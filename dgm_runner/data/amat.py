"""Larochelle & Murray's binarized MNIST: the ``binarized_mnist_{train,valid,test}.amat`` files.

Larochelle & Murray (2011, "The Neural Autoregressive Distribution Estimator")
published one fixed stochastic binarization of MNIST (Salakhutdinov & Murray 2008): 50 000
training, 10 000 validation and 10 000 test images, one image a line of 784 space-separated
``0`` / ``1`` values (row-major 28x28). Most published binarized-MNIST NLLs (NADE, MADE,
PixelCNN, IWAE's comparisons) train on the union of train and valid, 60 000 images, and
test on the 10 000: so does ``binarize=fixed fixed_source=larochelle`` (train then valid,
in file order). The files carry no labels (``n_classes = 1``, all labels 0) and no grey
levels (``grey_test_x`` is None).

They cannot be downloaded by the runner: put them in ``dataset.root`` (or ``$DGM_DATA_DIR``
when ``dataset.root`` is unset), directly or in its ``binarized_mnist/`` folder.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from dgm_runner.data.base import DataError

__all__ = ["AMAT_FILES", "AMAT_LINES", "find_amat", "load_amat_splits", "read_amat"]

log = logging.getLogger("dgm_runner")

#: split -> file name (Larochelle & Murray 2011).
AMAT_FILES: dict[str, str] = {
    "train": "binarized_mnist_train.amat",
    "valid": "binarized_mnist_valid.amat",
    "test": "binarized_mnist_test.amat",
}
#: Lines of the published files (a warning names any other count).
AMAT_LINES: dict[str, int] = {"train": 50_000, "valid": 10_000, "test": 10_000}
_PIXELS = 784
_FOLDER = "binarized_mnist"


def read_amat(path: Path, pixels: int = _PIXELS) -> torch.Tensor:
    """Read one ``.amat`` file of binary images.

    Args:
        path: the file: one image a line, ``pixels`` values ``0`` or ``1`` separated by
            whitespace (blank lines ignored).
        pixels: values per line (784 for 28x28).

    Returns:
        ``(N, pixels)`` uint8 tensor of 0/1, in file order.

    Raises:
        DataError: the file cannot be read, is empty, or a line has another number of
            values or a value other than 0 and 1 (the file and line number named).
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path} ({err.strerror or err}); check the file") from None
    lines = [line for line in raw.splitlines() if line.strip()]
    if not lines:
        raise DataError(f"{path} holds no images: replace it with an intact copy")
    width = 2 * pixels - 1  # the published layout: "0 1 0 ... 1", single spaces
    if all(len(line) == width for line in lines):  # fast path: one array operation
        chars = np.frombuffer(b"".join(lines), dtype=np.uint8).reshape(len(lines), width)
        values, gaps = chars[:, 0::2], chars[:, 1::2]
        if (gaps == ord(" ")).all() and np.isin(values, (ord("0"), ord("1"))).all():
            return torch.from_numpy(values - ord("0"))
    out = np.empty((len(lines), pixels), dtype=np.uint8)
    for i, line in enumerate(lines):  # any other spacing; names the first bad line
        tokens = line.split()
        if len(tokens) != pixels:
            raise DataError(
                f"{path}, line {i + 1}: {len(tokens)} values, expected {pixels}: "
                "replace it with an intact copy of Larochelle & Murray's file"
            )
        bad = [t for t in tokens if t not in (b"0", b"1")]
        if bad:
            raise DataError(
                f"{path}, line {i + 1}: value {bad[0].decode(errors='replace')!r} is not 0 or "
                "1: replace it with an intact copy of Larochelle & Murray's file"
            )
        out[i] = [t == b"1" for t in tokens]
    return torch.from_numpy(out)


def _places(root: Optional[str]) -> list[Path]:
    """The folders searched, in order: ``<root>/binarized_mnist`` and ``<root>`` for
    ``dataset.root``, else the same under ``$DGM_DATA_DIR``."""
    base = root or os.environ.get("DGM_DATA_DIR")
    if not base:
        return []
    base_path = Path(base).expanduser()
    return [base_path / _FOLDER, base_path]


def find_amat(root: Optional[str]) -> dict[str, Path]:
    """The three ``.amat`` files (:data:`AMAT_FILES`) of the first folder holding all three.

    Raises:
        DataError: no folder holds all three (the message names the files, every folder
            looked in and what each lacks, and that they cannot be downloaded here).
    """
    places = _places(root)
    looked = []
    for folder in places:
        missing = [f for f in AMAT_FILES.values() if not (folder / f).is_file()]
        if not missing:
            return {split: folder / f for split, f in AMAT_FILES.items()}
        looked.append(f"{folder} (lacks {', '.join(missing)})")
    where = "; ".join(looked) if looked else "nowhere: dataset.root and $DGM_DATA_DIR are unset"
    raise DataError(
        f"fixed_source=larochelle needs {', '.join(AMAT_FILES.values())} (Larochelle & Murray "
        f"2011; not downloaded by the runner); looked in {where}. Put them in dataset.root "
        f"or its {_FOLDER}/ folder, or use dataset.fixed_source=seeded"
    )


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.resolve().stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _read_stamped(stamps: tuple[tuple[str, int, int], ...]) -> tuple[torch.Tensor, ...]:
    """``read_amat`` of each stamped file, memoized on (path, size, mtime) so a file
    changed between two loads is read again."""
    return tuple(read_amat(Path(p)) for p, _, _ in stamps)


def load_amat_splits(root: Optional[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Larochelle & Murray's training (train + valid, 60 000) and test (10 000) images.

    Args:
        root: ``dataset.root`` (None: ``$DGM_DATA_DIR``), see :func:`find_amat`.

    Returns:
        ``(train, test)``: ``(N, 1, 28, 28)`` float32 in {0, 1} on the CPU, file order.

    Raises:
        DataError: files missing (:func:`find_amat`) or malformed (:func:`read_amat`).
    """
    files = find_amat(root)
    try:
        stamps = tuple(_stamp(files[s]) for s in AMAT_FILES)
    except OSError as err:
        raise DataError(f"cannot read the .amat files ({err.strerror or err})") from None
    arrays = dict(zip(AMAT_FILES, _read_stamped(stamps)))
    for split, x in arrays.items():
        if x.shape[0] != AMAT_LINES[split]:
            log.warning(
                "%s holds %d images, not the published %d", files[split], x.shape[0],
                AMAT_LINES[split],
            )  # fmt: skip
    train = torch.cat([arrays["train"], arrays["valid"]])
    side = int(round(_PIXELS**0.5))
    return (
        train.reshape(-1, 1, side, side).float(),
        arrays["test"].reshape(-1, 1, side, side).float(),
    )
