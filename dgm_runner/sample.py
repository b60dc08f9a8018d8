"""``dgm-sample RUN_DIR n=64``: draw samples from a trained run and write a grid."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from dgm_runner import CONFIG_DIR
from dgm_runner.build import restore_run
from dgm_runner.cli import main_with_run_dir, one_line_errors
from dgm_runner.config import ConfigError
from dgm_runner.evaluation import draw_samples
from dgm_runner.io.artifacts import save_grid


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="sample")
@one_line_errors("dgm-sample")
def _app(cfg: DictConfig) -> str:
    if not isinstance(cfg.n, int) or cfg.n < 1:
        raise ConfigError(f"n={cfg.n} is invalid: must be >= 1")
    overrides = {f"sampler.{k}": v for k, v in cfg.sampler.items()}
    # The grid needs the model and the sampler only: load one test image, not the split.
    overrides["dataset.test_subset"] = 1
    _, comps, _ = restore_run(cfg.run_dir, cfg.checkpoint, cfg.device, overrides)
    device = next(comps.model.parameters()).device
    images = draw_samples(comps.model, comps.sampler, cfg.n, cfg.seed, device)
    out = Path(cfg.out) if cfg.out else Path(cfg.run_dir) / "samples" / f"sample_n{cfg.n}_seed{cfg.seed}.png"
    save_grid(images, out)
    print(f"wrote {out} ({cfg.n} samples)")
    return str(out)


def main() -> None:
    """Console entry point of ``dgm-sample``. ``sampler.<key>=<value>`` overrides the run's
    sampler (rewritten to Hydra's ``+sampler.<key>`` since ``sampler`` starts empty)."""
    sys.argv = [a if not a.startswith("sampler.") else f"+{a}" for a in sys.argv]
    main_with_run_dir(_app)
