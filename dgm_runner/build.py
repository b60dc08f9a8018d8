"""Build the components of a run from its config (the config tree is the registry): data,
model, objective and sampler, the optimisers and EMA of the loop, and models of other,
finished runs (a VQ-VAE for its PixelCNN prior)."""

from __future__ import annotations

import inspect
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dgm_runner.config import ConfigError, validate
from dgm_runner.data.base import DataError, DataSplits
from dgm_runner.io.checkpoint import (
    CheckpointError,
    checkpoint_file,
    load_checkpoint,
    require_keys,
)
from dgm_runner.io.layout import RunPaths
from dgm_runner.io.resume import check_same_run
from dgm_runner.io.run_config import UnsafeConfig, check_config, load_yaml_config
from dgm_runner.io.run_dir import same_path
from dgm_runner.objectives.base import Objective
from dgm_runner.samplers.base import Sampler

log = logging.getLogger("dgm_runner")


@dataclass
class Components:
    """What one run trains: data on the device, the model, its objective and sampler."""

    data: DataSplits
    model: torch.nn.Module
    objective: Objective
    sampler: Sampler


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cuda`` without a GPU raises ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device='cuda' but no CUDA device is available: use auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _instantiate_checked(group: str, node: DictConfig, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)`` without Hydra's multi-line wrapper: a DataError (or
    another of the user's errors) raised inside comes out as it is; a ValueError/TypeError
    raised by the constructor (values that are fine one by one but not together) becomes a
    one-line ConfigError."""
    try:
        return instantiate(node, **kwargs)
    except Exception as err:
        cause = err.__cause__ or err
        if isinstance(cause, (DataError, ConfigError, CheckpointError)):
            raise cause from None
        if isinstance(cause, (ValueError, TypeError)):
            raise ConfigError(f"{group}: {cause}".splitlines()[0]) from None
        raise


def build_model(cfg: DictConfig, image_shape: tuple[int, ...], n_classes: int) -> torch.nn.Module:
    """Instantiate ``cfg.model`` for data of shape ``image_shape`` with ``n_classes`` labels;
    ``n_classes`` is passed only to a constructor that declares it.

    Raises:
        ConfigError: the model rejects the data (e.g. vae_cnn on non-28x28 images).
    """
    from hydra.utils import get_object

    runtime: dict[str, Any] = {"image_shape": tuple(image_shape)}
    target = get_object(cfg.model._target_)
    if "n_classes" in inspect.signature(target).parameters:
        runtime["n_classes"] = n_classes
    return _instantiate_checked("model", cfg.model, **runtime)


#: Bytes per parameter a training step holds: the weight, its gradient and Adam's two
#: moments (float32).
TRAINING_BYTES_PER_PARAMETER = 16


def available_memory(device: torch.device) -> int | None:
    """Free memory in bytes where ``device``'s tensors live: the GPU's free memory for CUDA,
    else the host's ``MemAvailable`` (``/proc/meminfo``, Linux); None when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _size_settings(node: dict[str, Any], prefix: str = "") -> list[str]:
    """``key=value`` of the integer and list settings of a model node, nested components'
    under their dotted names (``net.channels=[16, 32, 64]``)."""
    out = []
    for key, value in node.items():
        if isinstance(value, dict):
            out += _size_settings(value, f"{prefix}{key}.")
        elif isinstance(value, (int, list)) and not isinstance(value, bool):
            out.append(f"{prefix}{key}={value}")
    return out


