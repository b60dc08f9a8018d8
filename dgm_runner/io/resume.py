"""Which run to continue: ``trainer.resume=auto`` finds the newest unfinished run launched
with the same overrides; :func:`check_same_run` refuses a checkpoint made by another model,
objective or dataset (for resuming, and for ``dgm-eval`` / ``dgm-sample``)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import yaml

from dgm_runner.io.atomic import read_json
from dgm_runner.io.checkpoint import CheckpointError
from dgm_runner.io.layout import RunPaths
from dgm_runner.io.legacy_config import upgrade_overrides

#: Config sections whose change makes a checkpoint another run's.
RUN_IDENTITY = ("model", "objective", "dataset")
#: Optimiser settings that decide what its state holds (Adam's ``amsgrad`` keeps a running
#: maximum per parameter, which a state saved without it lacks): a resume cannot change
#: them, nor the optimiser's class; its other settings (``optimizer.lr``, ...) it may.
OPTIMIZER_STATE_KEYS = ("amsgrad",)


def _comparable(overrides: list[str]) -> list[str]:
    """The overrides that define a run: without ``trainer.resume`` and ``hydra.*``."""
    return sorted(
        o for o in overrides if not o.lstrip("+~").startswith(("trainer.resume=", "hydra."))
    )


def is_finished(run_dir: Path) -> bool:
    """Whether ``run_dir/metrics.json`` says the run completed."""
    record = read_json(RunPaths(run_dir).metrics)
    return isinstance(record, dict) and record.get("status") == "completed"


def find_unfinished_run(parent: str | Path, overrides: list[str]) -> Path | None:
    """The newest directory in ``parent`` (run directories are named by launch time) that
    holds ``checkpoints/last.pt``, was launched with the same overrides (ignoring
    ``trainer.resume`` and ``hydra.*``; read from ``.hydra/overrides.yaml``, an old run's
    with today's keys) and has not completed; None if there is none.

    Args:
        parent: e.g. ``outputs/vae_mlp`` (the experiment's run folder).
        overrides: the current command line's overrides.
    """
    parent = Path(parent)
    if not parent.is_dir():
        return None
    wanted = _comparable(list(overrides))
    for run_dir in sorted(
        (p for p in parent.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True
    ):
        paths = RunPaths(run_dir)
        if not paths.last.is_file() or is_finished(run_dir):
            continue
        try:
            saved = yaml.safe_load(paths.overrides_yaml.read_text()) or []
        except (OSError, yaml.YAMLError):
            continue
        if _comparable(upgrade_overrides([str(o) for o in saved])) == wanted:
            return run_dir
    return None


def _new_option_at_default(node: dict[str, Any], key: str) -> bool:
    """Whether ``node[key]`` is a constructor argument of ``node["_target_"]`` at its default:
    an option added to the code after a checkpoint was written (e.g. ``objective.log_every``),
    which changes nothing for a run that never had it."""
    target = node.get("_target_")
    if not isinstance(target, str):
        return False
    try:
        from hydra.utils import get_method

        param = inspect.signature(get_method(target)).parameters.get(key)
    except Exception:  # not importable / no signature: treat as a real difference
        return False
    return (
        param is not None
        and param.default is not inspect.Parameter.empty
        and param.default == node[key]
    )


def _same_target(a: Any, b: Any) -> bool:
    """Whether two ``_target_`` strings name the same object (``dgm_runner.models.VAEMLP``,
    the re-export older configs used, is ``dgm_runner.models.vae.VAEMLP``)."""
    if a == b:
        return True
    try:
        from hydra.utils import get_object

        return get_object(a) is get_object(b)
    except Exception:
        return False


#: A key one config has and the other lacks: :func:`first_difference`'s value for it.
_MISSING = object()


def _shown(value: Any) -> str:
    """A value of a one-line difference: short (a whole section is never printed)."""
    if value is _MISSING:
        return "absent"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def first_difference(saved: Any, current: Any, where: str = "") -> tuple[str, Any, Any] | None:
    """The first dotted key (sorted order) at which ``saved`` and ``current`` differ, with
    both values (:data:`_MISSING` where one lacks it), or None when they are the same run's
    config: options the saved config predates, at their defaults, and ``_target_``
    spellings of the same object do not count."""
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in sorted(saved.keys() | current.keys(), key=str):
            path = f"{where}.{key}" if where else str(key)
            if key not in saved:
                if not _new_option_at_default(current, key):
                    return path, _MISSING, current[key]
            elif key not in current:
                return path, saved[key], _MISSING
            elif key == "_target_":
                if not _same_target(saved[key], current[key]):
                    return path, saved[key], current[key]
            else:
                found = first_difference(saved[key], current[key], path)
                if found is not None:
                    return found
        return None
    return None if saved == current else (where, saved, current)


def _same_config(saved: Any, current: Any) -> bool:
    """``saved == current`` except for options the saved config predates (at their
    defaults) and ``_target_`` spellings of the same object."""
    return first_difference(saved, current) is None


def check_same_run(
    saved: dict[str, Any], current: dict[str, Any], path: str | Path, action: str
) -> None:
    """Refuse to use checkpoint ``path`` (config ``saved``) as the run configured by ``current``
    when their model, objective or dataset sections differ (options the saved config
    predates, at their defaults, do not count).

    Args:
        saved: the checkpoint's resolved config; current: the run's resolved config.
        path: the checkpoint, for the message; action: ``"resume"``, ``"evaluate"``, ...

    Raises:
        CheckpointError: one line naming the first section that differs.
    """
    found = _identity_difference(saved, current)
    if found is not None:
        key, before, now = found
        section = key.split(".")[0]
        raise CheckpointError(
            f"{path} was trained with a different {section} config ({key}: "
            f"{_shown(before)} in the checkpoint, {_shown(now)} in the run); "
            f"refusing to {action} it"
        )


def _identity_difference(saved: dict[str, Any], current: dict[str, Any]) -> tuple | None:
    """The first difference of the :data:`RUN_IDENTITY` sections (:func:`first_difference`)."""
    for key in RUN_IDENTITY:
        found = first_difference(saved.get(key, _MISSING), current.get(key, _MISSING), key)
        if found is not None:
            return found
    return None


def check_resume(cfg: Any, ckpt: dict[str, Any], path: str | Path) -> None:
    """Refuse to resume checkpoint ``ckpt`` (read from ``path``) as the run configured by
    ``cfg`` when their model / objective / dataset, their optimiser class or one of
    :data:`OPTIMIZER_STATE_KEYS` differ (the optimiser's state cannot continue as another
    optimiser's). The optimiser's other settings (``optimizer.lr``, ``betas``, ...) may
    change: the loop applies them to the loaded state
    (:meth:`dgm_runner.train_state.TrainState.load_state_dict`).

    Raises:
        CheckpointError: one line naming what differs: the first differing key of those
            sections with both values (``model.latent_dim: 10 in the run, 20 given ...``),
            or the two optimisers (``... was trained with optimizer=adam ...``).
        UnsafeConfig: the checkpoint's ``optimizer`` node names code this command does not
            trust (checked before anything is imported).
    """
    from omegaconf import OmegaConf

    saved = ckpt["config"]
    current = OmegaConf.to_container(cfg, resolve=True)
    found = _identity_difference(saved, current)
    if found is not None:  # one key, both values: never the two sections (issue 26)
        key, before, now = found
        raise CheckpointError(
            f"{key}: {_shown(before)} in the run, {_shown(now)} given (a resume continues the "
            "run as it was; train a new run to change it)"
        )
    _check_same_optimizer(saved.get("optimizer") or {}, current.get("optimizer") or {}, path)


def _check_same_optimizer(saved: dict[str, Any], current: dict[str, Any], path: Any) -> None:
    """Refuse a resume whose ``optimizer`` node (``current``) names another class than the
    checkpoint's (``saved``, an old run's upgraded on read) or another value of one of
    :data:`OPTIMIZER_STATE_KEYS` (an absent key: the class's default).

    Raises:
        CheckpointError: one line naming both optimisers (and how to resume), or the key.
        UnsafeConfig: the saved node names code this command does not trust.
    """
    before, now = saved.get("_target_"), current.get("_target_")
    if before is None or now is None:
        return
    if before != now:
        from dgm_runner.io.run_config import check_config

        check_config({"optimizer": saved}, path)  # data before any import
        if not _same_target(before, now):
            was = optimizer_choice(before)
            raise CheckpointError(
                f"{path} was trained with {was} ({before}); its state cannot continue as "
                f"{optimizer_choice(now)} ({now}): resume with {was}"
            )
    for key in OPTIMIZER_STATE_KEYS:
        if saved.get(key, _MISSING) == current.get(key, _MISSING):
            continue
        from hydra.utils import get_object  # the current class: validated, imported already

        param = inspect.signature(get_object(now)).parameters.get(key)
        default = param.default if param is not None else None  # stands in for an absent key
        was, given = saved.get(key, default), current.get(key, default)
        if was != given:
            raise CheckpointError(
                f"optimizer.{key}: {_shown(was)} in the run, {_shown(given)} given (the "
                "optimiser state saved with the run was built for its setting; a resume "
                "continues the run as it was; train a new run to change it)"
            )


def optimizer_choice(target: str) -> str:
    """How a user picks optimiser class ``target``: ``optimizer=adam`` when the package's
    ``configs/optimizer/`` has an entry named as the class in lower case
    (``torch.optim.Adam``), else ``optimizer._target_=TARGET``."""
    from dgm_runner import CONFIG_DIR

    name = str(target).rsplit(".", 1)[-1].lower()
    if (Path(CONFIG_DIR) / "optimizer" / f"{name}.yaml").is_file():
        return f"optimizer={name}"
    return f"optimizer._target_={target}"
