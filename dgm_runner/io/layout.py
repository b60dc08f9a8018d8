"""The entries of a run directory (the run-directory contract, ``docs/design.md``) in one
class, :class:`RunPaths`, and one check that they are what the contract says before a
command works on a run.

Every name of a run's entries lives here, as a class constant of :class:`RunPaths`; the
tuples below and :data:`dgm_runner.io.lock.LOCK_NAME` and
:data:`dgm_runner.config.RUN_FILES` are derived from them. Code elsewhere builds the path
of a run's file with ``RunPaths(run_dir).metrics``, ``.last``, ``.grid(epoch)``, ...,
never with ``run_dir / "metrics.json"``.

:data:`RUN_ENTRIES` are what marks a directory as holding a run (not ``last.pt`` alone:
a finished run whose ``checkpoints/`` was deleted still holds its results).
:func:`check_layout` is called by ``dgm-train`` (in ``train()``), ``dgm-eval`` and
``dgm-sample`` before any work: an entry that should be a directory but is a file would
fail after the work (a FileExistsError when the first file is written into it), and a
symbolic link leading out of the run would send the run's files elsewhere without a word.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from dgm_runner.io.atomic import WriteError


@dataclass(frozen=True)
class RunPaths:
    """The paths of the entries of one run directory (the run-directory contract).

    ``RunPaths(run_dir)`` (a ``str`` or path; kept as given, not resolved) names them
    without touching the disk: nothing is created or checked (:func:`check_layout` checks).

    The entry names are class constants, e.g. ``RunPaths.METRICS == "metrics.json"``:

    * directories (:attr:`DIRECTORIES`): ``checkpoints/`` (``last.pt``, ``best.pt``),
      ``samples/`` (``epoch_0001.png``, ..., ``final.png``, ``dgm-sample``'s grids),
      ``tb/`` (TensorBoard events), ``.hydra/`` (Hydra's ``config.yaml``,
      ``overrides.yaml``, ``hydra.yaml``), ``eval/`` (``dgm-eval``'s records and the
      sampler table), ``figures/`` (``<name>.png``);
    * the run's files (:attr:`FILES`): ``metrics.json`` (final metrics or outcome),
      ``metrics.jsonl`` (one line per evaluation), ``train_history.jsonl`` (training
      terms every ``trainer.log_every`` steps), ``train.log`` (``dgm-train``'s log);
    * :attr:`LOCK` (``.lock``, :mod:`dgm_runner.io.lock`) and :attr:`TRACKER_FILES`
      (the MLflow / W&B run id of a run those loggers track).

    Also in a run directory but not part of the contract: the state_dict that
    ``trainer.export_name`` names (:meth:`export`) and the logs of ``dgm-eval`` /
    ``dgm-sample`` (:meth:`job_log`).

    Attributes:
        root: the run directory.
    """

    root: Path

    # -- directories
    CHECKPOINTS = "checkpoints"
    SAMPLES = "samples"
    TB = "tb"
    HYDRA = ".hydra"
    EVAL = "eval"
    FIGURES = "figures"
    # -- the run's files
    METRICS = "metrics.json"
    METRICS_LOG = "metrics.jsonl"
    HISTORY = "train_history.jsonl"
    LOG = "train.log"
    # -- the lock and the trackers' run ids
    LOCK = ".lock"
    MLFLOW_RUN = "mlflow_run.json"
    WANDB_RUN = "wandb_run.json"
    # -- inside checkpoints/
    LAST = "last.pt"
    BEST = "best.pt"
    # -- inside samples/: one grid per evaluated epoch, the last one copied at the end
    GRID = "epoch_{epoch:04d}.png"
    FINAL_GRID = "final.png"
    # -- inside .hydra/ (written by Hydra at launch)
    CONFIG_YAML = "config.yaml"
    OVERRIDES_YAML = "overrides.yaml"
    HYDRA_YAML = "hydra.yaml"
    # -- inside eval/: the record of the run's own sampler on the full test split, the
    #    others (another sampler, a test subset) as metrics_<variant>.json
    EVALUATION = "metrics.json"
    EVALUATIONS = "metrics*.json"
    SAMPLER_TABLE = "sampler_table"

    #: Entries of the contract that are directories.
    DIRECTORIES = (CHECKPOINTS, SAMPLES, TB, HYDRA, EVAL, FIGURES)
    #: Entries of the contract that are the run's files (the lock and the trackers' files
    #: aside: they mark no run).
    FILES = (METRICS, METRICS_LOG, HISTORY, LOG)
    #: The trackers' run ids (written by ``logger=mlflow`` / ``logger=wandb`` only).
    TRACKER_FILES = (MLFLOW_RUN, WANDB_RUN)
    #: Every top-level entry the contract names (what :func:`check_layout` checks).
    ENTRIES = (*DIRECTORIES, *FILES, LOCK, *TRACKER_FILES)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def relative(cls) -> RunPaths:
        """The entries' paths relative to a run directory, for messages that name an entry
        of every run rather than one file: ``RunPaths.relative().last`` is
        ``checkpoints/last.pt``."""
        return cls(Path())

    # -- checkpoints/
    @property
    def checkpoints(self) -> Path:
        """``checkpoints/``: what a run is continued and rebuilt from."""
        return self.root / self.CHECKPOINTS

    @property
    def last(self) -> Path:
        """``checkpoints/last.pt``: the checkpoint a run is continued from (rewritten
        after every epoch, evaluation and stop)."""
        return self.checkpoints / self.LAST

    @property
    def best(self) -> Path:
        """``checkpoints/best.pt``: a copy of ``last.pt`` at the evaluation where the
        monitored test metric was lowest."""
        return self.checkpoints / self.BEST

    def checkpoint(self, which: str) -> Path:
        """``checkpoints/<which>.pt`` for ``which`` ``"last"`` or ``"best"``.

        Raises:
            ValueError: ``which`` is neither.
        """
        if which not in ("last", "best"):
            raise ValueError(f"a run's checkpoint is 'last' or 'best', not {which!r}")
        return self.last if which == "last" else self.best

    # -- the run's files
    @property
    def metrics(self) -> Path:
        """``metrics.json``: the final metrics (status completed) or the run's outcome
        (failed, interrupted, diverged)."""
        return self.root / self.METRICS

    @property
    def metrics_log(self) -> Path:
        """``metrics.jsonl``: one JSON line per evaluation (epoch, step, test metrics)."""
        return self.root / self.METRICS_LOG

    @property
    def history(self) -> Path:
        """``train_history.jsonl``: the training terms every ``trainer.log_every`` steps."""
        return self.root / self.HISTORY

    @property
    def log(self) -> Path:
        """``train.log``: ``dgm-train``'s log (Hydra's job log file)."""
        return self.root / self.LOG

    def job_log(self, job: str) -> Path:
        """``<job>.log``: the log Hydra's file handler writes for job ``job`` (``train``,
        ``eval`` for ``dgm-eval``, ``sample`` for ``dgm-sample``)."""
        return self.root / f"{job}.log"

    @property
    def lock(self) -> Path:
        """``.lock``: the file :mod:`dgm_runner.io.lock` locks."""
        return self.root / self.LOCK

    @property
    def mlflow_run(self) -> Path:
        """``mlflow_run.json``: the MLflow run a resumed run continues."""
        return self.root / self.MLFLOW_RUN

    @property
    def wandb_run(self) -> Path:
        """``wandb_run.json``: the W&B run a resumed run continues."""
        return self.root / self.WANDB_RUN

    def export(self, name: str) -> Path:
        """``<name>``: the model state_dict ``trainer.export_name`` asks for (a plain file
        name, :func:`dgm_runner.config.check_file_name`)."""
        return self.root / name

    # -- samples/
    @property
    def samples(self) -> Path:
        """``samples/``: the grids of samples."""
        return self.root / self.SAMPLES

    def grid(self, epoch: int) -> Path:
        """``samples/epoch_XXXX.png``: the grid drawn at the evaluation of ``epoch``."""
        return self.samples / self.GRID.format(epoch=epoch)

    @property
    def final_grid(self) -> Path:
        """``samples/final.png``: the grid of the last epoch."""
        return self.samples / self.FINAL_GRID

    def drawn_grid(self, tag: str, n: int, seed: int) -> Path:
        """``samples/sample<tag>_n<n>_seed<seed>.png``: a grid of ``dgm-sample``; ``tag``
        names the options that changed the picture (``""`` or ``"_ddim_steps20"``)."""
        return self.samples / f"sample{tag}_n{n}_seed{seed}.png"

    # -- tb/, figures/
    @property
    def tb(self) -> Path:
        """``tb/``: TensorBoard event files (``logger=tensorboard``)."""
        return self.root / self.TB

    @property
    def figures(self) -> Path:
        """``figures/``: the run's figures (``figures:`` of the config)."""
        return self.root / self.FIGURES

    def figure(self, name: str) -> Path:
        """``figures/<name>.png``."""
        return self.figures / f"{name}.png"

    # -- .hydra/
    @property
    def hydra(self) -> Path:
        """``.hydra/``: what Hydra saved at launch."""
        return self.root / self.HYDRA

    @property
    def config_yaml(self) -> Path:
        """``.hydra/config.yaml``: the composed config the run was launched with."""
        return self.hydra / self.CONFIG_YAML

    @property
    def overrides_yaml(self) -> Path:
        """``.hydra/overrides.yaml``: the command line's overrides."""
        return self.hydra / self.OVERRIDES_YAML

    @property
    def hydra_yaml(self) -> Path:
        """``.hydra/hydra.yaml``: Hydra's own config (``hydra.runtime.choices``, ...)."""
        return self.hydra / self.HYDRA_YAML

    # -- eval/
    @property
    def eval_dir(self) -> Path:
        """``eval/``: ``dgm-eval``'s records and ``dgm-sampler-table``'s table."""
        return self.root / self.EVAL

    def evaluation(self, variant: Sequence[str] = ()) -> Path:
        """``eval/metrics.json`` (the run's own sampler, the full test split), or
        ``eval/metrics_<variant joined by _>.json`` for another sampler or a test subset."""
        return self.eval_dir / (f"metrics_{'_'.join(variant)}.json" if variant else self.EVALUATION)

    def evaluations(self) -> list[Path]:
        """Every ``eval/metrics*.json`` there is now (unsorted; ``[]`` without ``eval/``)."""
        return list(self.eval_dir.glob(self.EVALUATIONS))

    @property
    def sampler_table(self) -> Path:
        """``eval/sampler_table``: the stem of ``dgm-sampler-table``'s ``.md`` / ``.csv``."""
        return self.eval_dir / self.SAMPLER_TABLE


