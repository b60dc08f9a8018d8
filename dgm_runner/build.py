"""Build the components of a run from its config (the config tree is the registry)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dgm_runner.config import ConfigError
from dgm_runner.config import validate
from dgm_runner.data.base import DataError, ImageData
from dgm_runner.io.checkpoint import CheckpointError, load_checkpoint, require_keys
from dgm_runner.io.resume import check_same_run
from dgm_runner.objectives.base import Objective
from dgm_runner.samplers.base import Sampler


@dataclass
class Components:
    """What one run trains: data on the device, the model, its objective and sampler."""

    data: ImageData
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


def build_model(cfg: DictConfig, image_shape: tuple[int, int, int], n_classes: int) -> torch.nn.Module:
    """Instantiate ``cfg.model`` for data of shape ``image_shape`` with ``n_classes`` labels.

    Raises:
        ConfigError: the model rejects the data (e.g. vae_cnn on non-28x28 images).
    """
    return _instantiate_checked("model", cfg.model, image_shape=tuple(image_shape), n_classes=n_classes)


def build_components(cfg: DictConfig, device: torch.device) -> Components:
    """Load the data onto ``device`` and instantiate model, objective and sampler.

    Raises:
        ConfigError: the model, objective and sampler do not fit together.
        DataError: the dataset cannot be found or read.
    """
    data = _instantiate_checked("dataset", cfg.dataset, device=device)
    model = build_model(cfg, data.image_shape, data.n_classes).to(device)
    objective = _instantiate_checked("objective", cfg.objective)
    sampler = _instantiate_checked("sampler", cfg.sampler)
    try:
        objective.check_model(model)
        sampler.check_model(model)
    except (TypeError, ValueError) as err:  # e.g. a sampler that does not fit, steps > a DDPM's N
        raise ConfigError(str(err)) from None
    return Components(data, model, objective, sampler)


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
        ConfigError: an override is invalid (validated as ``dgm-train`` validates).
    """
    run_dir = Path(run_dir)
    path = Path(checkpoint) if checkpoint not in ("last", "best") else run_dir / "checkpoints" / f"{checkpoint}.pt"
    dev = resolve_device(device)
    ckpt = load_checkpoint(path, map_location=dev)
    require_keys(ckpt, ("model", "config"), path, "evaluate")
    own = _run_config(run_dir, path)
    if own is not None:
        check_same_run(ckpt["config"], own, path, f"use it as the run in {run_dir}")
    cfg = OmegaConf.create(ckpt["config"])
    for key, value in (overrides or {}).items():  # a whole node (a config entry) replaces the old one
        OmegaConf.update(cfg, key, value, force_add=True, merge=not isinstance(value, (dict, DictConfig)))
    validate(cfg)
    comps = build_components(cfg, dev)
    try:
        comps.model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError) as err:
        raise CheckpointError(f"{path}: weights do not fit the model in its config ({str(err).splitlines()[0]})") from None
    comps.objective.load_state_dict(ckpt.get("objective", {}))
    if ckpt.get("ema") is not None:  # evaluate and sample with the EMA weights, as training did
        prefix = "module."
        comps.model.load_state_dict({k[len(prefix):]: v for k, v in ckpt["ema"].items() if k.startswith(prefix)})
    return cfg, comps, ckpt


def _run_config(run_dir: Path, checkpoint: Path) -> dict[str, Any] | None:
    """The config that defines the run in ``run_dir``: ``.hydra/config.yaml`` (written by
    Hydra at launch, not by a checkpoint), else the config of its ``checkpoints/last.pt``
    when ``checkpoint`` is another file; None when neither exists."""
    saved = run_dir / ".hydra" / "config.yaml"
    if saved.is_file():
        node = OmegaConf.load(saved)
        try:
            return OmegaConf.to_container(node, resolve=True)
        except Exception:  # an interpolation this process cannot resolve: compare as written
            return OmegaConf.to_container(node, resolve=False)
    last = run_dir / "checkpoints" / "last.pt"
    if last.is_file() and not _same_file(last, checkpoint):
        return load_checkpoint(last).get("config")
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False
