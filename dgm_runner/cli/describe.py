"""``dgm-train --describe [GROUP=ENTRY ...] [overrides]``: what a component's keys are,
from an installed package (issue 26, item 6).

For each component of the composed config (``model``, ``objective``, ``sampler``,
``dataset``, ``trainer``, ``optimizer``, every ``sample_metrics`` and ``figures`` entry;
only the groups named on the command line when some are): the class or function it builds
and the first line of its docstring, then one line per key with the value this config gives
it, the type and range the code accepts (the same annotations :mod:`dgm_runner.config`
validates against: ``Literal`` choices, ``Range`` bounds) and the comment of the key in the
entry's YAML file.
Nothing is trained and no directory is created.
"""

from __future__ import annotations

import inspect
import re
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dgm_runner.config import (
    _META_KEYS,
    TrainerConfig,
    _target_hints,
    optimizer_hints,
    type_text,
)

#: The top-level nodes described, in this order; ``sample_metrics`` and ``figures`` hold
#: one component per entry.
COMPONENTS = ("model", "objective", "sampler", "dataset", "trainer", "optimizer")
COLLECTIONS = ("sample_metrics", "figures")


def yaml_comments(path: Path) -> dict[str, str]:
    """``{key: comment}`` of a component's YAML file: the ``# ...`` after a top-level
    ``key: value`` plus the comment-only lines indented under it (a comment that runs on).
    Nested keys are not read (their node's line carries the comment)."""
    comments: dict[str, str] = {}
    last = None
    for line in path.read_text().splitlines():
        top = re.match(r"^([A-Za-z_][\w.-]*):(.*)$", line)
        if top:
            last = top.group(1)
            value = top.group(2)
            comment = value.split(" #", 1)[1].strip() if " #" in value else ""
            if comment:
                comments[last] = comment
            continue
        more = re.match(r"^\s+#\s?(.*)$", line)
        if more and last is not None and last in comments:
            comments[last] += " " + more.group(1).strip()
        elif line.strip() and not line.startswith((" ", "#")):
            last = None
    return comments


def _doc_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


def _entry_file(group: str, choice: str | None, config_dirs: list[str]) -> Path | None:
    for d in config_dirs:
        file = Path(d) / group / f"{choice}.yaml"
        if choice and file.is_file():
            return file
    return None


def describe_node(
    path: str, node: DictConfig, source: Path | None, defaults: dict[str, Any] | None = None
) -> list[str]:
    """The lines of one component: ``path: target (source file)``, its docstring's first
    line, then ``  key = value  (type) -- comment`` per key.

    Args:
        path: the dotted name (``model``, ``sample_metrics.fid``); node: its config;
        source: the YAML file of the entry (comments), if known;
        defaults: hints of a node without ``_target_`` (``trainer``: :class:`TrainerConfig`),
            or of a node whose keys the validator bounds beyond its target's signature
            (``optimizer``: :func:`dgm_runner.config.optimizer_hints`).
    """
    values = OmegaConf.to_container(node, resolve=False)
    target = values.get("_target_") if isinstance(values, dict) else None
    lines = [f"{path}: {target or 'dgm_runner.config.TrainerConfig'}"]
    if source is not None:
        lines[0] += f"  ({source})"
    if target:
        from hydra.utils import get_object

        hints = defaults if defaults is not None else _target_hints(path, target)
        doc = _doc_line(get_object(target))
    else:
        hints = defaults or {}
        doc = _doc_line(TrainerConfig)
    if doc:
        lines.append(f"  {doc}")
    comments = yaml_comments(source) if source is not None else {}
    try:  # ${oc.select:smoke.KEY,FULL} and the like: the values this config gives
        resolved = OmegaConf.to_container(node, resolve=True)
    except Exception:  # an interpolation only a run resolves (hydra:...): key by key below
        resolved = None
    for key, value in values.items():
        if key in _META_KEYS:
            continue
        if isinstance(value, dict) and "_target_" in value:  # a nested component: its block
            lines.append(f"  {key} = {value['_target_']}  (its keys: {path}.{key} below)")
            continue
        if resolved is not None:
            value = resolved[key]
        else:
            try:
                value = OmegaConf.select(node, key, throw_on_resolution_failure=True)
                value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            except Exception:  # this key is such an interpolation: as written
                pass
        shown = _short(value)
        line = f"  {key} = {shown}  ({type_text(hints.get(key, inspect.Parameter.empty))})"
        if comments.get(key):
            line += f"  # {comments[key]}"
        lines.append(line)
    return lines


def _short(value: Any) -> str:
    if value is None or isinstance(value, bool):
        text = {None: "null", True: "true", False: "false"}[value]
    else:
        text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(cfg: DictConfig, groups: list[str], config_dirs: list[str]) -> str:
    """The text of ``dgm-train --describe``.

    Args:
        cfg: the composed ``dgm-train`` config, Hydra's node included
            (``return_hydra_config=True``: its ``runtime.choices`` name the entry files);
        groups: the top-level groups to describe (empty: all of :data:`COMPONENTS` and
            :data:`COLLECTIONS` the config has);
        config_dirs: the config directories, searched in order for the entries' YAML files.

    Raises:
        dgm_runner.config.ConfigError: a ``_target_`` cannot be imported.
    """
    choices = dict(cfg.hydra.runtime.choices) if "hydra" in cfg else {}
    wanted = [g for g in (*COMPONENTS, *COLLECTIONS) if not groups or g in groups]
    blocks = []
    trainer_hints = typing.get_type_hints(TrainerConfig, include_extras=True)
    for group in wanted:
        node = cfg.get(group)
        if node is None:
            continue
        if group in COLLECTIONS:
            for name, sub in node.items():
                if sub is not None:
                    file = _entry_file(group, name, config_dirs)
                    blocks.append(describe_node(f"{group}.{name}", sub, file))
            continue
        file = _entry_file(group, choices.get(group), config_dirs)
        hints = None  # the target's signature
        if group == "trainer":
            hints = {f.name: trainer_hints[f.name] for f in fields(TrainerConfig)}
        elif group == "optimizer":  # torch's keywords with the validator's bounds
            hints = optimizer_hints(str(node.get("_target_")))
        blocks.append(describe_node(group, node, file, hints))
        # nested components, e.g. model.sde (group model/sde); unresolved: a ??? value
        # (dataset.pairs of dataset=reflow_pairs) is shown as it is, not read
        for key, sub in node.items_ex(resolve=False):
            if isinstance(sub, DictConfig) and "_target_" in sub:
                sub_file = _entry_file(f"{group}/{key}", choices.get(f"{group}/{key}"), config_dirs)
                blocks.append(describe_node(f"{group}.{key}", sub, sub_file))
    experiment = choices.get("experiment")
    head = f"experiment={experiment}" if experiment else "the default experiment"
    text = [f"{head}: the keys of each component (dgm-train KEY=VALUE sets one)", ""]
    for block in blocks:
        text += [*block, ""]
    return "\n".join(text).rstrip() + "\n"
