"""One process per run directory: an exclusive ``fcntl.flock`` on ``<run_dir>/.lock``.

The lock is taken as soon as Hydra resolves ``hydra.output_subdir`` (the
``dgm_hydra_subdir`` resolver, before Hydra saves ``.hydra/``), and again, idempotently, by
:func:`dgm_runner.loop.train`; it is held for the life of the run and released when the run
ends. The operating system drops it when the process dies (``kill -9`` included), so a
stale lock never blocks a resume. A refused process names the holder's PID, read from the
kernel's lock table, so taking or probing the lock writes nothing but the (empty) lock
file itself. The file is never deleted (deleting a lock file races with a process that
is about to lock it). The lock file is never opened through a symbolic link, and what
the directory held when it was locked is kept (:func:`found_when_locked`: what a run
directory held before the launch that locked it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path
from typing import Iterator

from dgm_runner.io.layout import RunPaths

#: Name of the lock file inside a run directory (:attr:`RunPaths.LOCK`).
LOCK_NAME = RunPaths.LOCK

# Locks this process holds: resolved run directory -> open file descriptor. flock locks
# belong to an open file description, so a second open+flock from this same process
# would conflict with the first: acquire() is idempotent instead.
_HELD: dict[str, int] = {}
# ... and what each of those directories held (but the lock) when this process locked it.
_FOUND: dict[str, tuple[str, ...]] = {}


class RunDirLocked(RuntimeError):
    """Another live process holds the run directory's lock (the message names its PID), or
    the filesystem cannot lock it."""


def _key(run_dir: str | os.PathLike) -> str:
    return str(Path(run_dir).expanduser().resolve())


def holder_pid(run_dir: str | os.PathLike) -> int | None:
    """The PID of the process holding ``run_dir``'s lock, read from the kernel's lock table
    (``/proc/locks``, Linux); None when nobody holds it or the table cannot be read.
    Nothing is written to find it, so a refused launch changes no file of the run."""
    try:
        st = RunPaths(run_dir).lock.stat()
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    wanted = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    for line in table.splitlines():  # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK" or fields[2] == "->":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            if (int(major, 16), int(minor, 16), int(inode)) == wanted:
                return int(fields[4])
        except ValueError:
            continue
    return None


def _open_lock_file(path: Path) -> int:
    """Open (create) the lock file ``path``, never through a symbolic link: a planted link
    would create or lock a file outside the run directory.

    Raises:
        RunDirLocked: ``path`` is a symbolic link or not a regular file (one line).
        OSError: it cannot be opened otherwise (e.g. a read-only directory).
    """
    not_a_file = RunDirLocked(f"cannot lock {path}: not a regular file; remove it and retry")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise RunDirLocked(
                f"cannot lock {path}: it is a symbolic link (to {os.readlink(path)}), not the "
                "run's lock file; remove it and retry"
            ) from None
        if err.errno == errno.EISDIR:
            raise not_a_file from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO, a device...
        os.close(fd)
        raise not_a_file
    return fd


def acquire(run_dir: str | os.PathLike) -> None:
    """Take the exclusive lock of ``run_dir`` (created if missing) for this process; a no-op
    if this process holds it already. What the directory held when it was locked is kept
    (:func:`found_when_locked`).

    Raises:
        RunDirLocked: another process holds it (one line naming its PID and what to do),
            the filesystem has no file locks, or ``.lock`` is a symbolic link or no file.
        OSError: the directory cannot be created or the lock file opened (e.g. read-only).
    """
    key = _key(run_dir)
    if key in _HELD:
        return
    Path(key).mkdir(parents=True, exist_ok=True)
    lock = RunPaths(key).lock
    fd = _open_lock_file(lock)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):  # e.g. ENOLCK
            raise RunDirLocked(
                f"cannot lock {lock} ({err.strerror or err}): put the run on a "
                f"filesystem with file locks (local disk, NFS v4)"
            ) from None
        pid = holder_pid(key)
        who = f"process {pid}" if pid else "another process"
        raise RunDirLocked(
            f"{key} is in use by {who} (lock {lock}): wait for it to finish "
            f"or choose another hydra.run.dir"
        ) from None
    _HELD[key] = fd
    _FOUND[key] = contents(key)


def _holds_nothing(path: Path) -> bool:
    """Whether ``path`` is an empty directory (not a link to one)."""
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def contents(directory: str | os.PathLike) -> tuple[str, ...]:
    """The sorted names of what ``directory`` holds: its entries but the lock file and
    empty directories (such as the empty ``.hydra/`` a refused launch may leave); ``()``
    for a missing directory."""
    directory = Path(directory)
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return ()
    return tuple(sorted(n for n in names if n != LOCK_NAME and not _holds_nothing(directory / n)))


def found_when_locked(run_dir: str | os.PathLike) -> tuple[str, ...] | None:
    """What ``run_dir`` held (:func:`contents`) when this process locked it; None when
    this process does not hold its lock. A launch locks its run directory before it
    writes anything there, so this is what the directory held before the launch (not the
    ``.hydra/`` or ``train.log`` that Hydra writes for it)."""
    return _FOUND.get(_key(run_dir))


def release(run_dir: str | os.PathLike) -> None:
    """Release this process's lock of ``run_dir`` (a no-op if it holds none)."""
    fd = _HELD.pop(_key(run_dir), None)
    _FOUND.pop(_key(run_dir), None)
    if fd is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def holds_lock(run_dir: str | os.PathLike) -> bool:
    """Whether this process holds the lock of ``run_dir``."""
    return _key(run_dir) in _HELD


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold the lock of ``run_dir`` inside the block (taken if not yet held, released after).

    Raises:
        RunDirLocked: as :func:`acquire`.
    """
    acquire(run_dir)
    try:
        yield
    finally:
        release(run_dir)
