"""Decoding image files into 8-bit ``(C, H, W)`` arrays: one protocol for every colour dataset.

Every image (a CIFAR-10 row, a CelebA JPEG, a file of an image folder) goes through
:func:`to_array` with the same steps, in this order:

1. Orientation: a JPEG's EXIF orientation tag is applied (:func:`PIL.ImageOps.exif_transpose`).
2. Mode: 16-bit grey (PIL ``I;16*`` and ``I``, e.g. a 16-bit PNG) is scaled to 8 bits,
   ``round(v * 255 / 65535)`` (65535 -> 255, 32768 -> 128; PIL's own conversion would
   clip every value above 255 to white); an image with transparency (``RGBA``, ``LA``,
   ``PA``, a palette or grey image with a transparent colour) is composited over a white
   background; then PIL converts to ``"L"`` (``channels=1``: ITU-R 601-2 luma,
   ``L = R 299/1000 + G 587/1000 + B 114/1000``) or ``"RGB"`` (``channels=3``; grey is
   repeated, ``P`` looks up its palette, ``CMYK`` by PIL's conversion).
3. Crop: the centred square of side ``crop`` (default the shorter side), its corner at
   ``((W - crop) // 2, (H - crop) // 2)``.
4. Resize to ``size x size`` with PIL's antialiased bilinear filter
   (``Image.Resampling.BILINEAR``, whose support widens with the downscaling factor; the
   default interpolation of ``torchvision.transforms.Resize``), skipped when the crop
   already has that size.

CIFAR-10's python batches are pickles: they are read by :class:`SafeUnpickler`, which
builds only dicts, lists, bytes and numpy arrays and refuses any other global a file names
(a pickle can name any callable, e.g. ``os.system``; unpickling an untrusted file with
:mod:`pickle` runs it).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, Optional

import numpy as np

from dgm_runner.data.base import DataError

__all__ = [
    "SafeUnpickler",
    "grey_modes",
    "open_image",
    "oriented_size",
    "read_cifar_batch",
    "to_array",
]

#: PIL modes of 16- or 32-bit integer grey images, scaled to 8 bits (not clipped).
_WIDE_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")
#: PIL modes with an alpha channel (composited over white).
_ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")
#: Modes of grey images (``channels=null`` of an image folder picks 1 when every file has one).
grey_modes: tuple[str, ...] = ("1", "L", "LA", "La", "F", *_WIDE_GREY)
#: EXIF orientations that swap width and height (transpose, rotate 90 / 270, transverse).
_SWAPPING = (5, 6, 7, 8)
_ORIENTATION = 0x0112

# --------------------------------------------------------------------------- PIL images


def open_image(path: Path) -> Any:
    """Open ``path`` with PIL (header only; the pixels are read by :func:`to_array`).

    Raises:
        DataError: the file cannot be opened or is not an image (one line naming it).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise DataError(
            f"cannot read the image {path} ({_reason(err)}); remove or replace it"
        ) from None


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:200]


def oriented_size(image: Any) -> tuple[int, int]:
    """``(W, H)`` of an opened image as it will be decoded (after its EXIF orientation)."""
    w, h = image.size
    try:
        orientation = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # a damaged EXIF block: to_array's exif_transpose decides
        orientation = 1
    return (h, w) if orientation in _SWAPPING else (w, h)


