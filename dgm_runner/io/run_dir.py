"""Run directories: never write a new run over an existing one.

* :func:`check_run_dir` is called by ``train()`` before anything is written: a directory
  that already holds ``checkpoints/last.pt`` (a finished or interrupted run) is only
  written into when ``trainer.resume`` points at it.
* :func:`hydra_output_subdir` backs the ``dgm_hydra_subdir`` resolver of
  ``hydra.output_subdir`` (``configs/train.yaml``): Hydra saves ``.hydra/config.yaml``,
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

#: What marks a directory as holding a run.
MARKER = Path("checkpoints") / "last.pt"


def holds_run(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` already holds a (finished or interrupted) run's ``last.pt``."""
    return (Path(run_dir) / MARKER).exists()


def _same_dir(a: Path, b: Path) -> bool:
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
    if resume is not None and (str(resume) == "auto" or _same_dir(Path(resume), run_dir)):
        return
    other = f" (trainer.resume={resume} is another directory)" if resume else ""
    raise ConfigError(
        f"{run_dir} already holds a run (checkpoints/last.pt){other}: pass "
        f"trainer.resume={run_dir} to continue it, or choose another hydra.run.dir"
    )


def hydra_output_subdir(output_dir: str) -> str | None:
    """``hydra.output_subdir`` for a job writing into ``output_dir``: ``.hydra`` for a new
    directory, ``None`` (Hydra saves no config files) for one that already holds a run."""
    return None if holds_run(output_dir) else ".hydra"
