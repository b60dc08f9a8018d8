"""The few lines a run prints at its end: where it is, how it ended, what it measured."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from dgm_runner.io.layout import RunPaths

#: Test metrics worth a line when a run has them (regular expressions on the name after
#: ``test/``), in this order; the monitored metric comes first anyway.
HEADLINE = (
    r"elbo",
    r"celbo",
    r"nll_iwae_k\d+",
    r"log_likelihood_ais",
    r"bits_per_dim",
    r"accuracy",
    r"fid",
    r"inception_fid",
    r"kid",
    r"precision",
    r"recall",
)


def _shown(path: Path) -> Path:
    """``path`` relative to the working directory when it lies inside it (as the user
    launched it: ``outputs/...``), else absolute."""
    path = path.resolve()
    try:
        return path.relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def _duration(seconds: float) -> str:
    """``42.0 s``, ``3.5 min`` or ``1.2 h``."""
    if seconds < 90:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def run_summary(run_dir: str | Path, final: dict[str, Any]) -> str:
    """A run's end-of-run summary (2-6 lines): the run directory and status, the monitored
    test metric, the headline test metrics it has (:data:`HEADLINE`), the training and
    evaluation wall times and the final sample grid, if one was written.

    Args:
        run_dir: the run directory (shown relative to the working directory when inside
            it); final: its ``metrics.json`` (``status``, ``epoch``, ``monitor``,
            ``train_time_s``, ``eval_time_s`` and ``test/...`` values).

    Returns:
        The lines, joined by newlines (no trailing newline).
    """
    run_dir = Path(run_dir)
    monitor = final.get("monitor")
    status, epoch = final.get("status", "?"), final.get("epoch", "?")
    lines = [f"run {status} after {epoch} epochs: {_shown(run_dir)}"]
    if isinstance(monitor, str) and isinstance(final.get(monitor), (int, float)):
        lines.append(f"  monitored {monitor} = {final[monitor]:.6g}")
    shown = []
    for pattern in HEADLINE:
        for key, value in final.items():
            name = key.removeprefix("test/")
            if key.startswith("test/") and key != monitor and re.fullmatch(pattern, name):
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    shown.append(f"{name} {value:.6g}")
    if shown:
        lines.append("  test: " + ", ".join(shown))
    if "test/fid" in final and "test/fid_n_samples" in final:
        # the classifier's reference: grey levels, also for binarized data (or its binarized
        # images); a colour dataset's (CIFAR-10 and the like) is its own colour test split
        reference = "binarized" if final.get("test/fid_reference_binarized") else "grey"
        if final.get("test/fid_reference_channels", 1) > 1:
            reference = "colour"
        classifier = "shipped" if final.get("test/fid_classifier_shipped") else "retrained"
        lines.append(
            f"  FID/KID: {final['test/fid_n_samples']:.0f} samples vs "
            f"{final.get('test/fid_n_real', 0):.0f} {reference} test images, features of the "
            f"{classifier} classifier"
        )
    times = [
        f"{what} {_duration(final[key])}"
        for what, key in (("training", "train_time_s"), ("evaluation", "eval_time_s"))
        if isinstance(final.get(key), (int, float))
    ]
    if times:
        lines.append("  wall time: " + ", ".join(times))
    grid = RunPaths(run_dir).final_grid
    if grid.is_file():
        lines.append(f"  samples: {_shown(grid)}")
    return "\n".join(lines)
