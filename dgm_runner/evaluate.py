"""``dgm-eval RUN_DIR``: recompute a run's test metrics from its checkpoint and print them."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from dgm_runner import CONFIG_DIR
from dgm_runner.build import restore_run
from dgm_runner.cli import main_with_run_dir, one_line_errors
from dgm_runner.evaluation import all_test_metrics
from dgm_runner.io.atomic import write_json


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
@one_line_errors("dgm-eval")
def _app(cfg: DictConfig) -> dict[str, float]:
    overrides = {"dataset.test_subset": cfg.test_subset} if cfg.test_subset else {}
    run_cfg, comps, ckpt = restore_run(cfg.run_dir, cfg.checkpoint, cfg.device, overrides)
    data = comps.data
    run_cfg.trainer.eval_batch_size = cfg.eval_batch_size
    metrics = all_test_metrics(run_cfg, comps.model, comps, final=True)
    print(f"{cfg.run_dir} ({cfg.checkpoint}, epoch {ckpt['epoch']}, {data.test_x.shape[0]} test images)")
    for key, value in metrics.items():
        print(f"  {key}: {value:.6f}")
    write_json(f"{cfg.run_dir}/eval.json", {"checkpoint": str(cfg.checkpoint), "epoch": ckpt["epoch"], **metrics})
    return metrics


def main() -> None:
    """Console entry point of ``dgm-eval``."""
    main_with_run_dir(_app)