def _to_8bit(image: Any, channels: int) -> Any:
    """``image`` as an 8-bit ``"L"`` (channels 1) or ``"RGB"`` (channels 3) PIL image."""
    from PIL import Image

    target = "L" if channels == 1 else "RGB"
    if image.mode in _WIDE_GREY:
        wide = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        image = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    elif image.mode in _ALPHA or (image.mode in ("P", "L", "RGB") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == target else image.convert(target)


def to_array(
    image: Any, channels: int, crop: Optional[int], size: Optional[int], path: Any
) -> np.ndarray:
    """Decode an opened PIL image into the protocol of the module docstring.

    Args:
        image: a PIL image (from :func:`open_image` or ``Image.fromarray``).
        channels: 1 (grey) or 3 (RGB).
        crop: side of the centred square crop; None: the shorter side.
        size: output side; None: the crop's side.
        path: the file, for messages.

    Returns:
        uint8 ``(channels, size, size)``.

    Raises:
        DataError: the file is truncated or unreadable, or smaller than ``crop`` (one line
            naming it).
    """
    from PIL import ImageOps

    try:
        image.load()  # raises on a truncated file (LOAD_TRUNCATED_IMAGES stays off)
        image = ImageOps.exif_transpose(image)
        image = _to_8bit(image, channels)
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        raise DataError(
            f"cannot decode the image {path} ({_reason(err)}); remove or replace it"
        ) from None
    w, h = image.size
    side = min(w, h) if crop is None else crop
    if side > min(w, h):
        raise DataError(
            f"the image {path} is {w}x{h}, smaller than the {side}x{side} centre crop; "
            "remove it or set a smaller dataset.crop"
        )
    if (w, h) != (side, side):
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if size is not None and size != side:
        from PIL import Image

        image = image.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(image, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


# --------------------------------------------------------------------------- CIFAR-10 pickles

#: The globals the CIFAR-10 python batches need (numpy arrays; bytes written by Python 3
#: pickles of protocol 2 come as ``_codecs.encode``), and nothing else.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class SafeUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that builds only plain containers and numpy arrays: its
    :meth:`find_class` returns the few numpy globals a CIFAR-10 batch names and refuses any
    other (so a malicious file's ``os.system`` is never looked up, let alone called)."""

    def find_class(self, module: str, name: str) -> Any:
        """The global ``module.name`` if allowed, else :class:`pickle.UnpicklingError`."""
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return super().find_class(module, name)


def _not_a_batch(path: Path, err: BaseException, fix: str) -> DataError:
    return DataError(f"{path} is not a readable CIFAR-10 batch ({_reason(err)}); {fix}")


def read_cifar_batch(path: Path, downloaded: bool) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch (``data_batch_1`` ... ``test_batch``) safely.

    The file is a pickled dict (Python 2 ``str`` keys, read as latin-1 text; Python 3 ``bytes``
    keys accepted) with ``data``: uint8 ``(N, 3072)``, each row 1024 red, then 1024 green,
    then 1024 blue values of a 32x32 image in row-major order; ``labels``: N ints in 0..9.

    Returns:
        (uint8 ``(N, 3, 32, 32)``, int64 ``(N,)``).

    Raises:
        DataError: one line naming the file: unreadable, not a pickle, a pickle naming a
            global other than numpy's array constructors (refused, never executed), or a
            dict without the expected ``data`` / ``labels``.
    """
    fix = (
        "delete it and retry (dataset.download=true fetches it again)"
        if downloaded
        else "replace it with an intact copy of cifar-10-python.tar.gz's file"
    )
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path} ({err.strerror or err}); {fix}") from None
    try:
        obj = SafeUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except pickle.UnpicklingError as err:
        if str(err).startswith("refused global"):
            raise DataError(
                f"{path} is not a CIFAR-10 batch: its pickle asks for {str(err)[15:]}, which "
                f"is refused (only numpy arrays, lists and bytes are read); {fix}"
            ) from None
        raise _not_a_batch(path, err, fix) from None
    except Exception as err:  # a damaged pickle raises many types (EOFError, ValueError, ...)
        raise _not_a_batch(path, err, fix) from None
    if isinstance(obj, dict):
        obj = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    data = obj.get("data") if isinstance(obj, dict) else None
    labels = obj.get("labels") if isinstance(obj, dict) else None
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
        or not isinstance(labels, list)
        or len(labels) != data.shape[0]
        or not all(isinstance(v, int) and 0 <= v < 10 for v in labels)
    ):
        raise DataError(
            f"{path} is not a CIFAR-10 batch (a dict of data: uint8 (N, 3072) and N labels "
            f"in 0..9 expected); {fix}"
        )
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)
