"""Studies: the seeds' written questions as numeric experiments checked against closed forms.

Each study is a module ``dgm_runner.studies.<name>`` with a plain function
``run(out_dir, **params) -> dict`` that writes ``result.json`` and a PNG into ``out_dir``
and returns the result (its ``checks`` rows: measured vs closed form). ``dgm-study
<name>`` (``dgm_runner.cli.study``) runs one from ``configs/study/<name>.yaml``;
``dgm-study all`` runs them all and writes a summary table. The parameters are declared
by the annotations of ``run``'s signature and checked (:func:`validate_study`) before the
study runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.utils import get_method

from dgm_runner.config import ConfigError, validate_node

#: The studies, in the order ``dgm-study all`` runs them.
STUDIES = (
    "grad_variance",
    "mfvi_blr",
    "bm_meanfield",
    "meanfield_families",
    "noisy_inputs",
    "gaussian_kl",
    "optimal_discriminator",
    "dummy_gan",
)


#: Arguments ``call_study`` passes itself: a study config must not set them.
RUNTIME_ARGS = frozenset({"out_dir"})


def validate_study(study_cfg: Mapping[str, Any], path: str = "study") -> None:
    """Check a study config ``{_target_, name, **params}`` against the annotations of its
    ``run`` signature (:func:`dgm_runner.config.validate_node`: unknown keys, types,
    ``Literal`` choices, ``Range`` bounds, element by element in lists).

    Args:
        study_cfg: a plain mapping (``OmegaConf.to_container(cfg.study, resolve=True)``).
        path: the node's dotted name in messages (``study.lr=-1 is invalid: must be > 0``).

    Raises:
        ConfigError: the first invalid parameter, in one line naming its key.
    """
    node = {k: v for k, v in study_cfg.items() if k != "name"}  # the run directory's name
    if not node.get("_target_"):
        raise ConfigError(f"{path} config is invalid: it has no _target_")
    validate_node(path, node, RUNTIME_ARGS)


def call_study(
    study_cfg: Mapping[str, Any], out_dir: str | Path, path: str = "study"
) -> dict[str, Any]:
    """Validate (:func:`validate_study`) and run the study a config describes:
    ``{_target_, name, **params}`` -> ``target(out_dir, **params)``.

    Args:
        study_cfg: a plain mapping (``OmegaConf.to_container(cfg.study, resolve=True)``).
        out_dir: the run directory (created if missing).
        path: the node's dotted name in error messages.

    Returns:
        The study's result dict.

    Raises:
        ConfigError: an invalid parameter (before ``out_dir`` is created).
    """
    validate_study(study_cfg, path)
    params = dict(study_cfg)
    target = params.pop("_target_")
    params.pop("name", None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return get_method(target)(out_dir, **params)
