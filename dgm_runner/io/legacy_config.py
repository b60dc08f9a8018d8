"""Run configs written before issue 27, read in today's form.

Before issue 27 a ``ScoreUNet`` config named its diffusion process by a string,
``model.sde: edm``, next to the flat numbers of every process (``sigma_min``,
``sigma_max``, ``beta_min``, ``beta_max``, ``timesteps``, ``schedule``, ``rho``), and the
EDM objective held a second ``sigma_data``. Today the process is a nested component,
``model.sde: {_target_: dgm_runner.sdes.EDMProcess, sigma_min: ..., ...}``
(``configs/model/sde/``), and the objective reads ``sigma_data`` from the model. The
checkpoints and ``.hydra/config.yaml`` of runs trained before still hold the old form, so
:func:`upgrade_sde_config` rewrites it whenever a run's config is read
(:func:`dgm_runner.io.checkpoint.load_checkpoint`,
:func:`dgm_runner.io.run_config.load_yaml_config`): ``dgm-eval``, ``dgm-sample`` and a
resume of such a run build the process it was trained with. Plain data in, plain data
out: nothing is imported or called.
"""

from __future__ import annotations

from typing import Any

#: The old ``model.sde`` names -> the process's class and the flat keys it took.
OLD_PROCESSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "ve": ("dgm_runner.sdes.VESDE", ("sigma_min", "sigma_max")),
    "vp": ("dgm_runner.sdes.VPSDE", ("beta_min", "beta_max")),
    "ddpm": ("dgm_runner.sdes.DiscreteDDPM", ("timesteps", "schedule")),
    "edm": ("dgm_runner.sdes.EDMProcess", ("sigma_min", "sigma_max", "rho")),
}
#: The old ``ScoreUNet`` constructor's defaults of its flat process keys (and of ``sde``):
#: what a run whose config lacked a key was trained with (EDM too took the VE range then).
OLD_DEFAULTS: dict[str, Any] = {
    "sde": "ve",
    "sigma_min": 0.01,
    "sigma_max": 50.0,
    "beta_min": 0.1,
    "beta_max": 20.0,
    "timesteps": 1000,
    "schedule": "linear",
    "rho": 7.0,
    "sigma_data": 0.5,
}


def _named(node: Any, *names: str) -> bool:
    """Whether ``node`` is a mapping whose ``_target_`` is a ``dgm_runner`` object called
    one of ``names`` (any spelling: ``dgm_runner.models.ScoreUNet`` is the re-export)."""
    target = node.get("_target_") if isinstance(node, dict) else None
    return (
        isinstance(target, str)
        and target.startswith("dgm_runner.")
        and target.rsplit(".", 1)[-1] in names
    )


#: Old ``eps`` keys by component class name -> today's name (issue 27, item 5: ``eps`` had
#: three meanings): a continuous process's time floor is ``t_min``, annealed Langevin's step
#: (seed 001's epsilon) ``step_size``.
OLD_EPS: dict[str, str] = {
    "DDPMAncestral": "t_min",
    "DDIM": "t_min",
    "HeunODE": "t_min",
    "EulerMaruyama": "t_min",
    "PredictorCorrector": "t_min",
    "DiffusionDSM": "t_min",
    "ContinuousDSM": "t_min",
    "pf_ode_bits_per_dim": "t_min",
    "AnnealedLangevin": "step_size",
}


# remove after 2027-03-01 (issue 27: old run directories)
def upgrade_eps_names(config: Any) -> Any:
    """A run config with today's names: the ``eps`` of a sampler, objective or sample
    metric (:data:`OLD_EPS`) renamed, and the objective ``ContinuousDSM`` (an alias until
    issue 27) named ``DiffusionDSM``. Plain data in, plain data out; the input is never
    modified; anything else is returned as it is."""
    if not isinstance(config, dict):
        return config

    def renamed(node: Any) -> Any:
        if not isinstance(node, dict) or "eps" not in node and not _named(node, "ContinuousDSM"):
            return node
        target = str(node.get("_target_", ""))
        name = target.rsplit(".", 1)[-1]
        node = dict(node)
        if _named(node, "ContinuousDSM"):
            node["_target_"] = target.rsplit(".", 1)[0] + ".DiffusionDSM"
        if "eps" in node and target.startswith("dgm_runner.") and name in OLD_EPS:
            node[OLD_EPS[name]] = node.pop("eps")
        return node

    out = {key: renamed(config[key]) for key in ("sampler", "objective") if key in config}
    metrics = config.get("sample_metrics")
    if isinstance(metrics, dict):
        out["sample_metrics"] = {k: renamed(v) for k, v in metrics.items()}
    changed = {k: v for k, v in out.items() if v != config[k]}
    return {**config, **changed} if changed else config


# remove after 2027-03-01 (issue 27: old run directories)
def upgrade_sde_config(config: Any) -> Any:
    """A run config in the form of issue 27: an old ``ScoreUNet`` node (``model.sde`` a
    name, or absent, next to the flat process keys) becomes a nested ``model.sde`` node with
    the run's own numbers (an absent key: the old constructor's default,
    :data:`OLD_DEFAULTS`) and without the flat keys; an old ``DiffusionDSM`` objective loses
    its ``sigma_data`` when it equals the model's. Anything else, today's form included,
    is returned as it is; the input is never modified.

    Args:
        config: a run's config as plain data (a checkpoint's ``config``, a loaded
            ``.hydra/config.yaml``); any other value is returned unchanged.

    Returns:
        The config, upgraded (a new dict) or the same object.

    Raises:
        ValueError: (one line) the old objective's ``sigma_data`` differs from the model's:
            such a run weighted its loss with another value than its preconditioning used,
            which today's config cannot express.
    """
    if not isinstance(config, dict):
        return config
    config = upgrade_eps_names(config)  # the names of issue 27, item 5 too
    model, objective = config.get("model"), config.get("objective")
    old_model = _named(model, "ScoreUNet") and not isinstance(model.get("sde"), dict)
    old_objective = _named(objective, "DiffusionDSM", "ContinuousDSM") and (
        "sigma_data" in objective
    )
    if not (old_model or old_objective):
        return config
    config = dict(config)
    if old_model and model.get("sde", OLD_DEFAULTS["sde"]) in OLD_PROCESSES:
        name = model.get("sde", OLD_DEFAULTS["sde"])
        target, keys = OLD_PROCESSES[name]
        process = {"_target_": target, **{k: model.get(k, OLD_DEFAULTS[k]) for k in keys}}
        flat = ("sde", *(k for k in OLD_DEFAULTS if k not in ("sde", "sigma_data")))
        config["model"] = {"sde": process, **{k: v for k, v in model.items() if k not in flat}}
    if old_objective:
        mine = objective["sigma_data"]
        model = config.get("model")
        model_value = (model if isinstance(model, dict) else {}).get(
            "sigma_data", OLD_DEFAULTS["sigma_data"]
        )
        if mine != model_value:
            raise ValueError(
                f"objective.sigma_data={mine} differs from model.sigma_data={model_value}: this "
                "run (from before issue 27) weighted its EDM loss with another sigma_data than "
                "its preconditioning used, which today's config cannot express"
            )
        config["objective"] = {k: v for k, v in objective.items() if k != "sigma_data"}
    return config
