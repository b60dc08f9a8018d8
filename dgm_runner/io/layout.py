"""The entries of a run directory (the run-directory contract, ``../DESIGN.md``) and one
check that they are what the contract says before a command works on a run.

:data:`RUN_ENTRIES` are what marks a directory as holding a run (not ``last.pt`` alone:
a finished run whose ``checkpoints/`` was deleted still holds its results).
:func:`check_layout` is called by ``dgm-train`` (in ``train()``), ``dgm-eval`` and
``dgm-sample`` before any work: an entry that should be a directory but is a file would
fail after the work (a FileExistsError when the first file is written into it), and a
symbolic link leading out of the run would send the run's files elsewhere without a word.
"""

from __future__ import annotations

import os
from pathlib import Path

from dgm_runner.io.atomic import WriteError
from dgm_runner.io.lock import LOCK_NAME

#: Entries of the contract that are directories.
DIRECTORIES = ("checkpoints", "samples", "tb", ".hydra", "eval", "figures")
#: Entries of the contract that are files (``.lock`` aside: it marks no run).
FILES = ("metrics.json", "metrics.jsonl", "train_history.jsonl", "train.log")
#: What marks a directory as holding a (finished, interrupted or failed) run.
RUN_ENTRIES = (*DIRECTORIES, *FILES)


def _problem(path: Path, root: Path, directory: bool) -> str | None:
    """What is wrong with the entry ``path`` of the run directory ``root`` (resolved), or
    None; ``directory``: whether the contract says it is a directory."""
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if not target.exists():
            return f"is a symbolic link to {os.readlink(path)}, which does not exist"
        if not target.is_relative_to(root):
            return f"is a symbolic link out of the run directory (to {target})"
    if directory and not path.is_dir():
        return "is a file, not a directory"
    if not directory and path.is_dir():
        return "is a directory, not a file"
    return None


def check_layout(run_dir: str | os.PathLike) -> None:
    """Refuse a run directory whose contract entries are not what they should be:
    ``checkpoints``, ``samples``, ``tb``, ``.hydra``, ``eval`` and ``figures`` must be
    directories, the run's files (``metrics.json``, ..., ``.lock``) files, and none of them
    a symbolic link leading out of the run directory (or to nothing). Missing entries are
    fine (they are created when needed), and so is a missing ``run_dir``.

    Raises:
        WriteError: one line naming the first wrong entry (nothing has been written).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    root = run_dir.resolve()
    for name in (*DIRECTORIES, *FILES, LOCK_NAME):
        path = run_dir / name
        if not os.path.lexists(path):
            continue
        problem = _problem(path, root, directory=name in DIRECTORIES)
        if problem is not None:
            kind = "directory" if name in DIRECTORIES else "file"
            raise WriteError(
                f"{path} {problem}: a run's {name} must be a {kind} inside its run directory; "
                "move it away and retry"
            )