def check_model_fits(
    cfg: DictConfig, image_shape: tuple[int, ...], n_classes: int, device: torch.device
) -> None:
    """Refuse, before any memory is allocated, a model whose parameters cannot be trained
    in the memory of ``device`` (``model.latent_dim=10**9`` would otherwise end in an
    allocator error deep in a constructor): the model is built on PyTorch's ``meta`` device
    (shapes only, no storage) and its parameters and buffers counted at
    :data:`TRAINING_BYTES_PER_PARAMETER` bytes each. A model that cannot be built on the
    meta device (a constructor that reads values) is not checked here.

    Raises:
        ConfigError: one line with the model's size settings, the memory it would need and
            the memory available.
    """
    free = available_memory(device)
    if free is None:
        return
    try:
        with torch.device("meta"):
            probe = build_model(cfg, image_shape, n_classes)
    except ConfigError:
        raise
    except Exception:  # not buildable on meta: the real build reports its own errors
        return
    count = sum(t.numel() for t in (*probe.parameters(), *probe.buffers()))
    need = count * TRAINING_BYTES_PER_PARAMETER
    if need > free:
        sizes = ", ".join(_size_settings(OmegaConf.to_container(cfg.model, resolve=True)))
        raise ConfigError(
            f"model ({sizes}) would have {count:.3g} parameters, {need / 2**30:.4g} GiB with "
            f"gradients and optimiser state, but {free / 2**30:.3g} GiB of {device.type} memory "
            "is available: make the model smaller"
        )


def build_components(cfg: DictConfig, device: torch.device) -> Components:
    """Load the data onto ``device`` and instantiate model, objective and sampler.

    Raises:
        ConfigError: the model, objective and sampler do not fit together.
        DataError: the dataset cannot be found or read.
    """
    data = _instantiate_checked("dataset", cfg.dataset, device=device)
    check_model_fits(cfg, data.image_shape, data.n_classes, device)
    model = build_model(cfg, data.image_shape, data.n_classes).to(device)
    objective = _instantiate_checked("objective", cfg.objective)
    sampler = _instantiate_checked("sampler", cfg.sampler)
    try:
        objective.check_model(model)
        objective.check_data(model, data)  # e.g. coupling=pairs needs (noise, sample) pairs
        sampler.check_model(model)
    except (TypeError, ValueError) as err:  # e.g. a sampler that does not fit, steps > a DDPM's N
        raise ConfigError(str(err)) from None
    if getattr(sampler, "guidance", 0.0) and not getattr(model, "conditional", False):
        raise ConfigError(
            f"sampler.guidance={sampler.guidance}: classifier-free guidance needs a "
            f"class-conditional model, and {type(model).__name__} is not one "
            "(model.conditional=true, e.g. experiment=edm_mnist_cond_cpu)"
        )
    return Components(data, model, objective, sampler)


# trainer.optimizer_impl -> the implementations to try, in order (torch.optim keywords); auto
# ends with no keyword: an optimiser of the user's own that takes neither flag.
_OPTIMIZER_IMPLS: dict[str, tuple[dict[str, bool], ...]] = {
    "auto": ({"fused": True}, {"foreach": True}, {"foreach": False}, {}),
    "fused": ({"fused": True},),
    "foreach": ({"foreach": True},),
    "for_loop": ({"foreach": False},),
}


def optimizer_config(name: str = "adam") -> DictConfig:
    """The ``optimizer`` node of entry ``name`` of the package's ``configs/optimizer/``
    (``adam``, ``adamw``, ``sgd``, ``adagrad``), as ``optimizer=NAME`` composes it: for code
    that builds optimisers outside a composed run (:mod:`dgm_runner.testing`, tests).

    Raises:
        FileNotFoundError: no such entry.
    """
    from dgm_runner import CONFIG_DIR

    return OmegaConf.load(Path(CONFIG_DIR) / "optimizer" / f"{name}.yaml")


