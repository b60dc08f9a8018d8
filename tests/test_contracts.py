"""Contract tests over the config groups (issue 16, item 5): the entries of
``configs/sampler``, ``configs/objective`` and ``configs/experiment`` are found by globbing
their directories, so a new entry is tested by adding its YAML.

* a sampler draws ``(n, *shape)`` finite samples (images in [0, 1]) from every model
  entry it fits; the same seed gives the same samples, another seed other samples;
* an objective trains every model entry it fits: its updates name only declared
  parameter groups, each update changes only its own group's parameters, and
  ``evaluate`` gives finite ``(B,)`` values;
  (both checks are ``dgm_runner.testing.check_sampler`` / ``check_objective``, which users
  run on their own components);
* an experiment composes, validates (also with ``+debug=smoke``) and trains end to end
  (every one of them in CI: the whole file takes about 25 s on 2 CPU cores).

A model "fits" a sampler / objective when ``check_model`` accepts it (TypeError /
ValueError: it does not). Model entries are built small (``TINY_MODEL``) for 28x28
images, or for 2-D points when they do not take images; a model entry built from a
finished stage-1 run (``model.vqvae.run_dir``) gets an untrained in-memory one instead; a
reflow experiment (``dataset.pairs: ???``) trains on the pairs of a smoke run of the
experiment ``PAIRS_OF`` names, from its weights.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from dgm_runner import CONFIG_DIR
from dgm_runner.build import build_model
from dgm_runner.cli.checks import check_override_keys
from dgm_runner.config import ConfigError, validate
from dgm_runner.io.checkpoint import load_checkpoint
from dgm_runner.loop import train
from dgm_runner.testing import N_CLASSES, check_objective, check_sampler
from tests.helpers import SMALL, needs_fashion, needs_mnist
from tests.image_files import write_cifar


def entries(group: str) -> list[str]:
    """The entries of a config group: the YAML files of ``configs/<group>/``."""
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


IMAGE, POINTS = (1, 28, 28), (2,)
LOAD_RUN = "dgm_runner.build.load_run_model"  # the model of a finished run (stage 1)

# Sizes that keep a model quick, applied wherever an entry has the key and never growing
# it (latent_dim=2 stays 2); a list of channels is capped element by element.
TINY_MODEL = {
    "hidden_dim": 16,
    "hidden": 8,
    "latent_dim": 4,
    "channels": 8,
    "emb_dim": 16,
    "groups": 4,
    "g_channels": 8,
    "d_channels": 8,
    "channels1": 4,
    "channels2": 8,
    "n_codes": 16,
    "code_dim": 4,
    "n_layers": 2,
    "timesteps": 20,
}
TINY_CHANNEL_LIST = [8, 16, 16]
# Sampler / objective / sample-metric values that only cost time, capped where set.
TINY_SAMPLER = {"steps": 3, "steps_per_level": 2, "corrector_steps": 1}
TINY_OBJECTIVE = {"iwae_k": 8}
# What ``+debug=smoke`` alone must bring every evaluation down to (issue 26, item 2: a smoke
# run takes seconds), wherever a sampler, objective or sample metric has the key: at most
# SMOKE_MAX (``schedule_steps: null`` is the full 14 501-temperature AIS), tolerances at
# least SMOKE_LOOSE. Loose bounds on configs/debug/smoke.yaml's sizes, not copies of them.
SMOKE_MAX = {
    "steps": 20,  # sampler steps (Gibbs sweeps, DDIM, Heun, PC, ...)
    "steps_per_level": 10,
    "iwae_k": 100,
    "n_runs": 20,  # AIS
    "schedule_steps": 1000,  # AIS temperatures
    "n": 100,  # bits/dim images, DDPM bound images, toy sample distances
    "n_samples": 200,  # FID/KID
}
SMOKE_LOOSE = {"rtol": 1e-3, "atol": 1e-3}  # probability-flow ODE tolerances


def _capped(key: str, value: Any, caps: dict[str, Any]) -> Any:
    if key not in caps or isinstance(value, bool):
        return value
    if isinstance(value, (list, ListConfig)):
        return [min(int(v), c) for v, c in zip(value, TINY_CHANNEL_LIST)]
    return min(value, caps[key]) if isinstance(value, int) else value


def _compose(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=list(overrides))


# --------------------------------------------------------------------------- model entries


@functools.lru_cache(maxsize=None)
def _model_cfg(name: str) -> DictConfig:
    """``model=<name>`` composed and shrunk by TINY_MODEL, nested components (``model.net``)
    too (read-only)."""
    cfg = _compose(f"model={name}")
    nodes = [cfg.model, *(v for v in cfg.model.values() if isinstance(v, DictConfig))]
    for node in nodes:
        for key, value in list(node.items()):
            node[key] = _capped(key, value, TINY_MODEL)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def _build(name: str, shape: tuple[int, ...]) -> torch.nn.Module:
    """Model entry ``name`` for examples of ``shape`` (TypeError/ValueError: it does not
    take them). A node that loads a finished run's model (``model.vqvae``) is replaced by
    the untrained, small model of the entry of the same name."""
    cfg = _model_cfg(name)
    stage_one = [
        k
        for k, v in cfg.model.items()
        if isinstance(v, DictConfig) and v.get("_target_") == LOAD_RUN
    ]
    torch.manual_seed(0)
    if not stage_one:
        return build_model(cfg, shape, N_CLASSES)
    runtime = {key: _build(key, shape) for key in stage_one}
    try:
        return instantiate(cfg.model, image_shape=shape, **runtime)
    except InstantiationException as err:
        raise (err.__cause__ or err) from None


def _models() -> list[tuple[str, tuple[int, ...], torch.nn.Module]]:
    """``(entry, shape, fresh model)`` of every model entry: on 28x28 images, else on 2-D
    points; an entry that builds for neither fails here."""
    out = []
    for name in entries("model"):
        errors = []
        for shape in (IMAGE, POINTS):
            try:
                out.append((name, shape, _build(name, shape)))
                break
            except (TypeError, ValueError) as err:
                errors.append(f"{shape}: {err}")
        else:
            raise AssertionError(f"model={name} builds for neither images nor points: {errors}")
    return out


def _fits(component: Any, model: torch.nn.Module) -> bool:
    try:
        component.check_model(model)
    except (TypeError, ValueError):
        return False
    return True


def _node(group: str, name: str, caps: dict[str, Any]) -> DictConfig:
    """``configs/<group>/<name>.yaml`` with the values it sets of the keys in ``caps``
    capped (a key the YAML leaves to the constructor's default stays as it is)."""
    node = OmegaConf.load(Path(CONFIG_DIR) / group / f"{name}.yaml")
    for key, value in caps.items():
        if key in node:
            node[key] = min(node[key], value)
    return node


# --------------------------------------------------------------------------- samplers


@pytest.mark.parametrize("name", entries("sampler"))
def test_sampler_contract(name):
    sampler = instantiate(_node("sampler", name, TINY_SAMPLER))
    fitting = [(m, shape, model) for m, shape, model in _models() if _fits(sampler, model)]
    assert fitting, f"sampler={name} fits none of the model entries"
    for entry, shape, model in fitting:
        try:
            check_sampler(sampler, model, shape)
        except AssertionError as err:
            raise AssertionError(f"sampler={name} with model={entry}: {err}") from None


# --------------------------------------------------------------------------- objectives


@pytest.mark.parametrize("name", entries("objective"))
def test_objective_contract(name):
    objective = instantiate(_node("objective", name, TINY_OBJECTIVE))
    fitting = [(m, shape, model) for m, shape, model in _models() if _fits(objective, model)]
    assert fitting, f"objective={name} fits none of the model entries"
    for entry, shape, model in fitting:
        try:
            check_objective(objective, model, shape)
        except AssertionError as err:
            raise AssertionError(f"objective={name} with model={entry}: {err}") from None


# --------------------------------------------------------------------------- experiments

# Two-stage experiments: the experiment whose finished run model.<key>.run_dir points at.
STAGE_ONE = {"vqvae_fashion_prior": "vqvae_fashion"}
# Reflow experiments (dataset=reflow_pairs): the experiment whose finished smoke run gives the
# (noise, sample) pairs (dgm-reflow-pairs, 256 pairs) and the weights (trainer.init_from).
PAIRS_OF = {"fm_mnist_reflow_cpu": "fm_mnist_cpu"}
# Smoke runs CI may skip (`-m "not slow"`), each with its reason; none at present (the
# slowest takes ~2 s here). `pytest -m slow` runs them.
SLOW: dict[str, str] = {}


def _dataset_of(name: str) -> str:
    """The dataset entry of an experiment (its ``override /dataset``, else train.yaml's)."""
    for path in (Path(CONFIG_DIR) / "experiment" / f"{name}.yaml", Path(CONFIG_DIR) / "train.yaml"):
        for item in OmegaConf.load(path).get("defaults") or []:
            if isinstance(item, DictConfig):
                for key, value in item.items():
                    if key.replace("override ", "").strip("/ ") == "dataset":
                        return value
    raise AssertionError(f"experiment={name} names no dataset")


def _marks(name: str) -> list[pytest.MarkDecorator]:
    data = _dataset_of(name)
    marks = []
    if data == "fashion_mnist":
        marks.append(needs_fashion)
    elif data in ("mnist", "binarized_mnist", "dequantized_mnist", "reflow_pairs"):
        marks.append(needs_mnist)
    if name in SLOW:
        marks.append(pytest.mark.slow)
    return marks


def _smoke_overrides(name: str, *select: str) -> list[str]:
    """``+debug=smoke`` and, read off the composed experiment (with the group selections
    ``select``, e.g. ``model=vae_conv``), TINY_MODEL sizes. Sampler
    steps, sample metrics and IWAE are left to ``+debug=smoke`` itself: the smoke runs
    check that it shrinks them (:func:`_assert_smoke_sized`)."""
    cfg = _compose(f"experiment={name}", *select)
    out = [*select, *SMALL]
    if "inception_fid" in cfg.sample_metrics:  # its weights cannot be fetched here: run
        out.append("~sample_metrics.inception_fid")  # with a test-made file in test_colour_runs
    nodes = {"model": cfg.model}  # and its nested components: model.sde.timesteps
    nodes.update({f"model.{k}": v for k, v in cfg.model.items() if isinstance(v, DictConfig)})
    for where, node in nodes.items():
        for key, value in node.items():
            tiny = _capped(key, value, TINY_MODEL)
            if tiny != value:
                out.append(f"{where}.{key}={tiny}".replace(" ", ""))
    return out


def _smoke_oversized(config: dict[str, Any]) -> list[str]:
    """The ``key=value`` of a resolved config's sampler, objective and sample metrics that
    are larger than SMOKE_MAX or tighter than SMOKE_LOOSE."""
    nodes = {"sampler": config["sampler"], "objective": config["objective"]}
    nodes.update({f"sample_metrics.{k}": v for k, v in (config["sample_metrics"] or {}).items()})
    bad = []
    for where, node in nodes.items():
        for key, value in (node or {}).items():
            if value == "test":  # FID's n_samples: as many as the test split has images
                value = config["dataset"].get("test_subset")
            if key in SMOKE_MAX and (value is None or value > SMOKE_MAX[key]):
                bad.append(f"{where}.{key}={value}")
            elif key in SMOKE_LOOSE and value < SMOKE_LOOSE[key]:
                bad.append(f"{where}.{key}={value}")
    return bad


@pytest.mark.parametrize("name", entries("experiment"))
def test_experiment_composes_and_validates(name, request):
    cfg = _compose(f"experiment={name}")
    assert cfg.experiment_name == name
    if "inception_fid" in cfg.sample_metrics:  # validating fetches its weights: a test-made
        request.getfixturevalue("fake_weights")  # file of their layout in a cache of our own
    validate(cfg)
    smoke = _compose(f"experiment={name}", *_smoke_overrides(name))
    validate(smoke)
    assert smoke.trainer.epochs == 1 and smoke.trainer.progress is False


def test_smoke_overrides_compose_for_users():
    """``dgm-train experiment=vae_mlp +debug=smoke``: the config a user gets."""
    cfg = _compose("experiment=vae_mlp", "+debug=smoke")
    validate(cfg)
    assert (cfg.dataset.subset, cfg.dataset.test_subset) == (256, 200)
    assert (cfg.trainer.epochs, cfg.trainer.batch_size, cfg.trainer.n_samples) == (1, 64, 16)
    assert cfg.trainer.progress is False and cfg.sample_metrics.fid.n_samples == "test"
    assert set(cfg.sample_metrics) == {"fid"}  # shrinking AIS, bits/dim, ... adds none of them
    later = _compose("experiment=vae_mlp", "+debug=smoke", "trainer.epochs=3")
    assert later.trainer.epochs == 3  # overrides after it still win


@pytest.mark.parametrize("name", entries("experiment"))
def test_smoke_shrinks_every_evaluation(name):
    """``+debug=smoke`` alone brings every sampler, objective and sample metric of every
    experiment to smoke size (issue 26, item 2), and without it nothing changes."""
    full = OmegaConf.to_container(_compose(f"experiment={name}"), resolve=True)
    smoke = OmegaConf.to_container(_compose(f"experiment={name}", "+debug=smoke"), resolve=True)
    assert not _smoke_oversized(smoke), _smoke_oversized(smoke)
    assert "smoke" not in full
    assert set(smoke["sample_metrics"]) == set(full["sample_metrics"])
    assert {k: set(v or {}) for k, v in smoke["sample_metrics"].items()} == {
        k: set(v or {}) for k, v in full["sample_metrics"].items()
    }


def test_full_runs_keep_their_evaluation_sizes():
    """Without ``+debug=smoke`` the evaluations keep their full sizes."""
    rbm = _compose("experiment=rbm_cdk")
    assert (rbm.sampler.steps, rbm.sample_metrics.ais.n_runs) == (1000, 100)
    assert rbm.sample_metrics.ais.schedule_steps is None
    assert _compose("experiment=vae_bce").objective.iwae_k == 1000
    bpd = _compose("experiment=ddpm_mnist_cpu").sample_metrics
    assert (bpd.bpd.n, bpd.bpd.rtol, bpd.bpd.atol, bpd.bpd_vlb.n) == (100, 1e-5, 1e-5, 100)
    assert _compose("experiment=ddpm_mnist_cpu").sampler.steps == 50
    assert _compose("experiment=edm_mnist_cpu").sampler.steps == 18
    assert _compose("experiment=score_sde_mnist").sampler.steps == 1000
    assert _compose("experiment=dsm_toy2d").sample_metrics.distance.n == 2000
    assert _compose("experiment=dsm_toy2d").sampler.steps_per_level == 100


def test_values_given_after_smoke_win():
    """``+debug=smoke sample_metrics.ais.n_runs=50``: what the user typed is what runs."""
    rbm = _compose(
        "experiment=rbm_cdk",
        "+debug=smoke",
        "sample_metrics.ais.n_runs=50",
        "sample_metrics.ais.schedule_steps=null",
        "sampler.steps=300",
    )
    assert (rbm.sample_metrics.ais.n_runs, rbm.sampler.steps) == (50, 300)
    assert rbm.sample_metrics.ais.schedule_steps is None
    vae = _compose("experiment=vae_bce", "+debug=smoke", "objective.iwae_k=1000")
    assert vae.objective.iwae_k == 1000
    edm = _compose("experiment=edm_mnist_cpu", "+debug=smoke", "sample_metrics.bpd.rtol=1e-5")
    assert (edm.sample_metrics.bpd.rtol, edm.sample_metrics.bpd.atol) == (1e-5, 1e-3)
    sized = _compose("experiment=rbm_cdk", "+debug=smoke", "smoke.ais_runs=3")
    assert sized.sample_metrics.ais.n_runs == 3  # the smoke sizes themselves
    check_override_keys(["experiment=rbm_cdk", "+debug=smoke", "smoke.ais_runs=3"], "train")


def _assert_smoke_sized(run_dir: Path, final: dict[str, Any], ais_calls: list[tuple]) -> None:
    """The final evaluation of a ``+debug=smoke`` run ran at smoke size: the run's own
    (resolved) config, the sizes its metrics record and the AIS runs actually made."""
    config = load_checkpoint(run_dir / "checkpoints" / "last.pt")["config"]
    assert not _smoke_oversized(config), _smoke_oversized(config)
    for key in ("test/bits_per_dim_n", "test/bits_per_dim_vlb_n", "test/fid_n_samples"):
        assert final.get(key, 0) <= SMOKE_MAX["n_samples" if "fid" in key else "n"], key
    for key in final:
        if key.startswith("test/nll_iwae_k"):
            k = key.removeprefix("test/nll_iwae_k").removesuffix("_se")  # and its standard error
            assert int(k) <= SMOKE_MAX["iwae_k"], key
    for n_runs, temperatures in ais_calls:
        assert n_runs <= SMOKE_MAX["n_runs"] and temperatures <= SMOKE_MAX["schedule_steps"] + 1


def _run(
    name: str,
    run_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    *extra: str,
    select: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A smoke run of experiment ``name`` (with the group selections ``select``, e.g.
    ``model=vae_conv``, and the overrides ``extra``), checked (module docstring)."""
    from dgm_runner.metrics import ais

    cfg = _compose(f"experiment={name}", *_smoke_overrides(name, *select), "logger=none", *extra)
    ais_calls = []
    log_partition = ais.ais_log_partition

    def spy(model, bias, n_runs=100, betas=None, **kwargs):
        ais_calls.append((n_runs, len(ais.default_betas() if betas is None else betas)))
        return log_partition(model, bias, n_runs, betas=betas, **kwargs)

    monkeypatch.setattr(ais, "ais_log_partition", spy)
    final = train(cfg, run_dir)
    if cfg.sample_metrics.get("ais"):
        assert ais_calls, "the AIS metric did not run"
    _assert_smoke_sized(run_dir, final, ais_calls)
    assert final["status"] == "completed", final
    for key, value in final.items():
        if key.startswith("test/") and isinstance(value, float):
            assert math.isfinite(value), (key, value)
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert (run_dir / "samples" / "final.png").is_file() == instantiate(cfg.sampler).draws
    for figure in cfg.figures or {}:
        assert (run_dir / "figures" / f"{figure}.png").is_file(), figure
    return final


@pytest.mark.parametrize("name", [pytest.param(e, marks=_marks(e)) for e in entries("experiment")])
def test_experiment_smoke_run(name, tmp_path, monkeypatch):
    cfg = _compose(f"experiment={name}")
    cifar = cfg.dataset.get("name") == "cifar10"  # (reflow pairs have no name)
    if cfg.exports or cifar:  # exports (the FID classifier) and
        monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path / "cache"))  # decoded data: our cache
    extra = []
    if cifar:  # no CIFAR-10 here: batches in its format, test-made
        write_cifar(tmp_path / "cifar", per_batch=52, n_test=200)  # 260 / 200: the smoke sizes
        extra.append(f"dataset.root={tmp_path / 'cifar'}")
    for key, node in cfg.model.items():
        stage_one = isinstance(node, DictConfig) and node.get("_target_") == LOAD_RUN
        if stage_one and not node.get("run_dir"):
            assert name in STAGE_ONE, f"experiment={name} needs model.{key}.run_dir: see STAGE_ONE"
            _run(STAGE_ONE[name], tmp_path / "stage1", monkeypatch)
            extra.append(f"model.{key}.run_dir={tmp_path / 'stage1'}")
    if OmegaConf.is_missing(cfg.dataset, "pairs"):
        from dgm_runner.cli.reflow_pairs import reflow_pairs

        assert name in PAIRS_OF, f"experiment={name} needs dataset.pairs: see PAIRS_OF"
        first, pairs = tmp_path / "flow", tmp_path / "pairs.pt"
        _run(PAIRS_OF[name], first, monkeypatch)
        reflow_pairs(first, pairs, n=256, batch_size=256, device="cpu")
        extra += [f"dataset.pairs={pairs}", f"trainer.init_from={first}"]
    _run(name, tmp_path / "run", monkeypatch, *extra)


def _targets() -> list[tuple[str, str]]:
    """``(config file, _target_)`` of every node of every YAML under configs/."""
    import yaml

    found = []

    def walk(node, where):
        if isinstance(node, dict):
            if isinstance(node.get("_target_"), str):
                found.append((where, node["_target_"]))
            for value in node.values():
                walk(value, where)
        elif isinstance(node, list):
            for value in node:
                walk(value, where)

    for path in sorted(Path(CONFIG_DIR).rglob("*.yaml")):
        walk(yaml.safe_load(path.read_text()), str(path.relative_to(CONFIG_DIR)))
    return found


def test_every_target_is_the_full_module_path_of_its_object():
    """One registry spelling: ``_target_`` names the module that defines the object, not a
    package that re-exports it."""
    import importlib

    targets = _targets()
    assert len(targets) > 50
    for where, target in targets:
        if not target.startswith("dgm_runner."):
            continue  # Hydra's own (launchers, sweepers)
        module, _, name = target.rpartition(".")
        obj = getattr(importlib.import_module(module), name)
        assert obj.__module__ == module, f"{where}: {target} is defined in {obj.__module__}"


def test_models_import_nothing_above_them():
    """Components never read files or configs: ``models/`` imports only itself and the
    layers below it (docs/development.md, "Layout")."""
    import ast

    allowed = (
        "dgm_runner.models",
        "dgm_runner.config",
        "dgm_runner.distributions",
        "dgm_runner.sdes",
    )
    for path in sorted((Path(CONFIG_DIR).parent / "dgm_runner" / "models").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("dgm_runner")
            ):
                assert node.module.startswith(allowed), f"{path.name} imports {node.module}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("dgm_runner") or alias.name.startswith(
                        allowed
                    ), path.name


# --------------------------------------------------------------------------- colour images

# Every experiment on dataset=synthetic_images (issue 32): 3x32x32 colour images, the
# experiment's own data protocol (binarize, dequantize) kept; two-stage and reflow
# experiments take their first stage from a colour run too.
COLOUR = (3, 32, 32)
SYNTHETIC = [
    "dataset=synthetic_images",
    f"dataset.channels={COLOUR[0]}",
    f"dataset.image_size={COLOUR[1]}",
]
# The experiments whose model refuses 3x32x32 images, and what its one-line refusal says:
# exactly these (a model that stops taking colour images fails here, not silently skipped).
REFUSE_COLOUR = {
    "vae_cnn": "model=vae_cnn (seed 000's VAE2) needs 1x28x28 images",
    "dsm_toy2d": "NoiseConditionalScoreMLP needs (N, D) data",
}
# CI trains one experiment per model family on colour images (about 30 s on 2 CPU cores);
# the others are marked slow (`pytest -m slow tests/test_contracts.py -k colour`: about
# 2 minutes more). (experiment, model entry or None: the experiment's own.)
COLOUR_CI = [
    ("vae_bce", None),  # VAE MLP, threshold-binarized, Bernoulli ELBO, figures
    ("vae_mlp", "vae_conv"),  # the shape-generic convolutional VAE
    ("gan_mnist", None),  # DCGAN's 32x32 stack
    ("edm_mnist_cond_cpu", None),  # U-Net diffusion, EDM, class-conditional
    ("fm_mnist_cond_cpu", None),  # flow matching, class-conditional
    ("glow_mnist", None),  # multi-scale flow, dequantized
    ("made_mnist", None),  # MADE, dynamic binarization
    ("rbm_cdk", None),  # RBM, CD-k, AIS
    ("vqvae_fashion", None),  # VQ-VAE
]


@functools.lru_cache(maxsize=None)
def _colour_overrides(name: str) -> tuple[str, ...]:
    """The overrides that put experiment ``name`` on 3x32x32 synthetic colour images: the
    dataset, its protocol as the experiment has it (``dataset.binarize``,
    ``dataset.dequantize``), and the removal of the experiment's own dataset keys that the
    synthetic dataset does not take (``dataset.per_class`` of vae_kingma_14x14). Empty for a
    reflow experiment: its data are the pairs of a colour run."""
    own = _compose(f"experiment={name}").dataset
    if "pairs" in own.keys():  # (`in` alone is False for its missing value ???)
        return ()
    keys = set(OmegaConf.load(Path(CONFIG_DIR) / "dataset" / "synthetic_images.yaml"))
    merged = _compose(f"experiment={name}", *SYNTHETIC).dataset  # with the experiment's keys
    out = [*SYNTHETIC, *(f"~dataset.{k}" for k in merged if k not in keys)]
    for key in ("binarize", "dequantize"):
        if key in own:
            out.append(f"dataset.{key}={own[key]}")
    return tuple(out)


@functools.lru_cache(maxsize=None)
def _colour_refusal(name: str, model: str | None = None) -> str | None:
    """The one-line refusal of experiment ``name``'s model (or of entry ``model``), at
    TINY_MODEL sizes, for 3x32x32 images; None when it takes them (a model built from a
    finished stage-one run is built, and checked, by that run's experiment)."""
    cfg = _compose(f"experiment={name}", *([f"model={model}"] if model else []))
    nodes = [cfg.model, *(v for v in cfg.model.values() if isinstance(v, DictConfig))]
    if any(node.get("_target_") == LOAD_RUN for node in nodes):
        return None
    for node in nodes:
        for key, value in list(node.items()):
            node[key] = _capped(key, value, TINY_MODEL)
    try:
        build_model(cfg, COLOUR, N_CLASSES)
    except ConfigError as err:
        return str(err)
    return None


def test_the_experiments_refusing_colour_images_are_exactly_the_stated_ones():
    refusing = {name: _colour_refusal(name) for name in entries("experiment")}
    refusing = {name: says for name, says in refusing.items() if says is not None}
    assert set(refusing) == set(REFUSE_COLOUR), refusing
    for name, says in refusing.items():
        assert REFUSE_COLOUR[name] in says and "\n" not in says, (name, says)
    assert _colour_refusal("vae_mlp", "vae_conv") is None


def _colour_run(
    name: str, run_dir: Path, monkeypatch: pytest.MonkeyPatch, *extra: str, model: str | None
) -> None:
    """A smoke run of ``name`` (with model entry ``model``) on colour images; its sample
    grid is an RGB PNG of 32x32 samples in colour (some pixel's R, G, B differ)."""
    from PIL import Image

    select = (f"model={model}",) if model else ()
    _run(name, run_dir, monkeypatch, *_colour_overrides(name), *extra, select=select)
    grid = run_dir / "samples" / "final.png"
    if grid.is_file():
        n = load_checkpoint(run_dir / "checkpoints" / "last.pt")["config"]["trainer"]["n_samples"]
        side = 2 + math.ceil(math.sqrt(n)) * (COLOUR[1] + 2)  # save_grid: 2-px padding
        with Image.open(grid) as image:
            assert image.mode == "RGB" and image.size == (side, side), (image.mode, image.size)
            rgb = torch.from_numpy(np.array(image)).flatten(0, 1)  # (pixels, 3)
        assert (rgb[:, 0] != rgb[:, 1]).any() or (rgb[:, 1] != rgb[:, 2]).any(), "a grey grid"


def _colour_cases() -> list:
    """COLOUR_CI, then every other experiment marked slow."""
    ci = set(COLOUR_CI)
    rest = [(e, None) for e in entries("experiment") if (e, None) not in ci]
    return [
        pytest.param(
            e,
            m,
            id=e + (f"+model={m}" if m else ""),
            marks=[] if (e, m) in ci else [pytest.mark.slow],
        )
        for e, m in [*COLOUR_CI, *rest]
    ]


@pytest.mark.parametrize(("name", "model"), _colour_cases())
def test_experiment_smoke_run_on_colour_images(name, model, tmp_path, monkeypatch):
    """An experiment trains 1 smoke epoch end to end on 3x32x32 synthetic colour images
    (``dataset=synthetic_images``) unless its model refuses them (skipped with the refusal;
    which ones refuse is checked above). FID/KID are skipped with a logged line: no feature
    classifier exists for synthetic_images."""
    refusal = _colour_refusal(name, model)
    if refusal is not None:
        pytest.skip(refusal)
    cfg = _compose(f"experiment={name}")
    if cfg.exports:
        monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path / "cache"))
    extra = []
    for key, node in cfg.model.items():
        if isinstance(node, DictConfig) and node.get("_target_") == LOAD_RUN:
            _colour_run(STAGE_ONE[name], tmp_path / "stage1", monkeypatch, model=None)
            extra.append(f"model.{key}.run_dir={tmp_path / 'stage1'}")
    if OmegaConf.is_missing(cfg.dataset, "pairs"):
        from dgm_runner.cli.reflow_pairs import reflow_pairs

        first, pairs = tmp_path / "flow", tmp_path / "pairs.pt"
        _colour_run(PAIRS_OF[name], first, monkeypatch, model=None)
        reflow_pairs(first, pairs, n=256, batch_size=256, device="cpu")
        extra += [f"dataset.pairs={pairs}", f"trainer.init_from={first}"]
    _colour_run(name, tmp_path / "run", monkeypatch, *extra, model=model)


# Each diffusion process with the objective, parameterisation and sampler of its experiments
# (vp, which has none: the probability-flow ODE).
PROCESSES = {
    "ve": ("continuous_dsm", "none", "pc"),
    "vp": ("continuous_dsm", "none", "heun"),
    "ddpm": ("ddpm", "none", "ddim"),
    "edm": ("edm", "edm", "heun"),
    "linear": ("flow_matching", "velocity", "ode"),
}


@pytest.mark.parametrize("sde", list(PROCESSES))
@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "conditional"])
def test_every_diffusion_process_trains_and_samples_colour_images(sde, conditional):
    """model=score_unet under every process (and flow matching), unconditional and
    class-conditional, on 3x8x8 colour images: the contracts of its objective and sampler
    (:func:`check_objective`, :func:`check_sampler`)."""
    objective, preconditioning, sampler = PROCESSES[sde]
    cfg = _compose(
        "model=score_unet",
        f"model/sde={sde}",
        f"model.preconditioning={preconditioning}",
        f"+model.conditional={str(conditional).lower()}",
    )
    for node in (cfg.model, *(v for v in cfg.model.values() if isinstance(v, DictConfig))):
        for key, value in list(node.items()):
            node[key] = _capped(key, value, TINY_MODEL)
    shape = (3, 8, 8)
    torch.manual_seed(0)
    model = build_model(cfg, shape, N_CLASSES)
    assert model.n_classes == (N_CLASSES if conditional else 0)
    check_objective(instantiate(_node("objective", objective, TINY_OBJECTIVE)), model, shape)
    check_sampler(instantiate(_node("sampler", sampler, TINY_SAMPLER)), model, shape)
