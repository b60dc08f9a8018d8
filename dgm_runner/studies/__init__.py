"""Studies: the seeds' written questions as numeric experiments checked against closed forms.

Each study is a module ``dgm_runner.studies.<name>`` with a plain function
``run(out_dir, **params) -> dict`` that writes ``result.json`` and a PNG into ``out_dir``
and returns the result (its ``checks`` rows: measured vs closed form). ``dgm-study
<name>`` (``dgm_runner.study``) runs one from ``configs/study/<name>.yaml``;
``dgm-study all`` runs them all and writes a summary table.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.utils import get_method

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


def call_study(study_cfg: Mapping[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Run the study a config describes: ``{_target_, name, **params}`` -> ``target(out_dir, **params)``.

    Args:
        study_cfg: a plain mapping (``OmegaConf.to_container(cfg.study, resolve=True)``).
        out_dir: the run directory (created if missing).

    Returns:
        The study's result dict.
    """
    params = dict(study_cfg)
    target = params.pop("_target_", None)
    params.pop("name", None)
    if not target:
        raise ValueError("study config is invalid: it has no _target_")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return get_method(target)(out_dir, **params)