def make_optimizer(params, node: Any, impl: str = "auto") -> torch.optim.Optimizer:
    """The optimiser of one parameter group: the ``optimizer`` node (``configs/optimizer/``,
    a ``_partial_`` ``torch.optim`` class with its keywords, validated by
    :func:`dgm_runner.config.validate_optimizer`) called with ``params``. A list value is
    passed as a tuple (``betas``), as torch's signatures have it.

    ``impl`` (``trainer.optimizer_impl``) picks PyTorch's implementation: ``auto``
    (default) takes the fused kernel where this torch build supports it for this optimiser
    and these parameters (CPU and CUDA float tensors in torch >= 2.4: one kernel per
    parameter instead of about ten elementwise ops; measured in ``scripts/bench.py``), else
    the multi-tensor ``foreach`` one, else the per-parameter loop (else, for an optimiser
    class of the user's own that takes neither flag, its one implementation). They compute
    the same update up to float rounding.

    Args:
        params: the parameters (an iterable of tensors).
        node: the ``optimizer`` config node (a DictConfig or a plain dict).
        impl: ``auto | fused | foreach | for_loop``.

    Returns:
        The optimiser; its ``param_groups[0]["fused"]`` / ``["foreach"]`` say which
        implementation was taken.

    Raises:
        ConfigError: ``impl`` names an implementation that cannot be used here.
    """
    params = list(params)
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    partial = instantiate(node, _convert_="all")  # functools.partial(cls, **keywords)
    keywords = {k: tuple(v) if isinstance(v, list) else v for k, v in partial.keywords.items()}
    error: Exception | None = None
    for extra in _OPTIMIZER_IMPLS[impl]:
        try:
            return partial.func(params, *partial.args, **keywords, **extra)
        except (RuntimeError, ValueError, TypeError) as err:  # unsupported device / dtype / torch
            error = err
    if impl == "auto" or not params:
        raise error  # e.g. an empty parameter list: not a config problem
    raise ConfigError(f"trainer.optimizer_impl={impl} cannot be used here: {error}".splitlines()[0])


def compile_objective(objective: Objective) -> bool:
    """``trainer.compile``: replace ``objective.loss`` by ``torch.compile(objective.loss)``.

    The compiled graph is the model's forward pass plus the loss terms (the backward
    pass is compiled too, by AOTAutograd); evaluation and sampling stay eager. Shapes
    are static, so a run compiles twice (full batches and the smaller last batch).
    Objectives whose updates do not go through ``loss()`` (``updates_through_loss =
    False``: GANs' alternating updates, CD-k's closed-form gradient) run eagerly, with a
    warning.

    Args:
        objective: the run's objective (modified in place).

    Returns:
        Whether the updates go through the compiled loss.
    """
    if not objective.updates_through_loss:
        log.warning(
            "trainer.compile: %s makes its updates without loss(); training runs eagerly",
            type(objective).__name__,
        )
        return False
    objective.loss = torch.compile(objective.loss, dynamic=False)
    return True


