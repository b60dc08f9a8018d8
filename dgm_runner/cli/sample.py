"""``dgm-sample RUN_DIR n=64 [sampler=ddim sampler.steps=20]``: draw samples from a trained
run (with its own sampler or another that fits the model) and write a grid."""

from __future__ import annotations

import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from dgm_runner import CONFIG_DIR
from dgm_runner.build import restore_run
from dgm_runner.cli.common import main_with_run_dir, one_line_errors, sampler_overrides
from dgm_runner.config import SampleConfig, validate_schema
from dgm_runner.io.artifacts import save_grid
from dgm_runner.samplers.base import draw_samples


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="sample")
@one_line_errors("dgm-sample")
def _app(cfg: DictConfig) -> str:
    validate_schema("", cfg, SampleConfig)
    overrides = sampler_overrides(cfg)
    # The grid needs the model and the sampler only: load one test image, not the split.
    overrides["dataset.test_subset"] = 1
    _, comps, _ = restore_run(cfg.run_dir, cfg.checkpoint, cfg.device, overrides)
    device = next(comps.model.parameters()).device
    start = time.perf_counter()
    images = draw_samples(comps.model, comps.sampler, cfg.n, cfg.seed, device)
    seconds = time.perf_counter() - start
    tag = f"_{cfg.sampler_name}" if cfg.sampler_name else ""
    out = (
        Path(cfg.out)
        if cfg.out
        else Path(cfg.run_dir) / "samples" / f"sample{tag}_n{cfg.n}_seed{cfg.seed}.png"
    )
    save_grid(images, out)
    nfe = getattr(comps.sampler, "nfe", None)
    print(
        f"wrote {out} ({cfg.n} samples, {seconds:.1f} s{f', {nfe} NFE per sample' if nfe else ''})"
    )
    return str(out)


def main() -> None:
    """Console entry point of ``dgm-sample``. ``sampler=<entry>`` samples with another entry
    of ``configs/sampler`` (e.g. ``sampler=ddim``), ``sampler.<key>=<value>`` overrides
    one of its keys (see :func:`dgm_runner.cli.rewrite_sampler_args`)."""
    main_with_run_dir(_app, "dgm-sample", "sample")
