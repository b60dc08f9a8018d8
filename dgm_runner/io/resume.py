"""``trainer.resume=auto``: find the newest unfinished run launched with the same overrides."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def _comparable(overrides: list[str]) -> list[str]:
    """The overrides that define a run: without ``trainer.resume`` and ``hydra.*``."""
    return sorted(o for o in overrides if not o.lstrip("+~").startswith(("trainer.resume=", "hydra.")))


def is_finished(run_dir: Path) -> bool:
    """Whether ``run_dir/metrics.json`` says the run completed."""
    try:
        return json.loads((run_dir / "metrics.json").read_text()).get("status") == "completed"
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def find_unfinished_run(parent: str | Path, overrides: list[str]) -> Path | None:
    """The newest directory in ``parent`` (run directories are named by launch time) that
    holds ``checkpoints/last.pt``, was launched with the same overrides (ignoring
    ``trainer.resume`` and ``hydra.*``; read from ``.hydra/overrides.yaml``) and has not
    completed; None if there is none.

    Args:
        parent: e.g. ``outputs/vae_mlp`` (the experiment's run folder).
        overrides: the current command line's overrides.
    """
    parent = Path(parent)
    if not parent.is_dir():
        return None
    wanted = _comparable(list(overrides))
    for run_dir in sorted((p for p in parent.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True):
        if not (run_dir / "checkpoints" / "last.pt").is_file() or is_finished(run_dir):
            continue
        try:
            saved = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or []
        except (OSError, yaml.YAMLError):
            continue
        if _comparable([str(o) for o in saved]) == wanted:
            return run_dir
    return None
