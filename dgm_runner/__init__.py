"""dgm_runner: a configuration-driven experiment runner for deep generative models."""

__version__ = "0.1.0"

from pathlib import Path as _Path

#: The Hydra config tree (``configs/`` beside the package; found by an editable install).
CONFIG_DIR = str(_Path(__file__).resolve().parent.parent / "configs")
