"""Config values drawn by hypothesis (issue 9): every invalid value of an annotated field
is rejected naming its key, no valid value is rejected, and group choices reject unknown
entries in one line while accepting every Hydra syntax for a known one."""

from __future__ import annotations

import copy
import math
import re
import typing
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf, open_dict

from dgm_runner import CONFIG_DIR
from dgm_runner.config import (
    RUNTIME_ARGS,
    ConfigError,
    Range,
    TrainerConfig,
    _target_hints,
    optimizer_hints,
    validate,
)

_GROUPS = tuple(RUNTIME_ARGS)  # model, dataset, objective, sampler, logger
_EXPERIMENTS = (
    "rbm_cdk",
    "vae_mlp",
    "vae_bce",
    "dsm_toy2d",
    "score_sde_mnist",
    "gan_mnist",
    "vqvae_fashion",
)


@pytest.fixture(scope="module")
def composed():
    """Each experiment composed once; the property tests mutate deep copies."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return {e: compose("train", overrides=[f"experiment={e}"]) for e in _EXPERIMENTS}


def _spec(hint) -> dict | None:
    """What a type hint allows, read from the annotation itself: ``kind`` (int, float,
    bool, literal), bounds from ``Range``, ``optional`` and ``choices``."""
    optional = False
    origin = typing.get_origin(hint)
    if origin is typing.Union or (origin is not None and "UnionType" in str(origin)):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            return None
        optional, hint, origin = True, args[0], typing.get_origin(args[0])
    rng = Range()
    if origin is typing.Annotated:
        base, *meta = typing.get_args(hint)
        rng = next((m for m in meta if isinstance(m, Range)), Range())
        hint, origin = base, typing.get_origin(base)
    if origin is typing.Literal:
        return {"kind": "literal", "choices": typing.get_args(hint), "optional": optional}
    if hint in (int, float, bool):
        return {"kind": hint.__name__, "range": rng, "optional": optional}
    return None


def _fields(cfg) -> list[tuple[str, dict]]:
    """(dotted key, spec) of every checkable field of a composed config."""
    out = []
    container = OmegaConf.to_container(cfg, resolve=True)
    for group in _GROUPS:
        hints = _target_hints(group, container[group]["_target_"])
        for name, hint in sorted(hints.items()):
            spec = _spec(hint)
            if spec and name not in RUNTIME_ARGS[group]:
                out.append((f"{group}.{name}", spec))
    for name, hint in sorted(optimizer_hints(container["optimizer"]["_target_"]).items()):
        spec = _spec(hint)
        if spec:
            out.append((f"optimizer.{name}", spec))
    trainer_hints = typing.get_type_hints(TrainerConfig, include_extras=True)
    for f in fields(TrainerConfig):
        spec = _spec(trainer_hints[f.name])
        if spec:
            out.append((f"trainer.{f.name}", spec))
    return out


_BIG = 10**9


def _int_bounds(r: Range) -> tuple[int | None, int | None]:
    lo = r.ge if r.ge is not None else (math.floor(r.gt) + 1 if r.gt is not None else None)
    hi = r.le if r.le is not None else (math.ceil(r.lt) - 1 if r.lt is not None else None)
    return (None if lo is None else math.ceil(lo)), (None if hi is None else math.floor(hi))


def _valid(spec: dict) -> st.SearchStrategy:
    kind = spec["kind"]
    if kind == "literal":
        strategy = st.sampled_from(spec["choices"])
    elif kind == "bool":
        strategy = st.booleans()
    else:
        r = spec["range"]
        lo, hi = _int_bounds(r)
        ints = st.integers(-_BIG if lo is None else lo, _BIG if hi is None else hi)
        if kind == "int":
            strategy = ints
        else:
            low = r.ge if r.ge is not None else r.gt
            high = r.le if r.le is not None else r.lt
            floats = st.floats(
                min_value=-1e12 if low is None else low,
                max_value=1e12 if high is None else high,
                exclude_min=r.gt is not None,
                exclude_max=r.lt is not None,
                allow_nan=False,
                allow_infinity=False,
            )
            strategy = floats | ints if lo is None or hi is None or lo <= hi else floats
    return strategy | st.none() if spec["optional"] else strategy


def _invalid(spec: dict) -> st.SearchStrategy:
    kind = spec["kind"]
    wrong_type = st.text(max_size=5).filter(lambda s: s not in spec.get("choices", ()))
    options = [wrong_type] if kind != "literal" else [wrong_type, st.integers()]
    if not spec["optional"]:
        options.append(st.none())
    if kind == "bool":
        options.append(st.integers())
    if kind in ("int", "float"):
        options.append(st.booleans())
        r = spec["range"]
        if kind == "int":
            options.append(st.floats(allow_nan=True))  # 2.0 is not an integer either
            lo, hi = _int_bounds(r)
            if lo is not None:
                options.append(st.integers(max_value=lo - 1))
            if hi is not None:
                options.append(st.integers(min_value=hi + 1))
        else:
            options.append(st.sampled_from([math.nan, math.inf, -math.inf]))
            if r.ge is not None:
                options.append(
                    st.floats(
                        max_value=r.ge, exclude_max=True, allow_nan=False, allow_infinity=False
                    )
                )
            if r.gt is not None:
                options.append(st.floats(max_value=r.gt, allow_nan=False, allow_infinity=False))
            if r.le is not None:
                options.append(
                    st.floats(
                        min_value=r.le, exclude_min=True, allow_nan=False, allow_infinity=False
                    )
                )
            if r.lt is not None:
                options.append(st.floats(min_value=r.lt, allow_nan=False, allow_infinity=False))
    return st.one_of(options)


def _with(cfg, key: str, value):
    """A copy of ``cfg`` with ``key`` set (added, like ``+key=value``, if the YAML leaves
    it to the constructor's default)."""
    out = copy.deepcopy(cfg)
    with open_dict(out):
        OmegaConf.update(out, key, value, merge=False)
    return out


def test_the_property_tests_see_the_annotated_fields(composed):
    keys = {k for cfg in composed.values() for k, _ in _fields(cfg)}
    for key in (
        "trainer.epochs",
        "trainer.batch_size",
        "optimizer.lr",
        "optimizer.momentum",
        "trainer.eval_every",
        "trainer.log_every",
        "trainer.ema_decay",
        "trainer.optimizer_impl",
        "model.latent_dim",
        "objective.k",
        "sampler.steps",
        "dataset.subset",
        "dataset.threshold",
        "objective.likelihood",
        "model.hidden_dim",
    ):
        assert key in keys, key


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_every_invalid_value_is_rejected_naming_its_key(composed, data):
    experiment = data.draw(st.sampled_from(_EXPERIMENTS), label="experiment")
    key, spec = data.draw(st.sampled_from(_fields(composed[experiment])), label="field")
    value = data.draw(_invalid(spec), label="value")
    with pytest.raises(ConfigError) as err:
        validate(_with(composed[experiment], key, value))
    message = str(err.value)
    assert key in message and "\n" not in message


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_no_valid_value_is_rejected(composed, data):
    experiment = data.draw(st.sampled_from(_EXPERIMENTS), label="experiment")
    key, spec = data.draw(st.sampled_from(_fields(composed[experiment])), label="field")
    value = data.draw(_valid(spec), label="value")
    cfg = _with(composed[experiment], key, value)
    # a value valid alone may not fit the other data options (binarize=none beside a
    # threshold_uint8): those cross-field rules are tested in tests/test_binarization.py
    assume(_data_options_fit(cfg.dataset))
    validate(cfg)


def _data_options_fit(dataset) -> bool:
    from dgm_runner.data.protocols import check_protocol

    keys = ("dequantize", "fixed_source", "threshold_uint8", "image_size", "per_class")
    options = {k: dataset[k] for k in keys if dataset.get(k) is not None}
    if "binarize" not in dataset:  # toy data
        return True
    try:
        check_protocol(dataset.binarize, name=dataset.get("name"), **options)
    except ValueError:
        return False
    return True


def test_betas_are_checked_element_by_element(composed):
    cfg = composed["vae_mlp"]
    validate(_with(cfg, "optimizer.betas", [0.0, 0.99]))
    for bad, says in (
        ([0.9], "list of 2 values"),
        ([0.9, 1.0], "optimizer.betas[1]=1.0 is invalid: must be < 1"),
        ([-0.1, 0.9], "optimizer.betas[0]"),
        (["a", 0.9], "must be a number"),
        (0.9, "must be a list"),
    ):
        with pytest.raises(ConfigError, match=re.escape(says)):
            validate(_with(cfg, "optimizer.betas", bad))


def _entries(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


_CHOICE_GROUPS = ("model", "dataset", "objective", "sampler", "logger", "experiment", "sweep")
# Entry names as people type them (Hydra would read null, true, nan, inf, 1e3 as non-strings).
_NAME = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True).filter(
    lambda s: s not in {"null", "true", "false", "nan", "inf"}
)


def _checkers():
    from dgm_runner.cli import checks, train

    return [train.check_group_choices, checks.check_group_choices]


@settings(max_examples=40, deadline=None)
@given(group=st.sampled_from(_CHOICE_GROUPS), data=st.data())
def test_group_choices_reject_unknown_entries_and_accept_known_ones(group, data):
    known = _entries(group)
    good = data.draw(st.lists(st.sampled_from(known), min_size=1, max_size=3), label="good")
    bad = data.draw(_NAME.filter(lambda s: s not in known), label="bad")
    where = data.draw(st.integers(0, len(good)), label="where")
    for check in _checkers():
        check([f"{group}={','.join(good)}", "optimizer.lr=1e-3"])  # no error
        with pytest.raises(ConfigError) as err:
            check([f"{group}={','.join(good[:where] + [bad] + good[where:])}"])
        assert (
            str(err.value)
            == f"{group}={bad}: unknown {group}; allowed values are {', '.join(known)}"
        )


def test_group_choices_accept_every_hydra_syntax_for_a_group():
    from dgm_runner.cli.checks import check_group_choices

    for argv in (
        ["-m", "model=choice(rbm,vae_mlp)"],
        ["-m", "experiment=glob(vae_*)"],
        ["logger=null"],
        ["model='rbm'"],
        ["-m", "model='rbm',\"vae_mlp\""],
        ["~logger"],
        ["+model=rbm"],
        ["hydra/launcher=joblib"],
        ["model@x=rbm"],
    ):
        check_group_choices(argv)
    with pytest.raises(ConfigError, match="^model=bar: unknown model"):
        check_group_choices(["-m", "model=choice(rbm,bar)"])
    with pytest.raises(ConfigError, match="^model=foo: unknown model"):
        check_group_choices(['model="foo"'])
