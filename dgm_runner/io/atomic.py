"""Atomic file writes: temp file in the same directory, fsync, rename, fsync the directory.

A reader (or a run resumed after ``kill -9`` or a power cut) sees either the old or the new
content of a file written here, never a torn one. Temp files are hidden and named
``.<name>.<random>.tmp`` (see :func:`is_temp_file`), so no glob for the real name (``*.pt``,
``metrics.json``) can pick one up; a writer killed mid-write leaves its temp file behind,
which :func:`remove_stale_temps` clears.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

_TMP_SUFFIX = ".tmp"


class WriteError(RuntimeError):
    """A file could not be written (full disk, read-only or missing directory, no
    permission); the message is one line naming the path, the reason and the free space.
    The file's previous content, if any, is untouched."""


# OSErrors that are the destination's fault (not e.g. a BadGzipFile read inside the block).
_WRITE_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EFBIG,
    errno.ENOENT,
    errno.ENOTDIR,
}

# How torch.save reports a failed write of its zip container (e.g. on a full disk).
_TORCH_WRITE_FAILURES = ("PytorchStreamWriter", "unexpected pos", "file write failed")


def _is_write_failure(err: BaseException) -> bool:
    """Whether ``err``, raised inside an :func:`atomic_open` block, is the destination's
    fault (the block may also fail for its own reasons, e.g. a BadGzipFile it reads)."""
    if isinstance(err, OSError):
        return err.errno in _WRITE_ERRNOS
    return isinstance(err, RuntimeError) and any(s in str(err) for s in _TORCH_WRITE_FAILURES)


def exception_in_chain(
    err: BaseException | None, types: type | tuple[type, ...]
) -> BaseException | None:
    """The first exception of ``types`` among ``err`` and the exceptions it was raised from
    or while handling (``__cause__`` / ``__context__``), or None. Libraries that catch
    everything hide a stop this way: ``torch.save`` turns a KeyboardInterrupt (a second
    Ctrl-C) into "PytorchStreamWriter failed writing file", MLflow wraps one raised in its
    retries in an ``MlflowException``."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, types):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _write_error(path: Path, err: BaseException) -> WriteError:
    """The one-line :class:`WriteError` for a failed write of ``path`` (any errno: a file
    where the directory should be, a directory where the file should be, a full disk...)."""
    if isinstance(err, OSError):
        reason = err.strerror or str(err)
        if err.errno == errno.EEXIST and err.filename is not None:  # mkdir over a file
            reason = f"{err.filename} is a file, not a directory"
    else:
        reason = "write failed (torch.save)"
    try:
        free = f"; {shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free there"
    except OSError:
        free = ""
    return WriteError(
        f"cannot write {path}: {reason}{free}; free space or fix the path or permissions and retry"
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; published files get the permissions open() would give them.
_FILE_MODE = 0o666 & ~_umask()


def fsync_dir(directory: str | os.PathLike) -> None:
    """fsync a directory so that a rename inside it survives a crash (a no-op where the
    platform cannot open directories, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def is_temp_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a temp file left by :func:`atomic_open` (``.<name>.<rand>.tmp``)."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(_TMP_SUFFIX)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on clean exit fsync it, ``os.replace`` it onto
    ``path`` and fsync the directory, so a reader sees either the old or the new file,
    never a torn one, even after a crash. On an exception the temp file is removed and
    ``path`` is untouched.

    Raises:
        WriteError: the write failed (full disk, read-only directory, a file where the
            directory should be, ...: any errno of the writer's own steps, and the write
            failures of the caller's block): one line.

    Args:
        path: the file to (over)write; its parent directory is created if needed.
        mode: ``"wb"`` or ``"w"`` (text, UTF-8).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
    except OSError as err:
        raise _write_error(path, err) from None
    in_block = False  # an error of the caller's block is translated only if a write failure
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, _FILE_MODE)
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as f:
            in_block = True
            yield f
            in_block = False
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        interrupt = exception_in_chain(err, KeyboardInterrupt)
        if interrupt is not None:  # a second Ctrl-C broke the write: not the disk's fault
            raise interrupt from None
        own_step = not in_block and isinstance(err, OSError)  # flush, fsync, rename
        if own_step or (in_block and _is_write_failure(err)):
            raise _write_error(path, err) from None
        raise
    fsync_dir(path.parent)


def check_writable(directory: str | os.PathLike) -> None:
    """Refuse, before any work, a place where files cannot be written: a temporary file is
    created and removed in ``directory``, or in its nearest existing parent when it does
    not exist yet (nothing is left behind, no directory created). For commands whose work
    comes before their only write (``dgm-eval`` on a read-only run directory).

    Raises:
        WriteError: one line naming the directory and the reason.
    """
    directory = Path(directory)
    probe = next((d for d in (directory, *directory.parents) if d.is_dir()), directory)
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".probe.", suffix=_TMP_SUFFIX)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise _write_error(directory / "*", err) from None


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in ``path``, or None when the file is missing, unreadable or torn
    (what a reader of run files such as ``metrics.json`` treats as "no record")."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write a text file."""
    with atomic_open(path, "w") as f:
        f.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write a binary file."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy ``src`` onto ``dst`` atomically (temp file, fsync, rename)."""
    with open(src, "rb") as fin, atomic_open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)


def remove_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Delete temp files that killed writers left in ``directory`` (not recursive).

    Call it only when no other process writes into ``directory`` (e.g. when a run
    directory is opened for resuming). Returns the removed paths.
    """
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for p in directory.iterdir():
        if p.is_file() and is_temp_file(p):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed
