"""Configs read from disk are data, never code (issue 25, item 1).

A run directory's config (``checkpoints/last.pt``'s ``config``, ``.hydra/config.yaml``), a
VQ stage-1 run's config (``model.vqvae.run_dir``) and a classifier file's metadata are
rebuilt with Hydra's ``instantiate``, which imports and calls whatever ``_target_`` names. A
file edited by someone else (a shared or downloaded run) could name
``shutil.copyfile`` or ``builtins.open`` and have ``dgm-eval RUN`` write or empty a file of
the user's. Everything built from such a file therefore passes :func:`check_config` first:
a string check of every ``_target_`` (nothing is imported or called before it passes) and
of Hydra's other instantiation keys.

**Allowed targets.** The component packages of the registry (``dgm_runner.models``,
``objectives``, ``samplers``, ``data``, ``metrics``, ``figures``, the loggers of
``dgm_runner.io.loggers*``), :func:`dgm_runner.build.load_run_model`, which is how one run
names another's model, the diffusion processes of ``model.sde`` (the five classes of
:mod:`dgm_runner.sdes`, :data:`COMPONENT_OBJECTS`), and at ``optimizer._target_`` only,
the optimiser classes of ``torch.optim`` (:data:`OPTIMIZER_OBJECTS`). Not the rest of
``dgm_runner`` (its file writers, command-line entry points, studies): no config of a run
names them. Plus the modules the user names for the current command
(:func:`trust_modules`): the modules of every ``_target_`` in

* the user's own config directories of the command (``--config-dir`` / ``hydra.searchpath``,
  docs/extending.md): :func:`trust_config_sources`;
* the composed ``dgm-train`` config itself (what the user typed or composed):
  :func:`trust_targets_of`;
* ``$DGM_TRUSTED_MODULES``, a comma-separated list of module names, e.g.
  ``DGM_TRUSTED_MODULES=my_components dgm-eval RUN``.

**Refused keys.** ``_args_`` (positional arguments), ``_recursive_`` and ``_convert_``
never appear in our configs; in a file read from disk they are refused, as is a
``_partial_`` that is not ``true`` or ``false`` (ours mark a node its owner completes, e.g.
``model.net``: a partial of an allowed target runs nothing the target could not), a
``_target_`` that is not a dotted Python name, and a resolver other than OmegaConf's
``oc.*`` in an interpolation (ours, ``dgm_hydra_subdir``, takes a lock: it creates files).
"""

from __future__ import annotations

import ast
import functools
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from omegaconf import DictConfig, ListConfig, OmegaConf

from dgm_runner.io.checkpoint import CheckpointError
from dgm_runner.io.legacy_config import upgrade_run_config

#: ``dgm_runner`` modules whose objects a run's config may name (the config groups'
#: packages, docs/design.md "Config groups map 1:1 onto packages"), as prefixes.
COMPONENT_PREFIXES = (
    "dgm_runner.models.",
    "dgm_runner.objectives.",
    "dgm_runner.samplers.",
    "dgm_runner.data.",
    "dgm_runner.metrics.",
    "dgm_runner.figures.",
    "dgm_runner.io.loggers.",
    "dgm_runner.io.loggers_mlflow.",
    "dgm_runner.io.loggers_wandb.",
)
#: Single ``dgm_runner`` objects a run's config may name outside those packages: how one run
#: names another's model, the diffusion processes of ``model.sde`` (configs/model/sde/) and
#: the learning-rate schedules (configs/lr_schedule/).
COMPONENT_OBJECTS = frozenset(
    {
        "dgm_runner.build.load_run_model",
        "dgm_runner.lr_schedules.Constant",
        "dgm_runner.lr_schedules.GeometricStages",
        "dgm_runner.lr_schedules.Cosine",
        "dgm_runner.sdes.VESDE",
        "dgm_runner.sdes.VPSDE",
        "dgm_runner.sdes.DiscreteDDPM",
        "dgm_runner.sdes.EDMProcess",
        "dgm_runner.sdes.LinearPath",
    }
)
#: The ``torch.optim`` classes the ``optimizer`` node of a run's config may name
#: (``configs/optimizer/``; built with the run's parameters only): every optimiser whose
#: ``step()`` the loop can call (not LBFGS, which needs a closure; not SparseAdam, which
#: needs sparse gradients).
OPTIMIZER_OBJECTS = frozenset(
    f"torch.optim.{name}"
    for name in (
        "Adadelta",
        "Adafactor",
        "Adagrad",
        "Adam",
        "Adamax",
        "AdamW",
        "ASGD",
        "NAdam",
        "RAdam",
        "RMSprop",
        "Rprop",
        "SGD",
    )
)
#: Hydra's instantiation keys other than ``_target_``: refused in a config read from disk.
REFUSED_KEYS = frozenset({"_args_", "_recursive_", "_convert_"})

