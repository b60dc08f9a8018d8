"""Early validation of a composed config: every bad value fails before training.

Hydra already rejects an unknown group entry (``model=foo``) and an override of a key
that does not exist (``trainer.foo=1``). This module checks everything else, in one
pass, against the code that will consume the values:

* a node with a ``_target_`` is checked against the target's constructor signature:
  unknown keys, wrong types, ``Literal`` choices and ``Annotated[..., Range(...)]``
  bounds (the bounds live in the annotations of the constructor itself, so the code
  and its constraints cannot drift apart); a nested node with a ``_target_``
  (``model.sde``) is checked against its own target the same way, and an argument marked
  :class:`Component` must be such a node;
* the ``trainer`` node is checked against :class:`TrainerConfig` the same way;
* the ``optimizer`` node (``configs/optimizer/``, a ``_partial_`` ``torch.optim`` class) is
  checked against its class's signature with the bounds of :data:`OPTIMIZER_BOUNDS`.

The first violation raises :class:`ConfigError` whose message is one line naming the
full key, the offending value and what is allowed.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import math
import os
import types
import typing
from dataclasses import dataclass, fields
from typing import Annotated, Any, Literal, Optional, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from dgm_runner.io import layout  # the run directory's names only (stdlib, no torch)


class ConfigError(ValueError):
    """An invalid configuration value; the message is one line naming the key."""


@dataclass(frozen=True)
class Range:
    """Numeric bounds used inside ``Annotated[int | float, Range(...)]``.

    ``ge``/``gt``/``le``/``lt`` are inclusive/exclusive lower/upper bounds; ``None`` means
    unbounded on that side.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def check(self, value: float) -> str | None:
        """Return a description of the violated bound, or ``None`` if ``value`` is inside."""
        if self.ge is not None and not value >= self.ge:
            return f">= {self.ge:g}"
        if self.gt is not None and not value > self.gt:
            return f"> {self.gt:g}"
        if self.le is not None and not value <= self.le:
            return f"<= {self.le:g}"
        if self.lt is not None and not value < self.lt:
            return f"< {self.lt:g}"
        return None


@dataclass(frozen=True)
class Component:
    """Marks a constructor argument that a config gives as a nested node with its own
    ``_target_``, built by Hydra before the component that takes it, selected by the config
    group ``group``: ``Annotated[SDE, Component("model/sde")]`` (``model.sde``, issue 27).
    A plain value there (``model.sde=edm``, which Hydra lets replace the node) is refused
    by the validator in one line naming the group; the node itself is validated against
    its own target's constructor. ``supplied``: the arguments the taking component passes
    itself when the node is a partial (``_partial_: true``), which the node must not set:
    ``Component("model/net", supplied=("in_channels",))`` (``model.net``, completed by the
    model, which alone knows the image channels)."""

    group: str
    supplied: tuple[str, ...] = ()


def component_of(hint: Any) -> Component | None:
    """The :class:`Component` marker of an ``Annotated`` hint, or None."""
    if typing.get_origin(hint) is not Annotated:
        return None
    return next((m for m in typing.get_args(hint)[1:] if isinstance(m, Component)), None)


PositiveInt = Annotated[int, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(ge=0)]
UnitInterval = Annotated[float, Range(ge=0, le=1)]
#: A sampler's number of steps (network evaluations, sweeps): a million is far beyond any
#: published schedule; 10**9 would run for weeks (issue 25, item 6).
Steps = Annotated[int, Range(ge=1, le=1_000_000)]
#: An Adam beta: torch accepts 0 <= beta < 1.
Beta = Annotated[float, Range(ge=0, lt=1)]