def make_ema(
    model: torch.nn.Module, decay: float | None
) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of ``model``'s weights, or None when ``decay`` is None
    (Song et al. 2021 sample with EMA weights, decay 0.999).

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (the
    ``num_updates`` rule of TensorFlow's ExponentialMovingAverage), so short runs are not
    evaluated with weights that are still mostly the initialisation.
    """
    if decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel

    def ema_update(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        return d * averaged + (1.0 - d) * current

    return AveragedModel(model, avg_fn=ema_update)


def load_run_model(run_dir: Optional[str] = None, checkpoint: str = "last") -> torch.nn.Module:
    """The trained model of a finished run, on the CPU, in eval mode, rebuilt from its
    saved config by :func:`restore_run` with a one-image data split (only the model is
    kept). The config entry that gives one model another's (``model.vqvae`` of
    ``configs/model/pixelcnn_prior.yaml``) names this function, so models never read files.

    Args:
        run_dir: a run directory written by ``dgm-train``.
        checkpoint: ``"last"``, ``"best"`` or a path to a ``.pt`` file of that run.

    Raises:
        ValueError: (one line; a ConfigError once the runner builds the model) no
            ``run_dir``, or the run is missing, has no usable checkpoint or data.
    """
    if not run_dir:
        raise ValueError("run_dir is required: pass model.vqvae.run_dir=<a finished run directory>")
    try:
        _, comps, _ = restore_run(
            run_dir,
            checkpoint,
            device="cpu",
            overrides={"dataset.subset": 1, "dataset.test_subset": 1},
        )
    except (CheckpointError, DataError) as err:
        raise ValueError(f"run_dir={run_dir}: {err}") from None
    return comps.model.eval()


def read_init_weights(
    init_from: str, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights ``trainer.init_from`` names (a warm start: Liu et al. 2023, Sec. 2.2,
    initialise the next rectified flow from the current one), read and checked before any
    work: a run directory (its ``checkpoints/last.pt``) or a ``.pt`` checkpoint of a run.
    The EMA weights when the checkpoint kept an EMA (``trainer.ema_decay``: what the run
    evaluated and sampled with, as :func:`restore_run` loads them), else its model weights.
    Nothing is imported or built from the checkpoint's config (only tensors are read,
    ``weights_only=True``).

    Args:
        init_from: the run directory or checkpoint file; device: where to load the tensors.

    Returns:
        ``(state_dict for the model, info)``; ``info``: ``path`` (the checkpoint file,
        absolute), ``sha256`` (of its bytes), ``weights`` (``ema`` or ``model``),
        ``epoch`` and ``step`` of the checkpoint (None when it lacks them): what
        ``metrics.json`` records as ``init_from``.

    Raises:
        CheckpointError: one line naming ``trainer.init_from``: a directory without
            ``checkpoints/last.pt``, a missing, unreadable or unsafe file, or one without
            model weights.
    """
    from dgm_runner.io.checkpoint import file_sha256

    given = Path(init_from)
    path = RunPaths(given).last if given.is_dir() else given
    if given.is_dir() and not path.is_file():
        raise CheckpointError(
            f"trainer.init_from={init_from} holds no run (no {RunPaths.relative().last}): pass "
            "a run directory or a .pt checkpoint of one"
        )
    try:
        ckpt = load_checkpoint(path, map_location=device)
        require_keys(ckpt, ("model",), path, "initialise a model from")
    except CheckpointError as err:
        raise CheckpointError(f"trainer.init_from={init_from}: {err}") from None
    prefix = "module."
    if ckpt.get("ema") is not None:
        state = {k[len(prefix) :]: v for k, v in ckpt["ema"].items() if k.startswith(prefix)}
        weights = "ema"
    else:
        state, weights = ckpt["model"], "model"
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"trainer.init_from={init_from}: {path} holds no model weights")
    info = {
        "path": str(path.resolve()),
        "sha256": file_sha256(path),
        "weights": weights,
        "epoch": ckpt.get("epoch"),
        "step": ckpt.get("step"),
    }
    return state, info


def apply_init_weights(
    model: torch.nn.Module, state: dict[str, torch.Tensor], info: dict[str, Any]
) -> None:
    """Load the weights of :func:`read_init_weights` into ``model`` (every key, every shape
    checked: ``load_state_dict(strict=True)``), before the optimisers and the EMA are made.

    Raises:
        CheckpointError: one line: a key missing or unexpected, a shape that differs (the
            first one named), or weights that hold NaN or infinity.
    """
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else type(err).__name__
        raise CheckpointError(
            f"trainer.init_from={info['path']}: its weights do not fit this run's model ({detail})"
        ) from None
    require_finite_weights(model, f"trainer.init_from={info['path']}")


