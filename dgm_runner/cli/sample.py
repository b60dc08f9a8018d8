"""``dgm-sample RUN_DIR n=64 [sampler=ddim sampler.steps=20] [label=3]``: draw samples from a
trained run (with its own sampler or another that fits the model; a conditional model's
samples of chosen classes) and write a grid."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from dgm_runner import CONFIG_DIR
from dgm_runner.build import restore_run
from dgm_runner.cli.common import main_with_run_dir, one_line_errors, sampler_overrides
from dgm_runner.config import ConfigError, SampleConfig, validate_schema
from dgm_runner.evaluation import NonFiniteError
from dgm_runner.io.artifacts import save_grid
from dgm_runner.io.layout import RunPaths, check_layout
from dgm_runner.samplers.base import draw_samples


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="sample")
@one_line_errors("dgm-sample")
def _app(cfg: DictConfig) -> str:
    validate_schema("", cfg, SampleConfig)
    if cfg.out and Path(cfg.out).is_dir():  # checked before the (possibly long) sampling
        raise ConfigError(f"out={cfg.out} is a directory: name the image file to write (.png)")
    check_layout(cfg.run_dir)  # before any work: samples/ a file, or a link out of the run
    out = grid_path(cfg)
    if out.exists() and not cfg.overwrite:
        raise ConfigError(f"{out} exists: pass overwrite=true to replace it, or out=<another file>")
    overrides = sampler_overrides(cfg)
    # The grid needs the model and the sampler only: load one test image, not the split.
    overrides["dataset.test_subset"] = 1
    _, comps, _ = restore_run(cfg.run_dir, cfg.checkpoint, cfg.device, overrides)
    _labels(cfg.label, comps)  # checked against the model and set on the sampler
    device = next(comps.model.parameters()).device
    start = time.perf_counter()
    images = draw_samples(comps.model, comps.sampler, cfg.n, cfg.seed, device)
    seconds = time.perf_counter() - start
    if not bool(torch.isfinite(images).all()):
        raise NonFiniteError(
            f"{int((~torch.isfinite(images)).any(dim=tuple(range(1, images.dim()))).sum())} of "
            f"{cfg.n} samples hold NaN or infinite values (sampler settings: fewer or smaller "
            "steps diverge): no grid written"
        )
    save_grid(images, out)
    nfe = getattr(comps.sampler, "nfe", None)
    print(
        f"wrote {out} ({cfg.n} samples, {seconds:.1f} s{f', {nfe} NFE per sample' if nfe else ''})"
    )
    return str(out)


def grid_path(cfg: DictConfig) -> Path:
    """Where the grid goes: ``out=`` when given, else ``RUN/samples/sample<tag>_n<n>_seed<s>.png``
    whose tag names every option that changes the picture: the sampler entry, each
    ``sampler.<key>=<value>``, the labels and a checkpoint other than ``last`` (e.g.
    ``sample_ddim_steps20_label3_n64_seed0.png``), so one call never replaces the grid of
    another (issue 26)."""
    if cfg.out:
        return Path(cfg.out)
    parts = [cfg.sampler_name] if cfg.sampler_name else []
    parts += [f"{k}{v}" for k, v in sorted((cfg.get("sampler") or {}).items())]
    if cfg.label is not None:
        labels = [cfg.label] if isinstance(cfg.label, int) else list(cfg.label)
        parts.append(f"label{'-'.join(map(str, labels))}")
    if cfg.checkpoint != "last":
        parts.append(Path(str(cfg.checkpoint)).stem)
    tag = "".join(f"_{p}" for p in parts)
    return RunPaths(cfg.run_dir).drawn_grid(tag, cfg.n, cfg.seed)


def _labels(label: Any, comps: Any) -> list[int] | None:
    """``label=3`` / ``label=[3,5]``: the classes a conditional model's samples are drawn
    from, set on the run's sampler (which checks them against the model).

    Raises:
        ConfigError: labels for an unconditional model or a sampler that takes none, or
            classes outside ``[0, n_classes)``.
    """
    if label is None:
        return None
    labels = [label] if isinstance(label, int) else list(label)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        raise ConfigError(f"label={label} must be a class or a list of classes")
    if not getattr(comps.model, "conditional", False):
        raise ConfigError(
            f"label={label}: the run's {type(comps.model).__name__} is not a conditional model "
            "(labels are for e.g. experiment=cvae)"
        )
    if not hasattr(comps.sampler, "labels") and not hasattr(comps.sampler, "guidance"):
        raise ConfigError(f"label={label}: sampler {type(comps.sampler).__name__} takes no labels")
    n_classes = getattr(comps.model, "n_classes", 0)
    if not labels or any(not 0 <= v < n_classes for v in labels):
        raise ConfigError(f"label={label}: labels must be classes in [0, {n_classes})")
    comps.sampler.labels = labels
    try:
        comps.sampler.check_model(comps.model)
    except TypeError as err:
        raise ConfigError(f"label={label}: {err}") from None
    return labels


def main() -> None:
    """Console entry point of ``dgm-sample``. ``sampler=<entry>`` samples with another entry
    of ``configs/sampler`` (e.g. ``sampler=ddim``), ``sampler.<key>=<value>`` overrides
    one of its keys (see :func:`dgm_runner.cli.rewrite_sampler_args`)."""
    main_with_run_dir(_app, "dgm-sample", "sample")
