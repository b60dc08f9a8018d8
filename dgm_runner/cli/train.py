"""``dgm-train`` / ``python -m dgm_runner``: the Hydra app around :func:`dgm_runner.loop.train`.

Before Hydra creates anything, unknown group entries, misspelt keys and run paths that
are no run are refused in one line (:mod:`dgm_runner.cli.checks`); a job's run directory
is locked (:mod:`dgm_runner.io.lock`), a failure is recorded without replacing completed
results, and user errors print one ``dgm-train: error: <Kind>: ...`` line.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dgm_runner import CONFIG_DIR
from dgm_runner.build import resolve_device
from dgm_runner.cli import common
from dgm_runner.cli.checks import check_group_choices, check_override_keys
from dgm_runner.cli.resume_config import resume_config, resumed_run
from dgm_runner.cli.summary import run_summary
from dgm_runner.config import ConfigError, trainer_config, validate
from dgm_runner.distributed import SINGLE, World, broadcast_object, env_world, setup
from dgm_runner.epoch import DivergedError
from dgm_runner.io.atomic import WriteError
from dgm_runner.io.checkpoint import CheckpointError
from dgm_runner.io.layout import RunPaths
from dgm_runner.io.lock import RunDirLocked, acquire, found_when_locked, release
from dgm_runner.io.resume import find_unfinished_run
from dgm_runner.io.run_config import trust_config_sources, trust_targets_of
from dgm_runner.io.run_dir import (
    check_no_other_files,
    check_run_paths,
    has_checkpoint,
    hydra_output_subdir,
)
from dgm_runner.io.signals import StopRequested, watch_parent
from dgm_runner.loop import train

log = logging.getLogger("dgm_runner")

# Errors that are the user's to fix (or a requested stop): one line, no traceback.
USER_ERRORS = (*common.USER_ERRORS, DivergedError, StopRequested)

#: Set by :func:`main` to its PID: a job running in another process (a joblib worker)
#: watches it and stops when the driver dies.
DRIVER_ENV = "DGM_SWEEP_DRIVER_PID"


class SweepStopped(BaseException):
    """A stop signal ended a job of an in-process (basic launcher) multirun: the sweep stops
    too (a BaseException, so Hydra's launcher does not take it for a failed job and go on).

    Attributes:
        sweep_dir: the sweep root, whose summary is written for the jobs done so far.
    """

    def __init__(self, line: str, sweep_dir: str) -> None:
        super().__init__(line)
        self.sweep_dir = sweep_dir


def _objective_value(final: dict[str, Any], metric: str) -> float | None:
    """The float a Hydra sweeper that optimises (Optuna) reads as the job's return value."""
    value = final.get(metric)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        known = ", ".join(k for k, v in final.items() if "/" in k and isinstance(v, (int, float)))
        log.error("optimize_metric=%s is not a final metric of this run; known: %s", metric, known)
        return None
    return float(value)


def _sweep_driver() -> int | None:
    """The PID of the ``dgm-train`` that launched this job when the job runs in another
    process (a joblib launcher's loky worker; :func:`main` sets :data:`DRIVER_ENV`), else
    None (the driver itself: a single run, a basic multirun, a torchrun process)."""
    driver = os.environ.get(DRIVER_ENV, "")
    return int(driver) if driver.isdigit() and int(driver) != os.getpid() else None


def _ends_with_driver(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Run the Hydra task ``task`` of a loky worker inside the worker's watch on the driver
    (:func:`dgm_runner.io.signals.watch_parent`): if the driver dies, the job stops as after
    a SIGTERM and then the worker process ends, instead of outliving the sweep (issue 25)."""

    @functools.wraps(task)
    def job(cfg: DictConfig) -> Any:
        driver = _sweep_driver()
        watch = watch_parent(driver) if driver is not None else None
        if watch is None:
            return task(cfg)
        with watch.job():
            return task(cfg)

    return job


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@_ends_with_driver
def _hydra_main(cfg: DictConfig) -> dict[str, Any] | float | None:
    """The Hydra task: train one job. Returns the final metrics, or, when
    ``optimize_metric`` is set (Optuna sweeps), that metric as a float; a failed job of
    a multirun returns None (the sweep goes on; the summary and Optuna mark it failed).
    A stop signal in a basic-launcher multirun raises :class:`SweepStopped` (the sweep ends).

    Nothing is written into a directory another process holds, and a completed run's
    results are never replaced by a failure (:func:`dgm_runner.run.record_outcome`, called by
    :func:`dgm_runner.loop.train`: the one place a run's outcome is recorded).
    """
    common.add_user_import_path()  # also in launcher workers: the user's own _target_s
    trust_config_sources()  # ... which may also appear in a run this one reads (model.vqvae)
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    in_worker = multirun and _sweep_driver() is not None  # a joblib (loky) worker
    own_dir = run_dir
    try:
        world, run_dir = _join_run(cfg, run_dir)
        if world.is_main:  # usually held already (taken when Hydra resolved output_subdir)
            check_no_other_files(run_dir)  # no lock file among files of something else
            acquire(run_dir)
    except (RunDirLocked, OSError, ConfigError) as err:
        return _report_failure(err, multirun, hc)
    fresh = world.is_main and found_when_locked(run_dir) == ()  # it held nothing before
    refused = False
    try:
        cfg = _own_config_if_resumed(cfg, run_dir, hc)
        final = train(cfg, run_dir)
        if world.is_main:
            print(run_summary(run_dir, final), flush=True)
        metric = cfg.get("optimize_metric")
        return _objective_value(final, metric) if metric else final
    except Exception as err:
        line = f"{type(err).__name__}: {err}"
        # a multirun keeps the directory: its summary lists the refused job as failed
        refused = fresh and not multirun and _refused_before_any_work(err, run_dir)
        if not isinstance(err, USER_ERRORS):
            common.to_log_files(traceback.format_exc())  # the console gets one line
        if multirun and isinstance(err, StopRequested) and not in_worker:
            raise SweepStopped(
                f"dgm-train: error: {line}; the sweep stopped", hc.sweep.dir
            ) from None
        return _report_failure(err, multirun, hc, world, None if refused else run_dir)
    finally:
        if world.is_main:
            release(run_dir)
            if refused:
                _remove_launch_dir(run_dir)
        elif own_dir.name.startswith(SCRATCH_PREFIX):  # a torchrun process's scratch dir
            logging.shutdown()
            shutil.rmtree(own_dir, ignore_errors=True)


def _own_config_if_resumed(cfg: DictConfig, run_dir: Path, hc: Any) -> DictConfig:
    """A resume's config: the run's own, with this command line's overrides on top
    (:func:`dgm_runner.cli.resume_config.resume_config`); ``cfg`` for a new run."""
    run = resumed_run(cfg, run_dir)
    if run is None:
        return cfg
    trust_targets_of(cfg)  # the components this command names, before the run's config is read
    return resume_config(cfg, run, list(hc.overrides.task), hc.runtime.choices)


def _refused_before_any_work(err: BaseException, run_dir: Path) -> bool:
    """Whether ``err`` refused a launch into a directory that held nothing before it
    (checked by the caller) before it did any work: a user error (an invalid value,
    missing data, an unusable run to read) and no file in the directory but Hydra's, the
    lock and the ``metrics.json`` that records the refusal. Such a launch leaves nothing on
    disk (issue 25, item 6): :func:`_remove_launch_dir` removes what Hydra made for it."""
    if not isinstance(err, (*common.USER_ERRORS, RunDirLocked)) or isinstance(
        err, (DivergedError, StopRequested)
    ):
        return False
    launch_files = {RunPaths.LOCK, RunPaths.LOG}  # and Hydra's .hydra/: the launch itself
    refusal = RunPaths(run_dir).metrics  # the record of the refusal (dgm_runner.run)
    return all(
        p.is_dir() or p.name in launch_files or p.parent.name == RunPaths.HYDRA or p == refusal
        for p in run_dir.rglob("*")
    )


def _remove_launch_dir(run_dir: Path) -> None:
    """Remove the directory of a refused launch (Hydra's ``.hydra/``, ``train.log`` and the
    lock, nothing else: :func:`_refused_before_any_work`) and the parents Hydra created
    for it that are now empty, up to the working directory."""
    root = logging.getLogger()
    for handler in list(root.handlers):  # the job's log file is in it (an in-process caller
        name = getattr(handler, "baseFilename", None)  # would write to a removed path)
        if name is not None and Path(name).resolve().is_relative_to(run_dir.resolve()):
            root.removeHandler(handler)
            handler.close()
    shutil.rmtree(run_dir, ignore_errors=True)
    cwd, parent = Path.cwd().resolve(), run_dir.resolve().parent
    while parent != cwd and cwd in parent.parents:
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break
        parent = parent.parent


def _join_run(cfg: DictConfig, run_dir: Path) -> tuple[World, Path]:
    """This process's place in a data-parallel run and the run directory: process 0's,
    broadcast (under torchrun the others ran Hydra in a scratch directory that
    :func:`_data_parallel_argv` chose, removed when the run ends). A single process:
    ``(SINGLE, run_dir)``.

    Raises:
        ConfigError: an invalid value, or a strategy that does not fit the launch.
    """
    if not env_world().parallel:
        return SINGLE, run_dir
    validate(cfg)
    trainer = trainer_config(cfg)
    world = setup(trainer.strategy, resolve_device(trainer.device), trainer.dist_timeout_s)
    return world, Path(broadcast_object(str(run_dir), world))


#: The scratch ``hydra.run.dir`` of torchrun processes other than 0 (nothing is kept there).
SCRATCH_PREFIX = "dgm_rank"


def _data_parallel_argv(argv: list[str]) -> list[str]:
    """The command line of one torchrun process: process 0's as given; the others' Hydra
    writes nothing (a scratch run directory, no ``.hydra/``, no log files), since process 0
    owns the run directory.

    Raises:
        ConfigError: ``-m``: a data-parallel launch trains one run (sweep over such runs with
            ``hydra/launcher=slurm_ddp``).
    """
    world = env_world()
    if not world.parallel:
        return argv
    if "-m" in argv or "--multirun" in argv:
        raise ConfigError(
            "a torchrun launch trains one run: drop -m, or sweep over data-parallel runs "
            "with hydra/launcher=slurm_ddp"
        )
    if world.is_main:
        return argv
    scratch = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{world.rank}_")
    return [
        *argv,
        f"hydra.run.dir={scratch}",
        "hydra.output_subdir=null",
        "hydra.job_logging.root.handlers=[file]",  # its log: the scratch directory's only
    ]


def _report_failure(
    err: BaseException,
    multirun: bool,
    hc: Any,
    world: World = SINGLE,
    run_dir: Path | None = None,
) -> None:
    """The process's error boundary. In a multirun, log the failure and return None (the
    sweep goes on). Otherwise exit with one line on stderr: a user error as it is (status 2
    for a ConfigError, else 1), any other error with what is kept in ``run_dir`` and where
    its full trace is (``train.log``; ``HYDRA_FULL_ERROR=1`` re-raises it for Hydra's
    traceback). In a data-parallel run only process 0 prints: the others exit quietly with
    status 1 (when a process dies, the survivors' collectives fail too)."""
    line = f"{type(err).__name__}: {err}"
    if multirun:  # the sweep goes on; the summary marks this job failed
        log.error("job failed: %s", line)
        return None
    user = isinstance(err, (*USER_ERRORS, RunDirLocked))
    if not user and os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    if not world.is_main:
        sys.exit(1)
    if not user:
        kept = (
            f"{RunPaths(run_dir).last} is kept (trainer.resume={run_dir} continues from it)"
            if run_dir is not None and has_checkpoint(run_dir)
            else "no checkpoint was written"
        )
        what = common.first_line(err)
        if world.parallel:  # a collective failed: usually because another process ended
            what = f"process 0 of {world.size} stopped (did another process end?): {what}"
        line = f"{what}; {kept}; {common.full_trace_hint()}"
    print(f"dgm-train: error: {line}", file=sys.stderr)
    sys.exit(2 if isinstance(err, ConfigError) else 1)


def _run_dir_for(resume: str | None, default: str, overrides: list[str] | None = None) -> str:
    """``hydra.run.dir``: the resumed run's directory; for ``trainer.resume=auto`` the newest
    unfinished run of this experiment launched with the same overrides (else a new one)."""
    if resume == "auto":
        found = find_unfinished_run(Path(default).parent, list(overrides or []))
        return str(found) if found is not None else default
    return resume or default


def _register_resolvers() -> None:
    # hydra.run.dir is the resumed run's directory when trainer.resume is set.
    if not OmegaConf.has_resolver("dgm_run_dir"):
        OmegaConf.register_new_resolver("dgm_run_dir", _run_dir_for)
    # hydra.output_subdir: Hydra saves no .hydra/ files over a directory that holds a run.
    if not OmegaConf.has_resolver("dgm_hydra_subdir"):
        OmegaConf.register_new_resolver("dgm_hydra_subdir", hydra_output_subdir)


def _describe(argv: list[str]) -> int:
    """``dgm-train --describe [GROUP ...] [overrides]``: print the keys of the components
    (:mod:`dgm_runner.cli.describe`); ``GROUP`` words and ``group=entry`` overrides choose
    which. Returns the exit status (2: a bad override, one line)."""
    from hydra import compose, initialize_config_dir

    from dgm_runner import CONFIG_DIR
    from dgm_runner.cli import describe as described
    from dgm_runner.cli.checks import user_config_dirs

    args = [a for a in argv if a != "--describe"]
    known = (*described.COMPONENTS, *described.COLLECTIONS)
    flag_values = {i + 1 for i, a in enumerate(args) if a in ("--config-dir", "-cd")}
    plain = [a for i, a in enumerate(args) if i not in flag_values and not a.startswith("-")]
    words = [a for a in plain if "=" not in a]
    overrides = [a for a in plain if "=" in a]
    bad = [w for w in words if w not in known]
    groups = words + [a.split("=", 1)[0] for a in overrides if a.split("=", 1)[0] in known]
    dirs = user_config_dirs(args)
    try:
        if bad:
            raise ConfigError(
                f"--describe {bad[0]}: not a component; allowed values are {', '.join(known)}"
            )
        check_group_choices(args)
        check_override_keys(args, "train")
        extra = [f"hydra.searchpath=[{','.join(f'file://{d}' for d in dirs)}]"] if dirs else []
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("train", [*extra, *overrides], return_hydra_config=True)
        print(described.describe(cfg, groups, [*dirs, CONFIG_DIR]), end="")
    except Exception as err:  # ConfigError, Hydra's composition errors: one line
        print(f"dgm-train: error: {common.first_line(err)}", file=sys.stderr)
        return 2
    return 0


def main() -> None:
    """Console entry point of ``dgm-train`` / ``python -m dgm_runner``.

    A quoted ``~`` of an override is the home directory
    (:func:`dgm_runner.cli.common.expand_user_args`). Before Hydra creates a directory:
    unknown group entries, misspelt keys, and ``trainer.resume`` / ``hydra.run.dir`` values
    that are no run directory are one line each (exit status 2; 1 for a
    ``trainer.resume`` whose ``last.pt`` is gone or whose entries are not what the
    run-directory contract says)."""
    _register_resolvers()
    common.add_user_import_path()
    argv = common.expand_user_args(sys.argv[1:])
    if "--describe" in argv:
        sys.exit(_describe(argv))
    try:
        check_group_choices(argv)
        check_override_keys(argv, "train")
        check_run_paths(argv)
        sys.argv = [sys.argv[0], *_data_parallel_argv(argv)]
    except (ConfigError, CheckpointError, WriteError) as err:
        print(f"dgm-train: error: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(2 if isinstance(err, ConfigError) else 1)
    os.environ[DRIVER_ENV] = str(os.getpid())
    try:
        _hydra_main()
    except KeyboardInterrupt as err:  # a second Ctrl-C: no clean stop was waited for
        print(
            f"dgm-train: error: interrupted ({err or 'SIGINT'}); files written before are kept "
            "(trainer.resume=<run_dir> continues from its last.pt, if any)",
            file=sys.stderr,
        )
        sys.exit(130)
    except SweepStopped as stopped:
        from dgm_runner.io.sweep_summary import summarize_sweep

        if Path(stopped.sweep_dir).is_dir():
            summarize_sweep(Path(stopped.sweep_dir))
        print(
            f"{stopped} (summary of the jobs so far: {Path(stopped.sweep_dir) / 'summary.md'})",
            file=sys.stderr,
        )
        sys.exit(1)
    from dgm_runner.io.sweep_summary import INCOMPLETE  # filled by a multirun's summary

    if INCOMPLETE.get("failed"):  # the other jobs completed; the exit status says not all did
        print(
            f"dgm-train: error: {INCOMPLETE['failed']} of {INCOMPLETE['jobs']} sweep jobs "
            "did not complete "
            f"(errors in {Path(INCOMPLETE['sweep_dir']) / 'summary.md'})",
            file=sys.stderr,
        )
        sys.exit(1)


_register_resolvers()