@dataclass
class TrainerConfig:
    """Schema of the ``trainer`` group (the loop's own knobs, see ``configs/trainer``)."""

    epochs: PositiveInt = 10
    batch_size: PositiveInt = 128
    optimizer_impl: Literal["auto", "fused", "foreach", "for_loop"] = "auto"
    seed: NonNegativeInt = 2025
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_every: PositiveInt = 1
    eval_batch_size: PositiveInt = 1000
    log_every: PositiveInt = 50
    val_every_steps: Optional[PositiveInt] = None
    val_size: PositiveInt = 1000
    ema_decay: Optional[Annotated[float, Range(gt=0, lt=1)]] = None
    n_samples: Annotated[int, Range(ge=1, le=10_000)] = (
        64  # one grid or toy scatter (bounded: memory)
    )
    progress: bool = True
    resume: Optional[str] = None
    init_from: Optional[str] = None
    export_name: Optional[str] = None
    compile: bool = False
    num_threads: Union[Literal["auto"], PositiveInt, None] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = False
    strategy: Literal["auto", "none", "ddp"] = "auto"
    dist_timeout_s: PositiveFloat = 7200.0


_META_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}

#: Keys that moved to another place (issue 27, item 4: the optimiser's settings left
#: ``trainer`` for the ``optimizer`` node) -> where they are now; a name without a dot is a
#: config group (``trainer.optimizer=sgd`` is ``optimizer=sgd``). A stale key fails in one
#: line that names its new place (:func:`moved_key_hint`).
MOVED_KEYS: dict[str, str] = {
    "trainer.optimizer": "optimizer",
    "trainer.lr": "optimizer.lr",
    "trainer.betas": "optimizer.betas",
    "trainer.momentum": "optimizer.momentum",
    "trainer.weight_decay": "optimizer.weight_decay",
}


#: Values whose spelling changed (issue 28: ``dataset.binarize`` was a boolean, today it names
#: the protocol, :mod:`dgm_runner.data.protocols`) -> today's spelling. A stale value fails
#: in one line naming the new one (:func:`renamed_value_hint`); old run configs are
#: upgraded (:mod:`dgm_runner.io.legacy_config`). Remove after 2027-03-01.
RENAMED_VALUES: dict[str, dict[bool, str]] = {
    "dataset.binarize": {True: "threshold", False: "none"},
}


def renamed_value_hint(key: str, value: Any) -> str | None:
    """Today's spelling of ``key=value`` when ``value`` is an old one of
    :data:`RENAMED_VALUES` (``dataset.binarize=true`` -> ``threshold``), else None."""
    old = RENAMED_VALUES.get(key, {})
    return old.get(value) if isinstance(value, bool) else None


