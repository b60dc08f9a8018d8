"""The provenance-keyed dataset cache: read-only sources copied into checked directories.

Sources are read-only: their four IDX files (gzipped or not) are decompressed (or
copied) into a cache directory keyed by the sources' identity,
``<cache>/<Folder>/by-source/<key>/`` with ``<key>`` a hash of the resolved path, size
and ``mtime_ns`` of each of the four source files (:func:`source_stamps`). It holds
``<Folder>/raw/<files>`` (so it is also a torchvision root) and ``sources.json``, the
provenance: those four stamps and the size and SHA-256 of each cached file.

Provenance rule: a cache is read only when its recorded sources match the files the
run was told to use (and its files match their recorded sizes and digests); it is
filled in a temporary directory ``<cache>/<Folder>/by-source/.tmp-<random>/``, where
every file's IDX header is checked against its payload (and the four headers against
each other and the dataset's image size), and switched in atomically by
renaming that whole directory onto ``<key>``. A load that fails (a corrupt source, a
full disk, a kill) therefore never leaves anything a later run reads; when two
processes fill the same key, the second one's rename fails and it uses the first
one's directory after checking its provenance. Temporary directories older than an
hour (left by a killed run) are deleted, and so are keyed directories whose recorded
sources have changed or vanished (they can never be read again).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from dgm_runner.data.base import DataError
from dgm_runner.data.idx import (
    IDX_FILES,
    _check_payload,
    _idx_dims,
    check_idx_file,
    check_idx_set,
)
from dgm_runner.io.atomic import fsync_dir

if TYPE_CHECKING:
    from dgm_runner.data.vision import _Spec

_BY_SOURCE = "by-source"  # <cache>/<Folder>/by-source/<key>/
_PROVENANCE = "sources.json"  # inside each keyed directory
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
            raise DataError(
                f"cannot read {src} ({err.strerror or err}); check the file and retry"
            ) from None
        stamps[name] = {"path": str(resolved), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return stamps


def _source_key(stamps: dict[str, dict[str, Any]]) -> str:
    blob = json.dumps(stamps, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _write_error(where: Path, err: OSError) -> DataError:
    return DataError(
        f"cannot write the dataset cache {where} ({err.strerror or err}); "
        f"free space there or point DGM_CACHE_DIR at a writable directory"
    )


def _unreadable(src: Path, err: BaseException, downloaded: bool) -> DataError:
    fix = (
        "delete it and retry (dataset.download=true fetches it again)"
        if downloaded
        else "replace it with an intact copy"
    )
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


def _provenance(
    keyed: Path, spec: _Spec, key: str, stamps: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """``keyed``'s provenance if it records exactly ``stamps`` and its files have the
    recorded sizes and valid IDX headers; else None (the directory must not be read)."""
    try:
        prov = json.loads((keyed / _PROVENANCE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (
        isinstance(prov, dict)
        and prov.get("format") == _FORMAT
        and prov.get("key") == key
        and prov.get("sources") == stamps
        and isinstance(prov.get("files"), dict)
    ):
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
    try:  # a cache filled before the set was checked as a whole is filled (and refused) again
        _check_set(spec, stamps, {n: prov["files"][n]["dims"] for n in IDX_FILES})
    except (DataError, KeyError, TypeError, ValueError):
        return None
    return prov


def _check_set(spec: _Spec, stamps: dict[str, dict[str, Any]], dims: dict[str, list[int]]) -> None:
    """:func:`dgm_runner.data.idx.check_idx_set` of the source files ``stamps``.

    Raises:
        DataError: images of another size than the dataset's, or fewer or more labels than
            images (the message names the source files).
    """
    files = {name: stamps[name]["path"] for name in IDX_FILES}
    check_idx_set(files, dims, spec.image_hw, spec.folder)


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


def publish_keyed(
    tmp: Path,
    target: Path,
    record_name: str,
    record: dict[str, Any],
    existing: Callable[[], dict[str, Any] | None],
    synced: tuple[Path, ...] = (),
) -> dict[str, Any] | None:
    """Switch a filled temporary directory in as the keyed directory ``target``, atomically:
    write ``record`` (JSON) as ``tmp/record_name`` (fsynced, with the directories ``synced``
    and ``tmp``), give ``tmp`` the mode ``mkdir`` would, and rename it onto ``target``.

    Returns:
        None once ``tmp`` is ``target``; or the record ``existing()`` reads from a ``target``
        another run switched in first (its copy of the same data, which the caller uses).
        A ``target`` that does not check out (``existing()`` None) is discarded and the
        rename tried once more.

    Raises:
        DataError: the record or the rename cannot be written (one line, the place named).
    """
    try:
        with open(tmp / record_name, "x", encoding="utf-8") as f:
            json.dump(record, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        for d in (*synced, tmp):
            fsync_dir(d)
        os.chmod(tmp, _DIR_MODE)
    except OSError as err:
        raise _write_error(tmp, err) from None
    for attempt in range(2):
        try:
            os.rename(tmp, target)  # fails if another run switched in `target` first
        except OSError as err:
            found = existing()
            if found is not None:
                return found
            if attempt == 1 or not target.exists():
                raise _write_error(target.parent, err) from None
            _discard(target)  # a directory under our key that does not check out
        else:
            fsync_dir(target.parent)
            return None
    return None  # not reached: the second attempt returns or raises


def sweep_keyed(directory: Path, keep: str, stale: Callable[[Path], bool]) -> None:
    """Delete what no run will read again from a directory of keyed cache directories:
    temp dirs of killed runs (older than an hour; younger ones may belong to a run filling
    them now), trash, and the keyed directories other than ``keep`` that ``stale`` says no
    run can read again (it may raise OSError, ValueError, TypeError, KeyError or
    AttributeError on an unreadable record: the directory is then left alone, as one being
    written by another run)."""
    try:
        entries = list(directory.iterdir())
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
            elif entry.name != keep and entry.is_dir() and stale(entry):
                _discard(entry)
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue  # unreadable or being written by another run: leave it alone


def _sources_changed(entry: Path) -> bool:
    """Whether the IDX sources recorded in a keyed directory changed or vanished."""
    sources = json.loads((entry / _PROVENANCE).read_text(encoding="utf-8"))["sources"]
    return not all(_still(stamp) for stamp in sources.values())


def _sweep(by_source: Path, keep: str) -> None:
    """:func:`sweep_keyed` of the IDX caches: keyed directories whose recorded sources
    changed or vanished go."""
    sweep_keyed(by_source, keep, _sources_changed)


def _fill(
    spec: _Spec, stamps: dict[str, dict[str, Any]], downloaded: bool
) -> tuple[Path, dict[str, Any]]:
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
            raise DataError(
                f"the {spec.folder} source files changed while being read "
                f"({', '.join(str(p) for p in files.values())}); retry"
            )
        _check_set(spec, stamps, {name: c["dims"] for name, c in copied.items()})
        prov = {"format": _FORMAT, "key": key, "sources": stamps, "files": copied}
        found = publish_keyed(
            tmp,
            target,
            _PROVENANCE,
            prov,
            lambda: _provenance(target, spec, key, stamps),
            synced=(raw, raw.parent),
        )
        if found is not None:
            return target, found  # the other run's copy of the same sources
        _sweep(by_source, keep=key)
        return target, prov
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cached(
    spec: _Spec, stamps: dict[str, dict[str, Any]], downloaded: bool
) -> tuple[Path, dict[str, Any]]:
    """The keyed cache of ``stamps``: reused when its provenance checks out, else filled."""
    keyed = cache_dir() / spec.folder / _BY_SOURCE / _source_key(stamps)
    prov = _provenance(keyed, spec, keyed.name, stamps)
    return (keyed, prov) if prov is not None else _fill(spec, stamps, downloaded)
