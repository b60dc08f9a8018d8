"""Run directories: never write a new run over an existing one, nor into other files.

What marks a directory as holding a run is its run-directory contract
(:data:`dgm_runner.io.layout.RUN_ENTRIES`: metrics, ``.hydra/``, checkpoints, samples,
...), not ``checkpoints/last.pt`` alone: a finished run whose ``checkpoints/`` was deleted
still holds its results. What a directory held is judged as it was *before this launch*:
a launch locks its run directory before it writes anything there (for ``dgm-train``, when
Hydra resolves ``hydra.output_subdir``, just after creating the directory and before it
saves ``.hydra/``), and :func:`dgm_runner.io.lock.found_when_locked` keeps what the
directory held at that moment; the ``.hydra/`` and ``train.log`` that Hydra then writes for
this launch do not make it a directory that "already holds a run". The lock file and empty
directories (the empty ``.hydra/`` a refused launch may leave) count as nothing.

* :func:`check_run_dir` is called by ``train()`` (holding the lock) before anything is
  written: a new run goes only into an empty (or new) directory, a resume only into a run
  that has its ``last.pt``.
* :func:`check_no_other_files` refuses a non-empty directory that holds no run before
  anything, not even the lock file, is written there.
* :func:`hydra_output_subdir` (which also takes the run directory's lock) backs the
  ``dgm_hydra_subdir`` resolver of ``hydra.output_subdir`` (``configs/train.yaml``): Hydra
  saves ``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` *before* our code
  runs, so into a directory that already held anything it must save nothing, or a refused
  (or resumed) launch would overwrite the record of how the run was made.

New run directories are named ``<experiment>/<date>_<time>_<microseconds>`` (see
``configs/train.yaml``), so two launches in the same second get two directories.
"""

from __future__ import annotations

import os
from pathlib import Path

from dgm_runner.config import ConfigError
from dgm_runner.io.atomic import read_json, write_json
from dgm_runner.io.checkpoint import CheckpointError
from dgm_runner.io.layout import RUN_ENTRIES, RunPaths, check_layout
from dgm_runner.io.lock import RunDirLocked, acquire, contents, found_when_locked

#: Entries that hold a run's results: a directory with any of them is never started over,
#: not even by ``trainer.resume=auto`` when its ``last.pt`` is gone.
RESULTS = (
    RunPaths.METRICS,
    RunPaths.METRICS_LOG,
    RunPaths.SAMPLES,
    RunPaths.EVAL,
    RunPaths.FIGURES,
)


def found(run_dir: str | os.PathLike) -> tuple[str, ...]:
    """What ``run_dir`` held before this launch (:func:`dgm_runner.io.lock.contents`):
    when this process holds its lock, what it held when locked; otherwise what it holds
    now (``()`` for a missing directory)."""
    held = found_when_locked(run_dir)
    return contents(run_dir) if held is None else held


def run_entries(run_dir: str | os.PathLike) -> list[str]:
    """The entries of the run-directory contract that ``run_dir`` held before this launch
    (:func:`found`)."""
    return [name for name in found(run_dir) if name in RUN_ENTRIES]


