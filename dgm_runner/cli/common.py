"""Helpers shared by the Hydra command-line apps (dgm-eval, dgm-sample)."""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from dgm_runner import CONFIG_DIR
from dgm_runner.cli.checks import check_override_keys
from dgm_runner.config import ConfigError
from dgm_runner.data.base import DataError
from dgm_runner.io.atomic import WriteError
from dgm_runner.io.checkpoint import CheckpointError
from dgm_runner.io.lock import RunDirLocked

#: Errors that are the user's to fix: reported as one line, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    CheckpointError,
    WriteError,
    RunDirLocked,
)


def add_user_import_path() -> None:
    """Make the modules of the current directory importable, as ``python -m`` does, so the
    ``_target_`` of a user's component (``my_models.MyVAE`` beside its ``configs/``,
    docs/extending.md) resolves from the console scripts too. Appended, so no installed
    module is shadowed; launchers' workers call it again (each job's task function)."""
    import os

    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def positional_run_dir(argv: list[str]) -> list[str]:
    """Turn ``dgm-eval RUN_DIR k=v`` into ``dgm-eval run_dir=RUN_DIR k=v`` (Hydra
    only takes ``key=value`` overrides); flags and ``key=value`` pass through."""
    out: list[str] = []
    for arg in argv:
        if (
            not arg.startswith("-")
            and "=" not in arg
            and not any(a.startswith("run_dir=") for a in out)
        ):
            arg = f"run_dir={arg}"
        out.append(arg)
    return out


def _to_log_files(line: str) -> None:
    """Append ``line`` to the job's log file(s) (Hydra's ``<job>.log`` file handler on the
    root logger) and not to the console, where the caller prints it once."""
    record = logging.makeLogRecord(
        {"msg": line, "levelno": logging.ERROR, "levelname": "ERROR", "name": "dgm_runner"}
    )
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def one_line_errors(prog: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Hydra task so that :data:`USER_ERRORS` print ``prog: error: ...`` on
    stderr and exit with status 1 (Hydra itself would print a traceback)."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except USER_ERRORS as err:
                line = f"{prog}: error: {type(err).__name__}: {err}"
                _to_log_files(line)
                print(line, file=sys.stderr)
                sys.exit(1)

        return inner

    return wrap


def rewrite_sampler_args(argv: list[str]) -> list[str]:
    """``sampler=NAME`` -> ``sampler_name=NAME`` (a whole ``configs/sampler`` entry) and
    ``sampler.KEY=V`` -> ``+sampler.KEY=V`` (the app's ``sampler`` node starts empty), for
    the apps that re-sample a trained run (``dgm-sample``, ``dgm-eval``)."""
    out = []
    for arg in argv:
        if arg.startswith("sampler="):
            arg = "sampler_name=" + arg.split("=", 1)[1]
        elif arg.startswith("sampler."):
            arg = f"+{arg}"
        out.append(arg)
    return out


def sampler_entry(name: str) -> DictConfig:
    """The config of entry ``name`` of ``configs/sampler`` (e.g. ``ddim``).

    Raises:
        ConfigError: no such entry (the message lists them).
    """
    group = Path(CONFIG_DIR) / "sampler"
    path = group / f"{name}.yaml"
    if not path.is_file():
        choices = ", ".join(sorted(p.stem for p in group.glob("*.yaml")))
        raise ConfigError(f"sampler={name} is not a sampler: choose one of {choices}")
    return OmegaConf.load(path)


def sampler_overrides(cfg: Any) -> dict[str, Any]:
    """The ``{dotted key: value}`` overrides of a run's sampler that ``sampler_name`` and
    ``sampler.*`` ask for: the named entry of ``configs/sampler`` replaces the run's sampler
    node, then single keys are set.

    Raises:
        ConfigError: ``sampler_name`` is not an entry of ``configs/sampler`` (the message
            lists them).
    """
    out: dict[str, Any] = {}
    if cfg.get("sampler_name"):
        out["sampler"] = sampler_entry(cfg.sampler_name)
    out.update({f"sampler.{k}": v for k, v in (cfg.get("sampler") or {}).items()})
    return out


def main_with_run_dir(app: Callable[[], Any], prog: str, config_name: str) -> None:
    """Call a Hydra app that works on an existing run, after rewriting a positional RUN_DIR
    into ``run_dir=``; a RUN_DIR that does not exist (Hydra would create it) and a misspelt
    key are one ``prog: error:`` line first.

    Args:
        app: the ``@hydra.main`` function; prog: ``dgm-eval`` / ``dgm-sample``;
        config_name: its primary config (``eval`` / ``sample``).
    """
    add_user_import_path()  # a run of a user's own components
    argv = positional_run_dir(rewrite_sampler_args(sys.argv[1:]))
    for arg in argv:  # a missing directory is reported before Hydra creates it
        if arg.startswith("run_dir=") and not Path(arg.split("=", 1)[1]).is_dir():
            path = arg.split("=", 1)[1]
            what = "is not a directory" if Path(path).exists() else "does not exist"
            print(f"{prog}: error: CheckpointError: {path} {what}", file=sys.stderr)
            sys.exit(1)
    try:
        check_override_keys(argv, config_name)
    except ConfigError as err:
        print(f"{prog}: error: ConfigError: {err}", file=sys.stderr)
        sys.exit(2)
    sys.argv = [sys.argv[0], *argv]
    app()
