"""Checks of the command line that run before Hydra creates anything: group entries that
do not exist and keys that do not exist (Hydra's own messages are several lines)."""

from __future__ import annotations

from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

from dgm_runner.config import MOVED_KEYS, ConfigError


def _parsed_overrides(argv: list[str]) -> Iterator[tuple[str, Any]]:
    """``(arg, hydra Override)`` for each ``key=value`` argument Hydra's parser accepts
    (flags are skipped; syntax errors are left for Hydra to report)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            yield arg, parser.parse_override(arg)
        except Exception:
            continue


def user_config_dirs(argv: list[str]) -> list[str]:
    """The config directories a command line adds before the package's tree, in Hydra's
    order: ``--config-dir DIR`` / ``-cd DIR`` / ``--config-dir=DIR``, then the entries of
    ``hydra.searchpath=[...]`` (``file://DIR`` or ``DIR``; ``pkg://module.path`` is found
    through the import system). Used by the checks below, which then know the entries and
    keys of a user's own config tree (docs/extending.md)."""
    import importlib.util
    from pathlib import Path

    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif arg.startswith("--config-dir="):
            out.append(arg.split("=", 1)[1])
    for _, override in _parsed_overrides(argv):
        if override.key_or_group != "hydra.searchpath" or override.is_sweep_override():
            continue
        value = override.value()
        for entry in value if isinstance(value, list) else [value]:
            entry = str(entry)
            if entry.startswith("pkg://"):
                spec = importlib.util.find_spec(entry[len("pkg://") :].replace("/", "."))
                locations = list(spec.submodule_search_locations or []) if spec else []
                out.extend(locations[:1])
            else:
                out.append(entry[len("file://") :] if entry.startswith("file://") else entry)
    return [str(Path(d).expanduser().resolve()) for d in out]


def _search_path_override(dirs: list[str]) -> list[str]:
    """The ``hydra.searchpath`` override that adds ``dirs`` to a composition (none if empty)."""
    return [f"hydra.searchpath=[{','.join(f'file://{d}' for d in dirs)}]"] if dirs else []


def check_group_choices(argv: list[str], config_dir: str | None = None) -> None:
    """Reject ``group=entry`` overrides naming an entry that does not exist, in one line.

    Overrides are read with Hydra's own parser, so everything Hydra accepts for a group
    passes: a comma list (``model=rbm,vae_mlp``), ``choice(...)``, ``glob(...)``, quoted
    names, ``group=null`` (deselect) and ``~group``. Syntax errors are left to Hydra.

    Args:
        argv: the command-line overrides.
        config_dir: the primary config directory (default: the package's ``configs/``).

    Raises:
        ConfigError: ``"model=foo: unknown model; allowed values are rbm, vae_cnn, ..."``.
    """
    from pathlib import Path

    from hydra.core.override_parser.types import Glob, QuotedString

    if config_dir is None:
        from dgm_runner import CONFIG_DIR as config_dir
    dirs = [*user_config_dirs(argv), str(config_dir)]
    for _, override in _parsed_overrides(argv):
        key = override.key_or_group
        group_dirs = [Path(d) / key for d in dirs if (Path(d) / key).is_dir()]
        if override.is_delete() or "." in key or key.startswith("hydra") or not group_dirs:
            continue
        if override.is_sweep_override():
            if isinstance(override.value(), Glob):  # matched against the entries by Hydra
                continue
            values = list(override.sweep_iterator())
        else:
            values = [override.value()]
        choices = [
            None if v is None else v.text if isinstance(v, QuotedString) else str(v) for v in values
        ]
        allowed = sorted({p.stem for d in group_dirs for p in d.glob("*.yaml")})
        for choice in choices:
            if choice is not None and choice not in allowed:
                raise ConfigError(
                    f"{key}={choice}: unknown {key}; allowed values are {', '.join(allowed)}"
                )


def _all_keys(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a plain config container."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append(f"{prefix}{k}")
            out += _all_keys(v, f"{prefix}{k}.")
    return out


def check_override_keys(argv: list[str], config_name: str, config_dir: str | None = None) -> None:
    """Reject ``key=value`` overrides of keys that do not exist (``trainr.epochs=2``) in one
    line naming the closest key, before Hydra (whose own message is six lines) creates
    anything. Group overrides (``model=vae_mlp``, the first value of a sweep, an added
    group such as ``+debug=smoke``) are composed first, so keys of the chosen entries
    count; ``+key``, ``~key`` and ``hydra.*`` pass.

    Args:
        argv: the command-line overrides; config_name: ``train``, ``eval`` or ``sample``.
        config_dir: the primary config directory (default: the package's ``configs/``).

    Raises:
        ConfigError: ``"trainr.epochs=2: no such key (did you mean trainer.epochs?) ..."``;
            a key that moved (:data:`dgm_runner.config.MOVED_KEYS`) names its new place:
            ``"trainer.optimizer=sgd: no such key (did you mean optimizer=sgd?)"``.
    """
    import difflib
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.types import Glob

    if config_dir is None:
        from dgm_runner import CONFIG_DIR as config_dir
    user_dirs = user_config_dirs(argv)
    dirs = [*user_dirs, str(config_dir)]
    groups, keys = [], []
    for arg, override in _parsed_overrides(argv):
        key = override.key_or_group
        if key.startswith("hydra") or override.is_delete():
            continue
        group = key.split("@")[0]
        is_group = "." not in group and any((Path(d) / group).is_dir() for d in dirs)
        if (override.is_add() or override.is_force_add()) and not is_group:
            continue  # a new key; but +debug=smoke is composed: its keys (smoke.*) count
        if is_group:
            if override.is_sweep_override():
                if isinstance(override.value(), Glob):
                    return  # the entries are Hydra's to match
                first = next(iter(override.sweep_iterator()), None)
                add = "++" if override.is_force_add() else "+" if override.is_add() else ""
                groups.append(f"{add}{key}={first}")
            else:
                groups.append(arg)
        else:
            keys.append((key, arg))
    if not keys:
        return
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(config_name, overrides=[*_search_path_override(user_dirs), *groups])
    except Exception:  # Hydra reports composition errors itself
        return
    container = OmegaConf.to_container(cfg, resolve=False)
    missing = object()
    for key, arg in keys:
        parent, _, leaf = key.rpartition(".")
        node = (
            OmegaConf.select(cfg, parent, default=missing, throw_on_resolution_failure=False)
            if parent
            else cfg
        )
        if (
            not isinstance(node, DictConfig) or leaf not in node.keys()
        ):  # keys(): "???" values count
            if key in MOVED_KEYS:  # trainer.lr=0.01 -> optimizer.lr=0.01 (issue 27, item 4)
                raise ConfigError(
                    f"{arg}: no such key (did you mean {arg.replace(key, MOVED_KEYS[key], 1)}?)"
                )
            close = difflib.get_close_matches(key, _all_keys(container), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{arg}: no such key{hint}; add a new key with +{arg}")
