"""Run directories: never write a new run over an existing one.

* :func:`check_run_dir` is called by ``train()`` before anything is written: a directory
  that already holds ``checkpoints/last.pt`` (a finished or interrupted run) is only
  written into when ``trainer.resume`` points at it.
* :func:`hydra_output_subdir` (which also takes the run directory's lock) backs the
  ``dgm_hydra_subdir`` resolver of ``hydra.output_subdir`` (``configs/train.yaml``): Hydra
  saves ``.hydra/config.yaml``,
  ``hydra.yaml`` and ``overrides.yaml`` *before* our code runs, so for a directory that
  already holds a run it must save nothing, or a refused (or resumed) launch would
  overwrite the record of how the run was made.

New run directories are named ``<experiment>/<date>_<time>_<microseconds>`` (see
``configs/train.yaml``), so two launches in the same second get two directories.
"""

from __future__ import annotations

import os
from pathlib import Path

from dgm_runner.config import ConfigError
from dgm_runner.io.atomic import read_json, write_json
from dgm_runner.io.lock import RunDirLocked, acquire

#: What marks a directory as holding a run.
MARKER = Path("checkpoints") / "last.pt"


def holds_run(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` already holds a (finished or interrupted) run's ``last.pt``."""
    return (Path(run_dir) / MARKER).exists()


def same_path(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name the same file or directory (compared resolved when one
    is missing)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.expanduser().resolve() == b.expanduser().resolve()


def check_run_dir(run_dir: str | os.PathLike, resume: str | os.PathLike | None) -> None:
    """Refuse to start a run in a directory that already holds one, unless resuming it.

    Args:
        run_dir: where the run is about to write.
        resume: ``trainer.resume``: ``None``, a run directory, or ``"auto"`` (continue
            whatever ``run_dir`` holds).

    Raises:
        ConfigError: ``run_dir`` holds ``checkpoints/last.pt`` and ``resume`` does not
            point at ``run_dir`` (nothing has been written).
    """
    run_dir = Path(run_dir)
    if not holds_run(run_dir):
        return
    if resume is not None and (str(resume) == "auto" or same_path(Path(resume), run_dir)):
        return
    other = f" (trainer.resume={resume} is another directory)" if resume else ""
    raise ConfigError(
        f"{run_dir} already holds a run (checkpoints/last.pt){other}: pass "
        f"trainer.resume={run_dir} to continue it, or choose another hydra.run.dir"
    )


def hydra_output_subdir(output_dir: str) -> str | None:
    """``hydra.output_subdir`` for a job writing into ``output_dir``: ``.hydra`` for a new
    directory, ``None`` (Hydra saves no config files) for one that already holds a run or
    whose lock another process holds.

    Hydra resolves this just before it saves ``.hydra/``, so this is where a job takes its
    run directory's lock (:mod:`dgm_runner.io.lock`): a second launch into the same
    directory writes no ``.hydra/`` over the first one's, and ``train()`` refuses it.
    """
    try:
        acquire(output_dir)
    except (RunDirLocked, OSError):  # train() reports it in one line
        return None
    return None if holds_run(output_dir) else ".hydra"


def record_outcome(run_dir: str | os.PathLike, record: dict) -> None:
    """Write a run's outcome (``{"status": "failed" | "interrupted" | "diverged", ...}``)
    into ``run_dir/metrics.json`` without ever replacing a completed run's results: when
    ``metrics.json`` already says completed, the record is kept beside them under
    ``last_attempt`` (a failed or interrupted extension / resume of a finished run).

    Raises:
        WriteError: ``metrics.json`` cannot be written (e.g. a full disk).
    """
    path = Path(run_dir) / "metrics.json"
    previous = read_json(path)
    if (
        isinstance(previous, dict)
        and previous.get("status") == "completed"
        and record.get("status") != "completed"
    ):
        record = {
            **{k: v for k, v in previous.items() if k != "last_attempt"},
            "last_attempt": record,
        }
    write_json(path, record)


def _single_values(argv: list[str], keys: tuple[str, ...]) -> dict[str, str]:
    """``{key: value}`` of the plain (not swept) ``key=value`` overrides in ``argv``."""
    out = {}
    for arg in argv:
        key, sep, value = arg.lstrip("+").partition("=")
        if (
            sep
            and key in keys
            and "," not in value
            and not value.startswith(("choice(", "range(", "glob("))
        ):
            out[key] = value.strip("'\"")
    return out


def check_run_paths(argv: list[str]) -> None:
    """Refuse, before Hydra creates anything, a ``trainer.resume`` that is not a run
    directory (a file, a missing or empty directory: resuming it would write a run skeleton
    into it) and a ``hydra.run.dir`` / ``hydra.sweep.dir`` that is an existing file.

    Args:
        argv: the command-line overrides of ``dgm-train``.

    Raises:
        ConfigError: one line naming the key and the path.
    """
    values = _single_values(argv, ("trainer.resume", "hydra.run.dir", "hydra.sweep.dir"))
    resume = values.get("trainer.resume")
    if resume and resume not in ("auto", "null"):
        path = Path(resume).expanduser()
        if not path.exists():
            raise ConfigError(
                f"trainer.resume={resume}: no such directory; pass the run directory to continue"
            )
        if not path.is_dir():
            raise ConfigError(
                f"trainer.resume={resume} is a file; pass the run directory that holds {MARKER}"
            )
        if not holds_run(path):
            raise ConfigError(
                f"trainer.resume={resume} holds no run (no {MARKER}); pass a run directory"
            )
    for key in ("hydra.run.dir", "hydra.sweep.dir"):
        if (
            key in values
            and Path(values[key]).expanduser().exists()
            and not Path(values[key]).expanduser().is_dir()
        ):
            raise ConfigError(f"{key}={values[key]} is a file, not a directory; choose a directory")
