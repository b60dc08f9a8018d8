"""Helpers shared by the Hydra command-line apps (dgm-eval, dgm-sample)."""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from dgm_runner import CONFIG_DIR
from dgm_runner.cli.checks import check_override_keys
from dgm_runner.config import ConfigError, expand_user
from dgm_runner.errors import USER_ERRORS
from dgm_runner.io.layout import RunPaths
from dgm_runner.io.run_config import trust_config_sources


def add_user_import_path() -> None:
    """Make the modules of the current directory importable, as ``python -m`` does, so the
    ``_target_`` of a user's component (``my_models.MyVAE`` beside its ``configs/``,
    docs/extending.md) resolves from the console scripts too. Appended, so no installed
    module is shadowed; launchers' workers call it again (each job's task function)."""
    import os

    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def expand_user_args(argv: list[str]) -> list[str]:
    """``key=~/path`` and ``key='~/path'`` -> ``key=/home/me/path`` (quotes kept), and a
    positional ``~/path`` likewise (:func:`dgm_runner.config.expand_user`): a ``~`` that
    the shell left (quoted) names the home directory for every path option, also where
    Hydra uses the value before any code of ours (the run directory of ``trainer.resume``,
    of ``dgm-eval RUN_DIR``), and Hydra's parser refuses an unquoted ``~``. Flags and
    ``~key`` (delete a key) pass through."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            out.append(expand_user(arg) if arg.startswith("~/") else arg)
            continue
        quoted = len(value) >= 2 and value[0] in "'\"" and value[-1] == value[0]
        quote, inner = (value[0], value[1:-1]) if quoted else ("", value)
        if key.startswith("-") or not inner.startswith("~"):
            out.append(arg)
        else:
            out.append(f"{key}={quote}{expand_user(inner)}{quote}")
    return out


#: Hydra's flags whose next argument is their value (``--config-dir configs``), not a
#: positional RUN_DIR or study name.
FLAGS_WITH_VALUE = frozenset(
    {
        "--cfg",
        "-c",
        "--package",
        "-p",
        "--config-path",
        "-cp",
        "--config-name",
        "-cn",
        "--config-dir",
        "-cd",
        "--experimental-rerun",
    }
)


def positional_run_dir(argv: list[str]) -> list[str]:
    """Turn ``dgm-eval RUN_DIR k=v`` into ``dgm-eval run_dir=RUN_DIR k=v`` (Hydra
    only takes ``key=value`` overrides); flags (with the value of those that take one, as
    in ``--config-dir configs``) and ``key=value`` pass through."""
    out: list[str] = []
    takes_value = False
    for arg in argv:
        if (
            not takes_value
            and not arg.startswith("-")
            and "=" not in arg
            and not any(a.startswith("run_dir=") for a in out)
        ):
            arg = f"run_dir={arg}"
        takes_value = arg in FLAGS_WITH_VALUE
        out.append(arg)
    return out


def to_log_files(line: str) -> None:
    """Append ``line`` to the job's log file(s) (Hydra's ``<job>.log`` file handler on the
    root logger) and not to the console, where the caller prints it once."""
    record = logging.makeLogRecord(
        {"msg": line, "levelno": logging.ERROR, "levelname": "ERROR", "name": "dgm_runner"}
    )
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def first_line(err: BaseException) -> str:
    """``"<Kind>: <first line of the message>"`` of an exception (one line, never empty)."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def full_trace_hint() -> str:
    """Where the full trace of an unexpected error is: the job's log file, or the console
    with ``HYDRA_FULL_ERROR=1``."""
    files = [
        h.baseFilename for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)
    ]
    where = f"in {files[0]}" if files else "with HYDRA_FULL_ERROR=1"
    return f"full trace {where}"


def one_line_errors(prog: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Hydra task with its process's error boundary: :data:`USER_ERRORS` print
    ``prog: error: <Kind>: ...`` on stderr and exit with status 1; Ctrl-C prints one
    ``interrupted`` line (status 130); any other exception prints one line naming it and
    where its full trace is (the job's log file; ``HYDRA_FULL_ERROR=1`` re-raises it for
    Hydra's traceback), status 1. The task trusts the components of the user's own config
    directories in the run configs it reads
    (:func:`dgm_runner.io.run_config.trust_config_sources`)."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                trust_config_sources()
                return fn(*args, **kwargs)
            except USER_ERRORS as err:
                line = f"{prog}: error: {type(err).__name__}: {err}"
                status = 1
            except KeyboardInterrupt:
                line, status = f"{prog}: error: interrupted (SIGINT): nothing more written", 130
            except Exception as err:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                to_log_files(traceback.format_exc())
                line, status = f"{prog}: error: {first_line(err)} ({full_trace_hint()})", 1
            to_log_files(line)
            print(line, file=sys.stderr)
            sys.exit(status)

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
    entries = sorted(p.stem for p in group.glob("*.yaml"))
    if name not in entries:  # by name, never as a path: sampler=../../x stays in the group
        raise ConfigError(f"sampler={name} is not a sampler: choose one of {', '.join(entries)}")
    return OmegaConf.load(group / f"{name}.yaml")


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
    """Call a Hydra app that works on an existing run, after expanding a quoted ``~``
    (:func:`expand_user_args`) and rewriting a positional RUN_DIR into ``run_dir=``; a
    RUN_DIR that does not exist (Hydra would create it) and a misspelt key are one
    ``prog: error:`` line first.

    Args:
        app: the ``@hydra.main`` function; prog: ``dgm-eval`` / ``dgm-sample``;
        config_name: its primary config (``eval`` / ``sample``).
    """
    add_user_import_path()  # a run of a user's own components
    argv = positional_run_dir(rewrite_sampler_args(expand_user_args(sys.argv[1:])))
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
    run_dirs = [a.split("=", 1)[1] for a in argv if a.startswith("run_dir=")]
    if run_dirs and not _log_file_writable(RunPaths(run_dirs[0]).job_log(config_name)):
        argv.append("hydra/job_logging=stdout")  # a read-only run: log to the console only
    sys.argv = [sys.argv[0], *argv]
    app()


def _log_file_writable(path: Path) -> bool:
    """Whether the job log ``path`` (Hydra's file handler, ``<run_dir>/<job>.log``) can be
    opened for appending: a read-only run directory is still evaluated or sampled (with
    ``out=`` elsewhere), logging to the console, instead of failing in Hydra's logging set-up
    ("Unable to configure handler 'file'")."""
    try:
        with open(path, "a"):
            return True
    except OSError:
        return False