def moved_key_hint(key: str, value: Any = None) -> str | None:
    """Where a key of :data:`MOVED_KEYS` is now, as the user would write it: ``optimizer.lr``,
    or ``optimizer=sgd`` for the group (``value`` given, else ``optimizer=NAME``); None for
    any other key."""
    new = MOVED_KEYS.get(key)
    if new is None or "." in new:
        return new
    return f"{new}={value if isinstance(value, str) else 'NAME'}"


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def type_text(hint: Any) -> str:
    """A type annotation in words: ``int >= 1``, ``one of 'adam', 'sgd'``, ``float in (0,
    1) or null``, ``list of 2 (float in [0, 1))``; ``any`` when unannotated."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *meta = typing.get_args(hint)
        nodes = [m for m in meta if isinstance(m, Component)]
        if nodes:
            return f"config node ({nodes[0].group}=NAME)"
        bounds = [m for m in meta if isinstance(m, Range)]
        return type_text(base) + "".join(_range_text(b) for b in bounds)
    if origin is Literal:
        args = typing.get_args(hint)
        return repr(args[0]) if len(args) == 1 else "one of " + ", ".join(map(repr, args))
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        named = [type_text(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin in (tuple, list):
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(set(args)) == 1:
                return f"list of {len(args)} ({type_text(args[0])})"
            return "list of (" + ", ".join(type_text(a) for a in args) + ")"
        return f"list of ({type_text(args[0])})" if args else "list"
    if hint is inspect.Parameter.empty or hint is Any:
        return "any"
    return getattr(hint, "__name__", str(hint))


def _range_text(r: Range) -> str:
    low = f"[{r.ge:g}" if r.ge is not None else f"({r.gt:g}" if r.gt is not None else None
    high = f"{r.le:g}]" if r.le is not None else f"{r.lt:g})" if r.lt is not None else None
    if low and high:
        return f" in {low}, {high}"
    if low:
        return f" {'>=' if low[0] == '[' else '>'} {low[1:]}"
    if high:
        return f" {'<=' if high[-1] == ']' else '<'} {high[:-1]}"
    return ""


def _check_value(key: str, value: Any, hint: Any) -> None:
    """Check one value against a type hint; raise ConfigError naming ``key``."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *meta = typing.get_args(hint)
        _check_value(key, value, base)
        for m in meta:
            if isinstance(m, Component) and not (isinstance(value, dict) and "_target_" in value):
                raise ConfigError(
                    f"{key}={_fmt(value)} is invalid: must be a config node with a _target_ "
                    f"(select an entry of configs/{m.group}/ with {m.group}=NAME)"
                )
            if isinstance(m, Range):
                bad = m.check(value)
                if bad is not None:
                    raise ConfigError(f"{key}={_fmt(value)} is invalid: must be {bad}")
        return
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            choices = ", ".join(_fmt(a) for a in allowed)
            raise ConfigError(f"{key}={_fmt(value)} is invalid: allowed values are {choices}")
        return
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                _check_value(key, value, arg)
                return
            except ConfigError as err:
                errors.append(str(err))
        if len(errors) > 1:  # Literal["auto"] | int: name every form it may take
            raise ConfigError(f"{key}={_fmt(value)} is invalid: must be {type_text(hint)}")
        raise ConfigError(errors[0] if errors else f"{key}={_fmt(value)} is invalid")
    if hint is inspect.Parameter.empty or hint is Any:
        return
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={_fmt(value)} is invalid: must be true or false")
        return
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={_fmt(value)} is invalid: must be an integer")
        return
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={_fmt(value)} is invalid: must be a number")
        if not math.isfinite(value):
            raise ConfigError(f"{key}={_fmt(value)} is invalid: must be a finite number")
        return
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={_fmt(value)} is invalid: must be a string")
        return
    if origin in (tuple, list) or hint in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={_fmt(value)} is invalid: must be a list")
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length: tuple[int, int]
            if len(value) != len(args):
                raise ConfigError(
                    f"{key}={_fmt(value)} is invalid: must be a list of {len(args)} values"
                )
            element_hints = args
        else:  # tuple[int, ...] or list[int]
            element_hints = (args[0],) * len(value) if args else ()
        for i, (item, item_hint) in enumerate(zip(value, element_hints)):
            _check_value(f"{key}[{i}]", item, item_hint)
        return
    # Other annotations (tensors, modules, ...) are not user-facing; accept.


def _check_against(path: str, node: dict, hints: dict[str, Any]) -> None:
    allowed, prefix = set(hints), f"{path}." if path else ""
    for key, value in node.items():
        if key in _META_KEYS:
            continue
        if key not in allowed:
            choices = ", ".join(sorted(k for k in allowed if k not in _META_KEYS))
            # a key that moved into a nested component (model.sigma_min -> model.sde.sigma_min)
            moved = [
                f"{prefix}{k}.{key}" for k, v in node.items() if isinstance(v, dict) and key in v
            ]
            elsewhere = moved_key_hint(f"{prefix}{key}", value)  # trainer.lr -> optimizer.lr
            moved = [elsewhere] if elsewhere else moved
            where = f" (did you mean {moved[0]}?)" if moved else ""
            raise ConfigError(
                f"{prefix}{key} is not a valid key: allowed keys are {choices}{where}"
            )
        if key in hints:
            new = renamed_value_hint(f"{prefix}{key}", value)
            if new is not None:  # dataset.binarize=true -> dataset.binarize=threshold
                raise ConfigError(
                    f"{prefix}{key}={str(value).lower()} is the spelling before issue 28: "
                    f"write {prefix}{key}={new}"
                )
            _check_value(f"{prefix}{key}", value, hints[key])