_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
# A resolver call inside an interpolation, ``${name:...}``; OmegaConf's own ``oc.*`` resolvers
# only read values, ours (``dgm_hydra_subdir`` takes a lock, i.e. creates files) must not run.
_RESOLVER = re.compile(r"\$\{\s*([\w.]+)\s*:")
_USER_MODULES: set[str] = set()


class UnsafeConfig(CheckpointError):
    """A config read from disk names code this command does not trust (one line)."""


def trust_modules(modules: Iterable[str]) -> None:
    """Allow ``_target_``s under each module of ``modules`` (e.g. ``my_components``) in the
    configs this process reads from disk, for the rest of the process."""
    for module in modules:
        module = module.strip().rstrip(".")
        if module:
            _USER_MODULES.add(module)


def trusted_modules() -> frozenset[str]:
    """The modules the user named for this process (:func:`trust_modules` and
    ``$DGM_TRUSTED_MODULES``)."""
    env = os.environ.get("DGM_TRUSTED_MODULES", "")
    return frozenset(_USER_MODULES | {m.strip() for m in env.split(",") if m.strip()})


def _module_of(target: str) -> str:
    """``my_components.MyVAE`` -> ``my_components``."""
    return target.rpartition(".")[0]


def _nodes(config: Any, where: str = "") -> Iterator[tuple[str, Any, Any]]:
    """``(dotted key, key, value)`` of every mapping entry in ``config`` (dicts, lists,
    OmegaConf containers; interpolations are not resolved)."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=False)
    elif isinstance(config, ListConfig):
        config = OmegaConf.to_container(config, resolve=False)
    if isinstance(config, dict):
        for key, value in config.items():
            path = f"{where}.{key}" if where else str(key)
            yield path, key, value
            yield from _nodes(value, path)
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            yield from _nodes(value, f"{where}[{i}]")


def targets_of(config: Any) -> list[str]:
    """Every ``_target_`` string in ``config`` (a dict, list or OmegaConf container)."""
    return [v for _, k, v in _nodes(config) if k == "_target_" and isinstance(v, str)]


def trust_targets_of(config: Any) -> None:
    """Trust the modules of the ``_target_``s of a config the user composed for the current
    command (``dgm-train``'s own config), so that a run of their components can use another
    run of them (``model.vqvae.run_dir``). The ``torch.optim`` classes of
    :data:`OPTIMIZER_OBJECTS` are allowed by name already: their module is not trusted
    (``torch.optim.swa_utils.torch.save`` would pass as a name under it)."""
    trust_modules(
        _module_of(t) for t in targets_of(config) if _DOTTED.match(t) and t not in OPTIMIZER_OBJECTS
    )


def trust_config_sources() -> None:
    """Trust the modules of every ``_target_`` in the YAML files of the user's config
    directories of the current Hydra command (``--config-dir``, ``hydra.searchpath``; the
    package's own tree needs no trust). A no-op outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    from dgm_runner import CONFIG_DIR

    if not HydraConfig.initialized():
        return
    package = Path(CONFIG_DIR).resolve()
    for source in HydraConfig.get().runtime.config_sources:
        if source.schema != "file" or not source.path:
            continue
        root = Path(source.path).resolve()
        if root == package or not root.is_dir():
            continue
        for path in root.rglob("*.yaml"):
            try:
                trust_targets_of(OmegaConf.load(path))
            except Exception:  # a broken YAML of the user's: Hydra reports it if it is used
                continue


def _allowed(target: str, user: frozenset[str]) -> bool:
    if target in COMPONENT_OBJECTS:
        return True
    if target.startswith(COMPONENT_PREFIXES):
        return _defined_in_package(target)
    return any(target == m or target.startswith(m + ".") for m in user)


_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # .../dgm_runner


@functools.lru_cache(maxsize=None)
def _top_level_names(source: Path) -> frozenset[str]:
    """The names a ``dgm_runner`` module defines itself, read from its source with ``ast``
    (nothing imported): classes, functions, assignments, and names imported from another
    ``dgm_runner`` module (a package's re-exports); not ``import os`` / ``from torch ...``."""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom) and (
            node.level > 0 or (node.module or "").split(".")[0] == "dgm_runner"
        ):
            names.update(alias.asname or alias.name for alias in node.names)
    return frozenset(names)


def _defined_in_package(target: str) -> bool:
    """Whether ``target`` (``dgm_runner.a.b.Name``) is one name that a ``dgm_runner`` module
    defines, not an attribute reached through it: ``dgm_runner.models.score.torch.save``
    (``torch.save`` through a module that imports torch) and ``dgm_runner.models.score.math``
    are not. Read from the source files, nothing imported."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 1, -1):  # the longest module path that is a file
        module_dir = _PACKAGE_DIR.joinpath(*parts[1:cut])
        for source in (module_dir.with_suffix(".py"), module_dir / "__init__.py"):
            if source.is_file():
                return cut == len(parts) - 1 and parts[-1] in _top_level_names(source)
    return False


def check_config(config: Any, source: str | os.PathLike) -> None:
    """Refuse a config read from disk that would run code this command does not trust.

    Only strings are looked at: nothing is imported or called.

    Args:
        config: a dict / list / OmegaConf container (a checkpoint's ``config``, a loaded
            ``.hydra/config.yaml``, a classifier file's metadata).
        source: the file it came from (named in the error).

    Raises:
        UnsafeConfig: (one line, naming the key, the target and how to allow one's own
            module) a ``_target_`` outside the allowed modules or not a dotted name, or one
            of :data:`REFUSED_KEYS`, or a ``_partial_`` other than true / false.
    """
    user = trusted_modules()
    for where, key, value in _nodes(config):
        if isinstance(value, str):
            calls = [n for n in _RESOLVER.findall(value) if not n.startswith("oc.")]
            if calls:
                raise UnsafeConfig(
                    f"{source}: refused {where}: the resolver {calls[0]} is never written "
                    "by dgm_runner; the file was edited (a config read from disk is data)"
                )
        if key in REFUSED_KEYS or key == "_partial_" and not isinstance(value, bool):
            what = key if key in REFUSED_KEYS else f"{key}={value!r}"
            raise UnsafeConfig(
                f"{source}: refused {where}: {what} is never written by dgm_runner; the file "
                "was edited (a config read from disk is data, not code)"
            )
        if key != "_target_":
            continue
        if not isinstance(value, str) or not _DOTTED.match(value):
            raise UnsafeConfig(f"{source}: refused {where}={value!r}: not a dotted Python name")
        if not _allowed(value, user) and not (
            where == "optimizer._target_" and value in OPTIMIZER_OBJECTS
        ):
            raise UnsafeConfig(
                f"{source}: refused {where}={value}: a config read from disk may only name "
                "dgm_runner components or modules you trust (your --config-dir components, "
                f"or DGM_TRUSTED_MODULES={_module_of(value)} if you trust this file)"
            )


def checked_container(config: Any, source: str | os.PathLike) -> Any:
    """``config`` after :func:`check_config` (returned unchanged)."""
    check_config(config, source)
    return config


def load_yaml_config(path: str | os.PathLike) -> dict[str, Any]:
    """A checked ``.hydra/config.yaml`` as a plain dict (interpolations unresolved when this
    process cannot resolve them), a run's from before issue 27 in today's form
    (:func:`dgm_runner.io.legacy_config.upgrade_run_config`).

    Raises:
        UnsafeConfig: see :func:`check_config`.
        CheckpointError: the file is not valid YAML or not a mapping, or an old run's config
            that today's cannot express (one line).
    """
    try:
        node = OmegaConf.load(path)
    except Exception as err:  # yaml.ScannerError, ParserError, UnicodeDecodeError, OSError
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is not a readable config: {first}") from None
    if not isinstance(node, DictConfig):
        raise CheckpointError(f"{path} is not a config (not a mapping)")
    check_config(node, path)
    try:
        config = OmegaConf.to_container(node, resolve=True)
    except Exception:  # an interpolation this process cannot resolve: compare as written
        config = OmegaConf.to_container(node, resolve=False)
    try:
        return upgrade_run_config(config)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
