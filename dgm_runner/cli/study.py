"""``dgm-study NAME [key=value ...]``: run one study (or ``all``) and print its checks.

``NAME`` is one of ``configs/study/*.yaml`` (``dgm-study grad_variance`` is
``dgm-study study=grad_variance``); parameters are overridden as ``study.<param>=...``.
The parameters are checked against the annotations of the study's ``run`` signature
before it runs (:func:`dgm_runner.studies.validate_study`): a bad value is one line,
``dgm-study: error: ConfigError: study.lr=-1 is invalid: must be > 0``. The run directory
(``outputs/studies/<name>/<time>/`` unless ``hydra.run.dir=...``) gets ``result.json``, the
plots and Hydra's ``.hydra/`` and ``study.log``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dgm_runner import CONFIG_DIR
from dgm_runner.cli.checks import check_group_choices
from dgm_runner.cli.common import FLAGS_WITH_VALUE, one_line_errors
from dgm_runner.config import ConfigError
from dgm_runner.studies import call_study
from dgm_runner.studies.common import checks_table

_INFO_VALUES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def positional_study(argv: list[str]) -> list[str]:
    """Turn ``dgm-study NAME k=v`` into ``dgm-study study=NAME k=v``: the first bare word
    that is not a flag's value becomes ``study=NAME``; flags and ``key=value`` pass through."""
    out: list[str] = []
    previous = ""
    named = any(a.startswith("study=") for a in argv)
    for arg in argv:
        is_value = previous in FLAGS_WITH_VALUE or (
            previous in ("--info", "-i") and arg in _INFO_VALUES
        )
        if not named and not is_value and not arg.startswith("-") and "=" not in arg:
            arg, named = f"study={arg}", True
        out.append(arg)
        previous = arg
    return out


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="dgm_study")
@one_line_errors("dgm-study")
def _app(cfg: DictConfig) -> dict[str, Any]:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    study_cfg = OmegaConf.to_container(cfg.study, resolve=True)
    try:
        result = call_study(study_cfg, out_dir)  # validates cfg.study against run's annotations
    except ValueError as err:  # ConfigError (an invalid parameter) or a study's own one-line check
        print(f"dgm-study: error: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
    checks = result["checks"]
    print(f"{cfg.study.name}: {out_dir}")
    print(checks_table(checks), end="")
    failed = [c for c in checks if not c["ok"]]
    if failed:
        print(
            f"dgm-study: {len(failed)} of {len(checks)} checks disagree (see "
            f"{out_dir / 'result.json'})",
            file=sys.stderr,
        )
        sys.exit(1)
    return result


def main() -> None:
    """Console entry point of ``dgm-study``. A study that is not an entry of
    ``configs/study`` (or of a ``--config-dir``'s ``study/``) is one line listing the
    studies, exit status 2, before Hydra runs: a name is never a path, so
    ``dgm-study ../../x`` cannot load a YAML from outside the group
    (:func:`dgm_runner.cli.checks.check_group_choices`, which checks every group)."""
    argv = positional_study(sys.argv[1:])
    try:
        check_group_choices(argv)
    except ConfigError as err:
        print(f"dgm-study: error: ConfigError: {err}", file=sys.stderr)
        sys.exit(2)
    sys.argv = [sys.argv[0], *argv]
    _app()
