"""MNIST and Fashion-MNIST as in-memory tensors, found offline or downloaded.

Sources (``../shared/DESIGN.md``, "Data"):

* If ``dataset.root`` is set, it is the only source: its layouts
  ``<root>/<Folder>/raw``, ``<root>/<Folder>`` and ``<root>`` are tried in that order,
  and when none holds the four IDX files the load fails (no fallback, no download).
* Otherwise, in order: the ``DGM_DATA_DIR`` environment variable (same three
  layouts), system copies (Debian's ``dataset-fashion-mnist`` in
  ``/usr/share/datasets``), and torchvision's download folder
  ``<cache>/<Folder>/raw`` in the user cache ``$DGM_CACHE_DIR`` (default
  ``~/.cache/dgm_runner``); when none holds the files and ``dataset.download`` is
  true, torchvision downloads into that folder, which is then the source.

A source directory holds the four IDX files (gzipped or not). Sources are read-only:
the files are decompressed (or copied) into a cache directory keyed by the source's
identity, ``<cache>/<Folder>/by-source/<key>/`` with ``<key>`` a hash of the resolved
path, size and ``mtime_ns`` of each of the four source files. It holds
``<Folder>/raw/<files>`` (so it is also a torchvision root, see
:func:`torchvision_root`) and ``sources.json``, the provenance: those four stamps and
the size and SHA-256 of each cached file.

Provenance rule: a cache is read only when its recorded sources match the files the
run was told to use (and its files match their recorded sizes and digests); it is
filled in a temporary directory ``<cache>/<Folder>/by-source/.tmp-<random>/``, where
every file's IDX header is checked against its payload, and switched in atomically by
renaming that whole directory onto ``<key>``. A load that fails (a corrupt source, a
full disk, a kill) therefore never leaves anything a later run reads; when two
processes fill the same key, the second one's rename fails and it uses the first
one's directory after checking its provenance. Temporary directories older than an
hour (left by a killed run) are deleted, and so are keyed directories whose recorded
sources have changed or vanished (they can never be read again). Within a process the
tensors are memoized on the same stamps, so files changed between two loads are read
again.

Caches written by earlier versions (decompressed files and ``.sources.json`` directly
in ``<cache>/<Folder>/raw/``) are not trusted: those files are deleted before the
download folder is looked at.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import shutil
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import torch

from dgm_runner.config import PositiveInt, UnitInterval
from dgm_runner.data.base import DataError, ImageData
from dgm_runner.io.atomic import fsync_dir

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

_BY_SOURCE = "by-source"  # <cache>/<Folder>/by-source/<key>/
_PROVENANCE = "sources.json"  # inside each keyed directory
_LEGACY_PROVENANCE = ".sources.json"  # earlier versions, in <cache>/<Folder>/raw/
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
_STALE_TMP_S = 3600.0  # a fill takes seconds; an older temp dir was left by a killed run
_FORMAT = 1
_CHUNK = 1 << 20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_DIR_MODE = 0o777 & ~_umask()  # mkdtemp makes 0700 dirs; a keyed dir gets what mkdir would give


def cache_dir() -> Path:
    """The user cache for decompressed and downloaded data.

    Returns:
        ``$DGM_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/dgm_runner`` (default
        ``~/.cache/dgm_runner``); it need not exist yet.
    """
    if os.environ.get("DGM_CACHE_DIR"):
        return Path(os.environ["DGM_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dgm_runner"


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
    return [n for n in IDX_FILES if not ((directory / n).is_file() or (directory / f"{n}.gz").is_file())]


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
            f"dataset.root={base} does not exist or is not a directory; set dataset.root to the folder "
            f"holding the {name} IDX files ({', '.join(IDX_FILES)}, plain or .gz), {unset}"
        )
    present = [d for d in layouts if d.is_dir()]
    best = max(present, key=lambda d: len(IDX_FILES) - len(_lacking(d)))  # ties: the most specific
    missing = ", ".join(f"{n}[.gz]" for n in _lacking(best))
    raise DataError(
        f"dataset.root={base} does not hold the {name} dataset: {best} lacks {missing} "
        f"(looked in {', '.join(map(str, layouts))}); put the four IDX files in {layouts[0]} or {base}, {unset}"
    )


def _retire_legacy_copies(raw: Path) -> bool:
    """Delete the decompressed copies an earlier version kept in ``raw`` (marked by
    ``.sources.json``; their provenance cannot be trusted). Return whether ``raw`` may
    be used as a source (False when they could not be deleted)."""
    marker = raw / _LEGACY_PROVENANCE
    if not marker.exists():
        return True
    try:
        for name in IDX_FILES:
            (raw / name).unlink(missing_ok=True)
        marker.unlink(missing_ok=True)
    except OSError:
        return False
    return True


def _locate(name: str, spec: _Spec, root: Optional[str], download: bool) -> tuple[dict[str, Path], bool]:
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
    if _retire_legacy_copies(downloads):
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
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(_missing_message(name, spec, looked, f"download failed: {reason}")) from None
    files = _find_idx(downloads)
    if files is None:
        raise DataError(_missing_message(name, spec, looked, f"the download left no IDX files in {downloads}"))
    return files, True


def _missing_message(name: str, spec: _Spec, looked: list[str], reason: str) -> str:
    return (
        f"dataset {name!r} not found ({reason}); looked in: {', '.join(looked)}. "
        f"Fix: {spec.install_hint}set DGM_DATA_DIR or dataset.root to a folder holding "
        f"{spec.folder}/raw/{IDX_FILES[0]}.gz and the other IDX files, or run once online."
    )


# --------------------------------------------------------------------------- IDX files

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
        raise ValueError(f"{what}: the header promises {shape} = {expected} bytes of data, the file holds {payload}")


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


# --------------------------------------------------------------------------- the keyed cache


def source_stamps(files: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """The identity of each source file: ``{name: {"path", "size", "mtime_ns"}}``, with
    the path resolved (symlinks followed).

    Raises:
        DataError: a file vanished or cannot be stat'ed.
    """
    stamps = {}
    for name, src in files.items():
        try:
            resolved = src.resolve()
            st = resolved.stat()
        except OSError as err:
            raise DataError(f"cannot read {src} ({err.strerror or err}); check the file and retry") from None
        stamps[name] = {"path": str(resolved), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return stamps


def _source_key(stamps: dict[str, dict[str, Any]]) -> str:
    blob = json.dumps(stamps, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _write_error(where: Path, err: OSError) -> DataError:
    return DataError(f"cannot write the dataset cache {where} ({err.strerror or err}); "
                     f"free space there or point DGM_CACHE_DIR at a writable directory")


def _unreadable(src: Path, err: BaseException, downloaded: bool) -> DataError:
    fix = ("delete it and retry (dataset.download=true fetches it again)" if downloaded
           else "replace it with an intact copy")
    return DataError(f"cannot read {src} (unreadable: {err}); {fix}")


def _copy_idx(src: Path, dst: Path, name: str, downloaded: bool) -> dict[str, Any]:
    """Decompress (or copy) the IDX file ``src`` into the new file ``dst``, checking its
    header against its payload; return ``{"dims", "size", "sha256"}`` of ``dst``."""
    read_errors = (OSError, EOFError, zlib.error, ValueError)
    if downloaded and src.suffix != ".gz":
        check_idx_file(src)  # names the file in the cache and says to delete it
    digest = hashlib.sha256()
    try:
        fin = gzip.open(src, "rb") if src.suffix == ".gz" else open(src, "rb")
    except OSError as err:
        raise _unreadable(src, err, downloaded) from None
    with fin:
        try:
            head = fin.read(4)
            dims = _idx_dims(name, head, fin.read)
        except read_errors as err:
            raise _unreadable(src, err, downloaded) from None
        header = head + b"".join(d.to_bytes(4, "big") for d in dims)
        payload = 0
        try:
            fout = open(dst, "xb")
        except OSError as err:
            raise _write_error(dst.parent, err) from None
        with fout:
            chunk = header
            while chunk:
                try:
                    fout.write(chunk)
                except OSError as err:
                    raise _write_error(dst.parent, err) from None
                digest.update(chunk)
                try:
                    chunk = fin.read(_CHUNK)
                except read_errors as err:
                    raise _unreadable(src, err, downloaded) from None
                payload += len(chunk)
            try:
                _check_payload(dims, payload)
            except ValueError as err:
                raise _unreadable(src, err, downloaded) from None
            try:
                fout.flush()
                os.fsync(fout.fileno())
            except OSError as err:
                raise _write_error(dst.parent, err) from None
    return {"dims": list(dims), "size": len(header) + payload, "sha256": digest.hexdigest()}


def _provenance(keyed: Path, spec: _Spec, key: str, stamps: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """``keyed``'s provenance if it records exactly ``stamps`` and its files have the
    recorded sizes and valid IDX headers; else None (the directory must not be read)."""
    try:
        prov = json.loads((keyed / _PROVENANCE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(prov, dict) and prov.get("format") == _FORMAT and prov.get("key") == key
            and prov.get("sources") == stamps and isinstance(prov.get("files"), dict)):
        return None
    raw = keyed / spec.folder / "raw"
    for name in IDX_FILES:
        info = prov["files"].get(name)
        try:
            if not isinstance(info, dict) or (raw / name).stat().st_size != info.get("size"):
                return None
            check_idx_file(raw / name)
        except (OSError, DataError):
            return None
    return prov


def _discard(path: Path) -> None:
    """Move ``path`` out of the way atomically (so no reader finds it half deleted), then
    delete it; a no-op when it is already gone."""
    trash = path.parent / f"{_TRASH_PREFIX}{os.getpid()}-{os.urandom(4).hex()}"
    try:
        os.rename(path, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _still(stamp: dict[str, Any]) -> bool:
    """Whether the file recorded in ``stamp`` still has that size and mtime."""
    try:
        st = Path(stamp["path"]).stat()
    except FileNotFoundError:
        return False
    return st.st_size == stamp["size"] and st.st_mtime_ns == stamp["mtime_ns"]


def _sweep(by_source: Path, keep: str) -> None:
    """Delete what no run will read again: temp dirs of killed runs (older than an hour;
    younger ones may belong to a run filling them now), trash, and keyed directories
    whose recorded sources changed or vanished."""
    try:
        entries = list(by_source.iterdir())
    except OSError:
        return
    now = time.time()
    for entry in entries:
        try:
            if entry.name.startswith(_TRASH_PREFIX):
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.name.startswith(_TMP_PREFIX):
                if now - entry.stat().st_mtime > _STALE_TMP_S:
                    shutil.rmtree(entry, ignore_errors=True)
            elif entry.name != keep and entry.is_dir():
                sources = json.loads((entry / _PROVENANCE).read_text(encoding="utf-8"))["sources"]
                if not all(_still(stamp) for stamp in sources.values()):
                    _discard(entry)
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue  # unreadable or being written by another run: leave it alone


def _fill(spec: _Spec, stamps: dict[str, dict[str, Any]], downloaded: bool) -> tuple[Path, dict[str, Any]]:
    """Build the keyed cache for ``stamps`` in a temp dir and rename it into place.

    Returns:
        (the keyed directory, its provenance).

    Raises:
        DataError: a source file is corrupt, changed while being read, or the cache
            cannot be written.
    """
    key = _source_key(stamps)
    by_source = cache_dir() / spec.folder / _BY_SOURCE
    target = by_source / key
    try:
        by_source.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{key}-", dir=by_source))
    except OSError as err:
        raise _write_error(by_source, err) from None
    try:
        raw = tmp / spec.folder / "raw"
        try:
            raw.mkdir(parents=True)
        except OSError as err:
            raise _write_error(raw, err) from None
        files = {name: Path(stamps[name]["path"]) for name in IDX_FILES}
        copied = {name: _copy_idx(src, raw / name, name, downloaded) for name, src in files.items()}
        if source_stamps(files) != stamps:
            raise DataError(f"the {spec.folder} source files changed while being read "
                            f"({', '.join(str(p) for p in files.values())}); retry")
        prov = {"format": _FORMAT, "key": key, "sources": stamps, "files": copied}
        try:
            with open(tmp / _PROVENANCE, "x", encoding="utf-8") as f:
                json.dump(prov, f, indent=2, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            for d in (raw, raw.parent, tmp):
                fsync_dir(d)
            os.chmod(tmp, _DIR_MODE)
        except OSError as err:
            raise _write_error(tmp, err) from None
        for attempt in range(2):
            try:
                os.rename(tmp, target)  # fails if another run switched in `target` first
            except OSError as err:
                existing = _provenance(target, spec, key, stamps)
                if existing is not None:
                    return target, existing  # the other run's copy of the same sources
                if attempt == 1 or not target.exists():
                    raise _write_error(by_source, err) from None
                _discard(target)  # a directory under our key that does not check out
            else:
                fsync_dir(by_source)
                break
        _sweep(by_source, keep=key)
        return target, prov
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


def _cached(spec: _Spec, stamps: dict[str, dict[str, Any]], downloaded: bool) -> tuple[Path, dict[str, Any]]:
    """The keyed cache of ``stamps``: reused when its provenance checks out, else filled."""
    keyed = cache_dir() / spec.folder / _BY_SOURCE / _source_key(stamps)
    prov = _provenance(keyed, spec, keyed.name, stamps)
    return (keyed, prov) if prov is not None else _fill(spec, stamps, downloaded)


def torchvision_root(name: Literal["mnist", "fashion_mnist"] = "mnist", root: Optional[str] = None,
                     download: bool = True) -> Path:
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
                raise DataError(f"{name}: the cache {keyed} is damaged ({err}); delete it and retry") from None
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


_load_uint8.cache_clear = _load_stamped.cache_clear  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- the public loader


def _too_many(option: str, asked: int, have: int, what: str) -> DataError:
    return DataError(f"dataset.{option}={asked} is larger than the {have} {what}; use at most {have} or null")


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
        root: the only directory to take the files from, when set (its layouts
            ``<root>/<Folder>/raw``, ``<root>/<Folder>``, ``<root>``); None: look in
            ``$DGM_DATA_DIR``, system copies and the cache (see module docstring).
        download: allow torchvision to download into the cache when nothing is found
            (never when ``root`` is set).
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
        :class:`ImageData` with ``(N, 1, H, W)`` float32 images in [0, 1] (``H = W = 28``
        for the real datasets, ``image_size`` when set), int64 ``(N,)`` labels, 10 classes.

    Raises:
        DataError: one line saying what to do, when: the dataset is nowhere to be found
            (the message lists every place looked in); ``root`` is set but does not
            exist or lacks a file (named); a file is corrupt (named); the cache cannot
            be written; ``subset``, ``test_subset`` or ``per_class`` asks for more
            images than the split (or a class) has; the labels do not fit the images.
    """
    if name not in SPECS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(SPECS)}")
    train_x, train_y, test_x, test_y = _load_uint8(name, root, download)
    if per_class is not None:
        counts = torch.bincount(train_y, minlength=10)[:10]
        fewest = int(counts.argmin())
        if per_class > int(counts[fewest]):
            raise _too_many("per_class", per_class, int(counts[fewest]), f"training images of class {fewest} in {name}")
        keep = torch.cat([torch.nonzero(train_y == c).flatten()[:per_class] for c in range(10)])
        keep = keep.sort().values
        train_x, train_y = train_x[keep], train_y[keep]
    if subset is not None:
        if subset > train_x.shape[0]:
            left = f" left by dataset.per_class={per_class}" if per_class is not None else ""
            raise _too_many("subset", subset, train_x.shape[0], f"training images of {name}{left}")
        train_x, train_y = train_x[:subset], train_y[:subset]
    if test_subset is not None:
        if test_subset > test_x.shape[0]:
            raise _too_many("test_subset", test_subset, test_x.shape[0], f"test images of {name}")
        test_x, test_y = test_x[:test_subset], test_y[:test_subset]

    def to_float(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device).unsqueeze(1).float().div_(255.0)
        if image_size is not None and image_size != x.shape[-1]:
            x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="area")
        return (x > threshold).float() if binarize else x

    return ImageData(
        name=name,
        train_x=to_float(train_x),
        train_y=train_y.to(device, copy=True),  # never the memoized tensor itself
        test_x=to_float(test_x),
        test_y=test_y.to(device, copy=True),
        n_classes=10,
        binarized=binarize,
    )