def _target_hints(path: str, target: str) -> dict[str, Any]:
    from hydra.utils import get_object

    hydra_log = logging.getLogger("hydra.utils")  # logs a 3-line error of its own first
    level, hydra_log.level = hydra_log.level, logging.CRITICAL
    try:
        obj = get_object(target)
    except Exception as err:  # ImportError, AttributeError, hydra's own errors
        cause = err.__cause__ or err  # Hydra wraps the ImportError in a 3-line message
        raise ConfigError(
            f"{path}._target_={target!r} cannot be imported ({type(cause).__name__}: "
            f"{' '.join(str(cause).split())})"
        ) from None
    finally:
        hydra_log.setLevel(level)
    func = obj.__init__ if inspect.isclass(obj) else obj
    sig = inspect.signature(func)
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # unresolved forward references: fall back to names only
        hints = {}
    names = {
        n
        for n, p in sig.parameters.items()
        if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    return {n: hints.get(n, inspect.Parameter.empty) for n in names}


def expand_user(value: Any) -> Any:
    """``value`` with a leading ``~`` or ``~user`` expanded (``os.path.expanduser``) when it
    is a string starting with ``~``: the one rule by which a path option given as ``'~/R'``
    (quoted, so the shell left it) names a place in the home directory. Anything else is
    returned as it is."""
    return os.path.expanduser(value) if isinstance(value, str) and value.startswith("~") else value


def expand_user_paths(cfg: DictConfig | ListConfig) -> None:
    """Apply :func:`expand_user` in place to every string value of a composed config
    (nested nodes and lists included; interpolations and ``???`` are left alone, their
    targets are expanded themselves): ``trainer.resume``, ``dataset.root``,
    ``sample_metrics.fid.classifier``, ``model.vqvae.run_dir``, ``dgm-eval`` /
    ``dgm-sample``'s ``run_dir``, ``checkpoint`` and ``out``, and a component's own path
    options alike. :func:`validate` and :func:`validate_schema` call it, so every consumer
    of a validated config reads expanded paths."""
    keys = cfg.keys() if isinstance(cfg, DictConfig) else range(len(cfg))
    for key in list(keys):
        if OmegaConf.is_interpolation(cfg, key) or OmegaConf.is_missing(cfg, key):
            continue
        value = cfg[key]
        if isinstance(value, (DictConfig, ListConfig)):
            expand_user_paths(value)
        elif expand_user(value) != value:
            cfg[key] = expand_user(value)


def validate_node(
    path: str, node: Any, runtime_args: set[str] = frozenset(), set_by: str = "the runner"
) -> None:
    """Validate one ``_target_`` node against its target's signature, and each nested
    ``_target_`` node against its own (a :class:`Component`'s ``supplied`` arguments are
    ``runtime_args`` of its node).

    Args:
        path: dotted name of the node, used in messages (e.g. ``"model"``).
        node: a ``DictConfig`` or plain dict with a ``_target_`` entry.
        runtime_args: constructor arguments the loop supplies at build time (such as
            ``image_shape``); they must not appear in the config.
        set_by: who supplies ``runtime_args``, for the message.

    Raises:
        ConfigError: unknown key, wrong type, value outside its ``Literal`` or ``Range``.
    """
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, dict) or "_target_" not in node:
        raise ConfigError(f"{path} must be a config node with a _target_ entry")
    hints = _target_hints(path, node["_target_"])
    for name in runtime_args:
        if name in node:
            raise ConfigError(f"{path}.{name} is set by {set_by} and must not be configured")
        hints.pop(name, None)
    _check_against(path, node, hints)
    for key, value in node.items():  # a component built from another config node (model.vqvae)
        if isinstance(value, dict) and "_target_" in value:
            marker = component_of(hints.get(key))
            supplied = set(marker.supplied) if marker else set()
            flag = value.get("_partial_")
            if supplied and flag is not True:
                shown = "false" if flag is False else "null" if flag is None else _fmt(flag)
                raise ConfigError(
                    f"{path}.{key}._partial_={shown} is invalid: must be true ({path} "
                    f"completes it with {', '.join(sorted(supplied))})"
                )
            validate_node(f"{path}.{key}", value, supplied, f"{path} ({node['_target_']})")


