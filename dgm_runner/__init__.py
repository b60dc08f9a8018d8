"""dgm_runner: a configuration-driven experiment runner for deep generative models."""

__version__ = "0.1.0"

from pathlib import Path as _Path

_PACKAGE = _Path(__file__).resolve().parent

#: The Hydra config tree: ``dgm_runner/configs`` of an installed wheel or sdist, or the
#: repository's top-level ``configs/`` in a checkout (an editable install, ``python -m``
#: from the repository). pyproject.toml installs the one folder as the other.
CONFIG_DIR = str(
    _PACKAGE / "configs" if (_PACKAGE / "configs").is_dir() else _PACKAGE.parent / "configs"
)