def holds_run(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` held a (finished, interrupted or failed) run before this launch:
    any entry of the run-directory contract, with or without ``checkpoints/last.pt``."""
    return bool(run_entries(run_dir))


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` has the ``checkpoints/last.pt`` a resume continues from."""
    return RunPaths(run_dir).last.is_file()


def _names(names: list[str] | tuple[str, ...], most: int = 4) -> str:
    """``"a, b, c, d, ..."``: the first ``most`` names, for a one-line message."""
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")


def same_path(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name the same file or directory (compared resolved when one
    is missing)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.expanduser().resolve() == b.expanduser().resolve()


def no_checkpoint_error(run_dir: str | os.PathLike, key: str) -> CheckpointError:
    """The one-line error for resuming a run whose ``checkpoints/last.pt`` is gone (its
    results are there); ``key``: how the user named it (e.g. ``trainer.resume=R``)."""
    return CheckpointError(
        f"{key} holds a run ({_names(run_entries(run_dir))}) but not its "
        f"{RunPaths.relative().last}, so it cannot be continued; its results are kept: train "
        "a new run in another hydra.run.dir"
    )


def check_no_other_files(run_dir: str | os.PathLike) -> None:
    """Refuse a directory that held files before this launch but no run (say, a run
    launched into ``configs/experiment/``): nothing may be written there, whatever
    ``trainer.resume`` says.

    Raises:
        ConfigError: one line naming a few of the files (nothing has been written).
    """
    names = found(run_dir)
    if names and not holds_run(run_dir):
        raise ConfigError(
            f"{run_dir} is not empty and holds no run ({_names(names)}): choose a new or "
            "empty hydra.run.dir"
        )


def check_run_dir(run_dir: str | os.PathLike, resume: str | os.PathLike | None) -> None:
    """Refuse to start a run in a directory that held anything before this launch, unless
    resuming the run it holds.

    Args:
        run_dir: where the run is about to write (call it holding the directory's lock,
            :mod:`dgm_runner.io.lock`, so that what was there before the launch is known).
        resume: ``trainer.resume``: ``None``, a run directory, or ``"auto"`` (continue
            whatever ``run_dir`` holds, or start a new run in an empty one).

    Raises:
        ConfigError: ``run_dir`` holds other files, or a run that ``resume`` does not
            continue (nothing has been written).
        CheckpointError: ``resume`` continues ``run_dir``, which holds a run whose
            ``checkpoints/last.pt`` is gone (nothing has been written). With
            ``trainer.resume=auto``, a run killed before its first ``last.pt`` (no results
            yet) starts again instead.
    """
    run_dir = Path(run_dir)
    check_no_other_files(run_dir)
    if not holds_run(run_dir):
        return
    auto = resume is not None and str(resume) == "auto"
    if auto or (resume is not None and same_path(Path(resume), run_dir)):
        if has_checkpoint(run_dir) or (auto and not set(found(run_dir)) & set(RESULTS)):
            return
        raise no_checkpoint_error(run_dir, f"trainer.resume={resume}" if not auto else run_dir)
    other = f" (trainer.resume={resume} is another directory)" if resume else ""
    advice = (
        f"pass trainer.resume={run_dir} to continue it, or choose another hydra.run.dir"
        if has_checkpoint(run_dir)
        else f"it has no {RunPaths.relative().last} to continue from: choose another hydra.run.dir"
    )
    raise ConfigError(
        f"{run_dir} already holds a run ({_names(run_entries(run_dir))}){other}: {advice}"
    )


def hydra_output_subdir(output_dir: str) -> str | None:
    """``hydra.output_subdir`` for a job writing into ``output_dir``: ``.hydra`` for a
    directory that held nothing before this launch, ``None`` (Hydra saves no config files)
    for one that held anything or whose lock another process holds.

    Hydra resolves this just after creating ``output_dir`` and before it saves ``.hydra/``,
    so this is where a job takes its run directory's lock (:mod:`dgm_runner.io.lock`),
    which records what the directory held before the launch: a second launch into the same
    directory writes no ``.hydra/`` over the first one's, and ``train()`` refuses it. A
    directory of other files is not locked (no lock file among them): the job refuses it
    in one line (:func:`check_no_other_files`).
    """
    if found(output_dir) and not holds_run(output_dir):
        return None
    try:
        acquire(output_dir)
    except (RunDirLocked, OSError):  # train() reports it in one line
        return None
    return None if found(output_dir) else RunPaths.HYDRA


def record_outcome(run_dir: str | os.PathLike, record: dict) -> None:
    """Write a run's outcome (``{"status": "failed" | "interrupted" | "diverged", ...}``)
    into ``run_dir/metrics.json`` without ever replacing a completed run's results: when
    ``metrics.json`` already says completed, the record is kept beside them under
    ``last_attempt`` (a failed or interrupted extension / resume of a finished run).

    Raises:
        WriteError: ``metrics.json`` cannot be written (e.g. a full disk).
    """
    path = RunPaths(run_dir).metrics
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
        CheckpointError: ``trainer.resume`` holds a run whose ``checkpoints/last.pt`` is
            gone (one line).
        WriteError: an entry of ``trainer.resume`` is not what the run-directory contract
            says (:func:`dgm_runner.io.layout.check_layout`).
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
                f"trainer.resume={resume} is a file; pass the run directory that holds "
                f"{RunPaths.relative().last}"
            )
        check_layout(path)
        if not has_checkpoint(path):
            if holds_run(path):
                raise no_checkpoint_error(path, f"trainer.resume={resume}")
            raise ConfigError(
                f"trainer.resume={resume} holds no run (no {RunPaths.relative().last}); pass a "
                "run directory"
            )
    for key in ("hydra.run.dir", "hydra.sweep.dir"):
        if key not in values:
            continue
        path = Path(values[key]).expanduser()
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{key}={values[key]} is a file, not a directory; choose a directory")
        blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise ConfigError(
                f"{key}={values[key]} cannot be created: {blocking} is a file; choose a directory"
            )