def _check_component(path: str, node: dict, model: dict) -> None:
    """Run a figure maker's, sample metric's or dataset loader's own consistency check before
    any work, when it has one: a ``check(model_config, **arguments)`` attribute of the
    function (e.g. :func:`dgm_runner.figures.score.check_score_field`,
    :func:`dgm_runner.metrics.fid.check_fid`, the data protocols of
    :func:`dgm_runner.data.vision.load_vision_dataset`), given the resolved model config.

    Raises:
        ConfigError: the check raised ``ValueError`` (its message, prefixed with ``path``).
    """
    from hydra.utils import get_object

    check = getattr(get_object(node["_target_"]), "check", None)
    if check is None:
        return
    try:
        check(model, **{k: v for k, v in node.items() if k not in _META_KEYS})
    except ValueError as err:
        raise ConfigError(f"{path}: {err}") from None


def validate_schema(path: str, node: Any, schema: type) -> None:
    """Validate a plain config node against the annotated fields of dataclass ``schema``.

    A ``DictConfig`` node gets a leading ``~`` of its path values expanded in place first
    (:func:`expand_user_paths`).

    Raises:
        ConfigError: unknown key, wrong type, value outside its ``Literal`` or ``Range``.
    """
    if isinstance(node, DictConfig):
        expand_user_paths(node)
        node = OmegaConf.to_container(node, resolve=True)
    hints = typing.get_type_hints(schema, include_extras=True)
    _check_against(path, node, {f.name: hints[f.name] for f in fields(schema)})


#: Files of the run directory that ``trainer.export_name`` must not replace
#: (:data:`dgm_runner.io.layout.RUN_FILES`: the run's files and its lock).
RUN_FILES = layout.RUN_FILES


def check_file_name(key: str, name: str, reserved: tuple[str, ...] = RUN_FILES) -> None:
    """``name`` must be a plain file name (no directory part, not hidden, not ``.``/``..``)
    and not one of ``reserved``: a file that lands inside the run directory.

    Raises:
        ConfigError: one line naming ``key``.
    """
    if not name or "/" in name or "\\" in name or name.startswith(".") or name in reserved:
        raise ConfigError(
            f"{key}={name!r} is invalid: must be a plain file name inside the run directory "
            f"(no '/', not hidden, not one of {', '.join(reserved)})"
        )