#: Entries of the contract that are directories.
DIRECTORIES = RunPaths.DIRECTORIES
#: Entries of the contract that are the run's files (``.lock`` aside: it marks no run).
FILES = RunPaths.FILES
#: What marks a directory as holding a (finished, interrupted or failed) run.
RUN_ENTRIES = (*DIRECTORIES, *FILES)
#: The run's files that ``trainer.export_name`` must not replace
#: (:data:`dgm_runner.config.RUN_FILES`): its own, its lock and the trackers' run ids.
RUN_FILES = (*FILES, RunPaths.LOCK, *RunPaths.TRACKER_FILES)


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
    """Refuse a run directory whose contract entries (:attr:`RunPaths.ENTRIES`) are not
    what they should be: ``checkpoints``, ``samples``, ``tb``, ``.hydra``, ``eval`` and
    ``figures`` must be directories, the run's files (``metrics.json``, ..., ``.lock``,
    the trackers' ``mlflow_run.json`` / ``wandb_run.json``) files, and none of them a
    symbolic link leading out of the run directory (or to nothing). Missing entries are
    fine (they are created when needed), and so is a missing ``run_dir``.

    Raises:
        WriteError: one line naming the first wrong entry (nothing has been written).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    root = run_dir.resolve()
    for name in RunPaths.ENTRIES:
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