def restore_run(
    run_dir: str | Path,
    checkpoint: str = "last",
    device: str = "auto",
    overrides: dict[str, Any] | None = None,
) -> tuple[DictConfig, Components, dict[str, Any]]:
    """Rebuild a finished (or interrupted) run from its checkpoint.

    Args:
        run_dir: a run directory written by ``dgm-train``.
        checkpoint: ``"last"``, ``"best"`` or a path to a ``.pt`` file.
        device: ``auto | cpu | cuda``.
        overrides: ``{dotted.key: value}`` applied to the saved config before building
            (e.g. ``{"dataset.test_subset": 1000, "sampler.steps": 5000}``); a dict value
            replaces the node (``{"sampler": <configs/sampler/ddim.yaml>}``).

    Returns:
        ``(config, components with the trained weights loaded, raw checkpoint dict)``.

    Raises:
        CheckpointError: missing, unsafe, truncated or foreign checkpoint, or one whose
            model / objective / dataset differ from the run's (``.hydra/config.yaml``, else
            its ``last.pt``): another run's weights are never evaluated as this run.
        UnsafeConfig: the checkpoint's or the run's config names code this command does not
            trust (:mod:`dgm_runner.io.run_config`); nothing was imported or called.
        ConfigError: an override is invalid (validated as ``dgm-train`` validates).
    """
    run_dir = Path(run_dir)
    path = checkpoint_file(run_dir, checkpoint)
    dev = resolve_device(device)
    ckpt = load_checkpoint(path, map_location=dev)
    require_keys(ckpt, ("model", "config"), path, "evaluate")
    check_config(ckpt["config"], path)  # data, never code: before anything is imported
    own = _run_config(run_dir, path)
    if own is not None:
        check_same_run(ckpt["config"], own, path, f"use it as the run in {run_dir}")
    cfg = OmegaConf.create(ckpt["config"])
    for key, value in (
        overrides or {}
    ).items():  # a whole node (a config entry) replaces the old one
        OmegaConf.update(
            cfg, key, value, force_add=True, merge=not isinstance(value, (dict, DictConfig))
        )
    validate(cfg)
    comps = build_components(cfg, dev)
    try:
        comps.model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError) as err:
        raise CheckpointError(
            f"{path}: weights do not fit the model in its config ({str(err).splitlines()[0]})"
        ) from None
    comps.objective.load_state_dict(ckpt.get("objective", {}))
    if ckpt.get("ema") is not None:  # evaluate and sample with the EMA weights, as training did
        prefix = "module."
        comps.model.load_state_dict(
            {k[len(prefix) :]: v for k, v in ckpt["ema"].items() if k.startswith(prefix)}
        )
    require_finite_weights(comps.model, path)
    return cfg, comps, ckpt


def require_finite_weights(model: torch.nn.Module, source: str | Path) -> None:
    """Refuse a model whose floating-point parameters or buffers hold NaN or infinity (the
    weights of a diverged run, or a damaged file): evaluating or sampling it would write
    NaN metrics or a grid of noise, and FID on NaN features can crash inside LAPACK.

    Raises:
        CheckpointError: one line naming how many tensors are affected and the first one.
    """
    bad = [
        name
        for name, t in (*model.named_parameters(), *model.named_buffers())
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]
    if bad:
        raise CheckpointError(
            f"{source}: {len(bad)} weight tensor(s) hold NaN or infinite values (first: "
            f"{bad[0]}): the run diverged or the file is damaged; nothing evaluated or sampled"
        )


def _run_config(run_dir: Path, checkpoint: Path) -> dict[str, Any] | None:
    """The config that defines the run in ``run_dir``: ``.hydra/config.yaml`` (written by
    Hydra at launch, not by a checkpoint), else the config of its ``checkpoints/last.pt``
    when ``checkpoint`` is another file; None when neither exists. Both are checked by
    :func:`dgm_runner.io.run_config.check_config`; an unreadable ``.hydra/config.yaml`` (a
    hand edit) falls back to ``last.pt``'s config with a warning.

    Raises:
        UnsafeConfig: either config names code this command does not trust.
    """
    paths = RunPaths(run_dir)
    saved = paths.config_yaml
    if saved.is_file():
        try:
            return load_yaml_config(saved)
        except UnsafeConfig:
            raise
        except CheckpointError as err:
            log.warning("%s; comparing with the config of checkpoints/last.pt instead", err)
    last = paths.last
    if last.is_file() and not same_path(last, checkpoint):
        config = load_checkpoint(last).get("config")
        check_config(config, last)
        return config
    return None