def validate_trainer(node: Any) -> None:
    """Validate the ``trainer`` node against :class:`TrainerConfig` (and
    ``trainer.export_name`` as a file name); raises ConfigError."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    validate_schema("trainer", node, TrainerConfig)
    if node.get("export_name") is not None:
        check_file_name("trainer.export_name", node["export_name"])


#: Bounds of the ``torch.optim`` keywords an ``optimizer`` node sets, where torch's own
#: annotations say only ``float``: the ranges torch checks when it builds the optimiser
#: (``lr`` > 0 here: a zero step trains nothing; ``momentum`` <= 1 as ``trainer.momentum``
#: was), so a bad value fails before any work, its key named.
OPTIMIZER_BOUNDS: dict[str, Any] = {
    "lr": PositiveFloat,
    "betas": tuple[Beta, Beta],
    "eps": NonNegativeFloat,
    "momentum": UnitInterval,
    "dampening": UnitInterval,
    "weight_decay": NonNegativeFloat,
    "lr_decay": NonNegativeFloat,
    "initial_accumulator_value": NonNegativeFloat,
}
#: Arguments of an optimiser that the runner passes, never the config: each parameter
#: group's parameters, and the implementation flags ``trainer.optimizer_impl`` picks.
OPTIMIZER_ARGS = frozenset({"params", "foreach", "fused"})


def optimizer_hints(target: str, path: str = "optimizer") -> dict[str, Any]:
    """The configurable keywords of optimiser class ``target`` with their annotations: the
    constructor's signature without :data:`OPTIMIZER_ARGS`, with :data:`OPTIMIZER_BOUNDS` in
    place of torch's ``float``.

    Raises:
        ConfigError: (one line naming ``path``) ``target`` cannot be imported, is not a
            ``torch.optim.Optimizer`` subclass, or its ``step()`` needs a closure (LBFGS:
            the loop calls ``step()`` without one).
    """
    from hydra.utils import get_object

    hints = _target_hints(path, target)  # the import error, in one line
    import torch

    cls = get_object(target)
    if not (inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(
            f"{path}._target_={target} is invalid: must be a torch.optim.Optimizer subclass "
            "(an entry of configs/optimizer/: optimizer=NAME)"
        )
    closure = inspect.signature(cls.step).parameters.get("closure")
    if closure is not None and closure.default is inspect.Parameter.empty:
        raise ConfigError(
            f"{path}._target_={target} is invalid: its step() needs a closure, which the "
            "training loop does not pass"
        )
    return {n: OPTIMIZER_BOUNDS.get(n, h) for n, h in hints.items() if n not in OPTIMIZER_ARGS}


def validate_optimizer(node: Any, path: str = "optimizer") -> None:
    """Validate the ``optimizer`` node: a ``_partial_: true`` node whose ``_target_`` is a
    ``torch.optim.Optimizer`` subclass, with keywords of that class in their bounds
    (:func:`optimizer_hints`) and none that the runner passes (:data:`OPTIMIZER_ARGS`).

    Raises:
        ConfigError: one line naming the key (``optimizer.lr=0 is invalid: must be > 0``,
            ``optimizer.lrr is not a valid key: allowed keys are ...``).
    """
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, dict) or "_target_" not in node:
        raise ConfigError(
            f"{path}={_fmt(node)} is invalid: must be a config node with a _target_ "
            "(select an entry of configs/optimizer/ with optimizer=NAME)"
        )
    if node.get("_partial_") is not True:
        raise ConfigError(
            f"{path}._partial_={_fmt(node.get('_partial_'))} is invalid: must be true (the "
            "runner calls the optimiser with each parameter group's parameters)"
        )
    for name in sorted(OPTIMIZER_ARGS & set(node)):
        why = "the parameters" if name == "params" else "trainer.optimizer_impl picks it"
        raise ConfigError(f"{path}.{name} is set by the runner and must not be configured ({why})")
    hints = optimizer_hints(node["_target_"], path)
    for key in node:  # a misspelling, or an experiment's setting of another optimiser
        if key not in hints and key not in _META_KEYS:  # (experiment=gan_mnist optimizer=sgd)
            close = difflib.get_close_matches(key, list(hints), n=1)
            hint = f"did you mean {path}.{close[0]}?" if close else f"remove it: ~{path}.{key}"
            raise ConfigError(
                f"{path}.{key} is not a valid key of {node['_target_']}: allowed keys are "
                f"{', '.join(sorted(hints))} ({hint})"
            )
    _check_against(path, node, hints)


def check_mandatory(cfg: DictConfig) -> None:
    """Refuse a composed config whose mandatory values (``???`` in a YAML file, e.g.
    ``dataset.pairs`` of ``dataset=reflow_pairs``) are still unset, before anything is
    created (:func:`validate` leaves them alone, so an experiment that needs its user's
    inputs still validates as composed).

    Raises:
        ConfigError: one line naming every unset key.
    """
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        keys = ", ".join(missing)
        raise ConfigError(
            f"{keys} {'is' if len(missing) == 1 else 'are'} required (??? in the config): "
            f"set {'it' if len(missing) == 1 else 'them'} on the command line, e.g. "
            f"{missing[0]}=..."
        )


def trainer_config(cfg: DictConfig) -> TrainerConfig:
    """The ``trainer`` node of a validated config as a :class:`TrainerConfig` (typed
    attributes; keys the node lacks take the schema's defaults, in one place)."""
    return TrainerConfig(**OmegaConf.to_container(cfg.trainer, resolve=True))


@dataclass
class EvalConfig:
    """Schema of ``dgm-eval``'s own keys (``configs/eval.yaml``)."""

    run_dir: str = ""
    checkpoint: str = "last"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_batch_size: PositiveInt = 1000
    test_subset: Optional[PositiveInt] = None
    sampler_name: Optional[str] = None
    sampler: Any = None
    fid: Any = None


@dataclass
class SampleConfig:
    """Schema of ``dgm-sample``'s own keys (``configs/sample.yaml``)."""

    run_dir: str = ""
    checkpoint: str = "last"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    n: Annotated[int, Range(ge=1, le=100_000)] = 64
    seed: NonNegativeInt = 0
    out: Optional[str] = None
    overwrite: bool = False
    sampler_name: Optional[str] = None
    sampler: Any = None
    label: Any = None


@dataclass
class ReflowPairsConfig:
    """Schema of ``dgm-reflow-pairs``'s own keys (``configs/reflow_pairs.yaml``)."""

    run_dir: str = ""
    checkpoint: str = "last"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    n: Annotated[int, Range(ge=1, le=10_000_000)] = 20_000
    seed: NonNegativeInt = 0
    batch_size: PositiveInt = 500
    out: Optional[str] = None
    overwrite: bool = False
    sampler_name: Optional[str] = None
    sampler: Any = None


# Arguments that the loop passes when it builds each component (not user config).
RUNTIME_ARGS: dict[str, set[str]] = {
    "model": {"image_shape", "n_classes"},
    "dataset": {"device"},
    "objective": set(),
    "sampler": set(),
    "logger": {"run_dir", "config"},
}
# Arguments the loop passes to every figure maker in ``figures``.
FIGURE_ARGS = {"model", "data", "run_dir", "seed"}
# ... and to every sample-based metric in ``sample_metrics``.
SAMPLE_METRIC_ARGS = {"model", "sampler", "data", "seed", "final"}
# ... and to every exporter in ``exports`` (after training).
EXPORT_ARGS = {"model", "data", "run_dir", "metrics"}


def validate(cfg: DictConfig) -> None:
    """Validate a composed training config (all groups) before anything is built, after
    expanding a leading ``~`` of its path values in place (:func:`expand_user_paths`).

    Raises:
        ConfigError: one line naming the first invalid key, its value and what is allowed.
    """
    expand_user_paths(cfg)
    try:
        container = OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # interpolation errors, missing mandatory values
        key = getattr(err, "full_key", None)
        where = f"{key}: " if key else ""
        raise ConfigError(f"{where}config cannot be resolved: {err}".splitlines()[0]) from None
    for group, runtime in RUNTIME_ARGS.items():
        if group not in container:
            raise ConfigError(f"{group} is missing from the config")
        validate_node(group, container[group], runtime)
    # the data options that are fine one by one but not together (dataset.binarize=threshold
    # dataset.dequantize=uniform): the loader's own check, before any file is read
    _check_component("dataset", container["dataset"], container["model"])
    for name, node in (container.get("figures") or {}).items():
        validate_node(f"figures.{name}", node, FIGURE_ARGS)
        _check_component(f"figures.{name}", node, container["model"])
    for name, node in (container.get("sample_metrics") or {}).items():
        if node is not None:  # an experiment may switch a default metric off with null
            validate_node(f"sample_metrics.{name}", node, SAMPLE_METRIC_ARGS)
            _check_component(f"sample_metrics.{name}", node, container["model"])
    for name, node in (container.get("exports") or {}).items():
        validate_node(f"exports.{name}", node, EXPORT_ARGS)
    validate_trainer(container["trainer"])
    if "optimizer" not in container:
        raise ConfigError(
            "optimizer is missing from the config (optimizer=NAME: configs/optimizer/)"
        )
    validate_optimizer(container["optimizer"])
    if container.get("lr_schedule") is not None:  # absent in configs saved before 2026-12-07
        validate_node("lr_schedule", container["lr_schedule"], ())
