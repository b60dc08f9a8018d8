"""``dgm-train trainer.resume=RUN``: the run's own config, with this command line on top
(issue 26, item 4).

Hydra composes ``dgm-train``'s config from the defaults and the command line before our
code runs, so a resume that gave only ``trainer.epochs=40`` would get the default model,
dataset and experiment, not the run's. :func:`resume_config` rebuilds the config of a
resume instead: the run's saved config (its ``checkpoints/last.pt`` config, else
``.hydra/config.yaml``; checked as data, never code, by
:func:`dgm_runner.io.run_config.check_config`) is the base, and the overrides of this
command line are applied on top, with the values Hydra composed for them:

* ``key=value`` (``trainer.epochs=40``, ``optimizer.lr=1e-4``, ``~key``, ``+key=...``): set
  (removed) as typed;
* a config group (``logger=none``, ``experiment=vae_cnn``, ``+debug=smoke``): nothing to do
  when the run was launched with the same choice (``.hydra/hydra.yaml``); another choice of
  a group with its own section (``logger``, ``sampler``, ...) replaces that section; another
  choice of a group that sets keys all over the config (``experiment``, ``debug``, ``sweep``)
  is refused in one line: a resume continues the run as it was.

A key of the run's identity given with another value (``model.latent_dim=20``) is then
refused by :func:`dgm_runner.io.resume.check_resume` in one line naming it. The in-process
API, :func:`dgm_runner.loop.train`, takes the config it is given as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml
from omegaconf import DictConfig, OmegaConf

from dgm_runner.config import ConfigError
from dgm_runner.io.checkpoint import CheckpointError, load_checkpoint
from dgm_runner.io.layout import RunPaths
from dgm_runner.io.run_config import UnsafeConfig, check_config, load_yaml_config


def resumed_run(cfg: DictConfig, run_dir: Path) -> Path | None:
    """The run directory ``cfg`` continues (``trainer.resume``; for ``auto``, ``run_dir``,
    where Hydra's ``hydra.run.dir`` already put the newest unfinished run), or None for a
    new run or a run with no ``checkpoints/last.pt`` (the loop says what is wrong)."""
    resume = OmegaConf.select(cfg, "trainer.resume")
    if not resume:
        return None
    source = Path(run_dir) if resume == "auto" else Path(str(resume))
    return source if RunPaths(source).last.is_file() else None


def saved_config(run: Path) -> dict[str, Any] | None:
    """The config run ``run`` has now: its ``last.pt``'s (written by its latest launch, so a
    resume that extended it is included), else its ``.hydra/config.yaml``; None when
    neither is readable (the loop reports the checkpoint's problem).

    Raises:
        UnsafeConfig: the config names code this command does not trust.
    """
    last = RunPaths(run).last
    try:
        config = load_checkpoint(last).get("config")
    except CheckpointError:
        config = None
    if isinstance(config, dict):
        check_config(config, last)
        return config
    try:
        return load_yaml_config(RunPaths(run).config_yaml)
    except UnsafeConfig:
        raise
    except CheckpointError:
        return None


def launch_choices(run: Path) -> dict[str, Any] | None:
    """The config-group choices run ``run`` was launched with (``.hydra/hydra.yaml``'s
    ``hydra.runtime.choices``), or None when it has no record (a run of the in-process API)."""
    try:
        hydra = yaml.safe_load(RunPaths(run).hydra_yaml.read_text())
        choices = hydra["hydra"]["runtime"]["choices"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return dict(choices) if isinstance(choices, dict) else None


def _plain(value: Any) -> Any:
    """A value of the composed config as plain data (interpolations resolved)."""
    if isinstance(value, DictConfig) or OmegaConf.is_list(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _delete(config: DictConfig, key: str) -> None:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(config, parent) if parent else config
    if isinstance(node, DictConfig) and leaf in node:
        del node[leaf]


def _set(config: DictConfig, key: str, value: Any) -> None:
    """Set ``key`` of ``config`` (a whole node replaces the old one, never merges)."""
    OmegaConf.update(config, key, _plain(value), merge=False, force_add=True)


def resume_config(
    cfg: DictConfig, run: Path, overrides: list[str], choices: Mapping[str, Any]
) -> DictConfig:
    """The config of a resume of ``run``: its saved config with ``overrides`` (this command
    line's, ``hydra.overrides.task``) applied on top, their values taken from ``cfg`` (what
    Hydra composed from them, with ``choices``, ``hydra.runtime.choices``). ``cfg`` itself
    when the run's config cannot be read (the loop reports why).

    Raises:
        ConfigError: a group that sets keys all over the config (``experiment``) given with
            another choice than the run was launched with (one line).
        UnsafeConfig: the run's config names code this command does not trust.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    saved = saved_config(run)
    if saved is None:
        return cfg
    new = OmegaConf.create(saved)
    for key in cfg:  # a top-level key newer than the run (the loop reads every one)
        if key not in new:
            new[key] = _plain(cfg[key])
    launched = launch_choices(run)
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            continue
        group = f"{key}@{override.package}" if override.package else key
        if group not in choices:  # a value: set as typed (Hydra composed it into cfg)
            if override.is_delete():
                _delete(new, key)
            else:
                _set(new, key, OmegaConf.select(cfg, key))
            continue
        _apply_group(new, cfg, run, group, override.package or key, choices, launched)
    OmegaConf.set_struct(new, True)  # as Hydra's config: a misspelt key is an error
    return new


def _apply_group(
    new: DictConfig,
    cfg: DictConfig,
    run: Path,
    group: str,
    package: str,
    choices: Mapping[str, Any],
    launched: Mapping[str, Any] | None,
) -> None:
    """Apply the config-group override ``group`` (choice ``choices[group]``) to ``new``."""
    choice = choices[group]
    if launched is None:  # a run without Hydra's record (the in-process API): its own
        return  # config is the run's (nothing logged: a refused resume changes no file)
    before = launched.get(group)
    if before == choice:  # repeated as launched (experiment=vae_cnn): nothing changes
        return
    section = package.replace("/", ".")
    if section != "_global_" and isinstance(
        OmegaConf.select(cfg, section, default=None), DictConfig
    ):
        _set(new, section, OmegaConf.select(cfg, section))  # logger=none, sampler=ddim, ...
        return
    if section != "_global_" and choice is None:  # ~group: its section is removed
        _delete(new, section)
        return
    was = f"{group}={before}" if before is not None else f"no {group}"
    raise ConfigError(
        f"{group}={choice}: {run} was launched with {was}; a resume continues the run as it "
        "was (give only what may change, e.g. trainer.epochs=N; train a new run to change it)"
    )
