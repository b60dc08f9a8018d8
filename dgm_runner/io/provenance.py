"""Which code made a result, and when: the ``code`` and ``finished`` entries of a run's
``metrics.json``, which the results tables of the docs print beside their rows
(``scripts/results_table.py``)."""

from __future__ import annotations

import datetime
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

#: The package's source directory (its git work tree, when installed editable from a clone).
_SOURCE = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    """``git -C <source> args`` stdout, stripped; None when git or the work tree is missing."""
    try:
        out = subprocess.run(
            ["git", "-C", str(_SOURCE), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def code_version() -> dict[str, Any]:
    """The code running this process.

    Returns:
        ``{"version": <dgm_runner's installed version or None>, "commit": <40-hex git commit
        of the source tree or None>, "dirty": <whether tracked files differ from it, or
        None>}``. ``commit`` is None for an installed (non-editable) package or without git;
        ``dirty`` ignores untracked files (run directories under ``outputs/``).
    """
    try:
        version: str | None = metadata.version("dgm_runner")
    except metadata.PackageNotFoundError:
        version = None
    top = _git("rev-parse", "--show-toplevel")  # not a venv's site-packages inside a clone
    commit = _git("rev-parse", "HEAD") if top and Path(top).resolve() == _SOURCE else None
    if commit is not None and len(commit) != 40:
        commit = None
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"version": version, "commit": commit, "dirty": None if status is None else bool(status)}


def utc_now() -> str:
    """The current time, ISO 8601 in UTC to the second, e.g. ``2026-12-07T03:45:03Z``."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return now.isoformat().replace("+00:00", "Z")
