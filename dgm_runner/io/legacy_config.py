"""Run configs written before issues 27 and 28, read in today's form: :func:`upgrade_run_config`.

Before issue 27 (item 4) the optimiser was chosen by ``trainer.optimizer`` (adam | sgd |
adagrad) with ``trainer.lr``, ``betas``, ``momentum`` and ``weight_decay``; today it is the
``optimizer`` node of ``configs/optimizer/`` (a ``_partial_`` ``torch.optim`` class with its
own keywords), and :func:`upgrade_optimizer_config` moves the old keys there. The
overrides a run was launched with (``.hydra/overrides.yaml``, compared by
``trainer.resume=auto``) are read with today's names by :func:`upgrade_overrides`.

Before issue 28 (item 1) ``dataset.binarize`` was a boolean; today it names the data
protocol (``none | threshold | dynamic | fixed``, :mod:`dgm_runner.data.protocols`), and
:func:`upgrade_dataset_config` (and :func:`upgrade_overrides` for
``dataset.binarize=true``) read ``true`` as ``threshold`` and ``false`` as ``none``: the
same data, bit for bit. A ``true`` / ``false`` typed today fails in one line naming the new
value (:data:`dgm_runner.config.RENAMED_VALUES`).

Before issue 27 a ``ScoreUNet`` config named its diffusion process by a string,
``model.sde: edm``, next to the flat numbers of every process (``sigma_min``,
``sigma_max``, ``beta_min``, ``beta_max``, ``timesteps``, ``schedule``, ``rho``), and the
EDM objective held a second ``sigma_data``. Today the process is a nested component,
``model.sde: {_target_: dgm_runner.sdes.EDMProcess, sigma_min: ..., ...}``
(``configs/model/sde/``), and the objective reads ``sigma_data`` from the model. The
checkpoints and ``.hydra/config.yaml`` of runs trained before still hold the old forms, so
:func:`upgrade_run_config` rewrites them whenever a run's config is read
(:func:`dgm_runner.io.checkpoint.load_checkpoint`,
:func:`dgm_runner.io.run_config.load_yaml_config`): ``dgm-eval``, ``dgm-sample`` and a
resume of such a run build the process it was trained with. Its U-Net keys
(``channels``, ``emb_dim``, ``groups``) moved as well, into the network node ``model.net``
(:func:`upgrade_net_config`, applied by :func:`upgrade_sde_config`). Plain data in, plain
data out: nothing is imported or called.
"""

from __future__ import annotations

from typing import Any

from dgm_runner.config import MOVED_KEYS, RENAMED_VALUES

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


#: The U-Net keys an old ``ScoreUNet`` node held flat, with the old constructor's defaults
#: (what a run whose config lacked one was trained with); today in ``model.net``.
OLD_NET_DEFAULTS: dict[str, Any] = {"channels": [32, 64, 128], "emb_dim": 128, "groups": 8}
#: Today's network node of a ``ScoreUNet`` (``configs/model/net/unet.yaml``): a partial the
#: model completes with the image channels.
NET_NODE: dict[str, Any] = {"_target_": "dgm_runner.models.unet.UNet", "_partial_": True}


# remove after 2027-03-01 (issue 27: old run directories)
def upgrade_net_config(config: Any) -> Any:
    """A run config whose ``ScoreUNet`` node holds the U-Net's ``channels``, ``emb_dim`` and
    ``groups`` itself (before issue 27, item 2) with them in a nested ``model.net`` node
    (:data:`NET_NODE`; a key the old config lacked: the old default,
    :data:`OLD_NET_DEFAULTS`). Anything else, today's form included (a ``model.net`` node),
    is returned as it is; the input is never modified. The weights of such a run load
    through :func:`dgm_runner.models.score.nest_old_unet_keys`."""
    model = config.get("model") if isinstance(config, dict) else None
    if not _named(model, "ScoreUNet") or isinstance(model.get("net"), dict):
        return config
    net = {**NET_NODE, **{k: model.get(k, v) for k, v in OLD_NET_DEFAULTS.items()}}
    rest = {k: v for k, v in model.items() if k not in OLD_NET_DEFAULTS}
    return {**config, "model": {**rest, "net": net}}


# remove after 2027-03-01 (issue 27: old run directories)
def upgrade_sde_config(config: Any) -> Any:
    """A run config in the form of issue 27: an old ``ScoreUNet`` node (``model.sde`` a
    name, or absent, next to the flat process keys) becomes a nested ``model.sde`` node with
    the run's own numbers (an absent key: the old constructor's default,
    :data:`OLD_DEFAULTS`) and without the flat keys, its U-Net keys in ``model.net``
    (:func:`upgrade_net_config`); an old ``DiffusionDSM`` objective loses its
    ``sigma_data`` when it equals the model's. Anything else, today's form included,
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
    config = upgrade_net_config(config)  # and the U-Net's keys in model.net (item 2)
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


#: The old ``trainer`` keys of the optimiser and the old ``TrainerConfig``'s defaults (what a
#: run whose config lacked a key was trained with).
OLD_OPTIMIZER_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam",
    "lr": 1e-3,
    "momentum": 0.0,
    "betas": [0.9, 0.999],
    "weight_decay": 0.0,
}
#: ``trainer.optimizer`` -> the class the old ``make_optimizer`` built and the keys it passed
#: (torch's defaults for the rest: Adam's eps 1e-8, written out as configs/optimizer/adam.yaml
#: does); any other name built Adam.
OLD_OPTIMIZERS: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {
    "adam": ("torch.optim.Adam", ("lr", "betas", "weight_decay"), {"eps": 1e-8}),
    "sgd": ("torch.optim.SGD", ("lr", "momentum", "weight_decay"), {}),
    "adagrad": ("torch.optim.Adagrad", ("lr", "weight_decay"), {}),
}


# remove after 2027-03-01 (issue 27, item 4: old run directories)
def upgrade_optimizer_config(config: Any) -> Any:
    """A run config with an ``optimizer`` node: a config from before issue 27, item 4 (a
    ``trainer`` node and no ``optimizer``) gets the node its ``trainer.optimizer`` /
    ``lr`` / ``betas`` / ``momentum`` / ``weight_decay`` built (:data:`OLD_OPTIMIZERS`; an
    absent key: :data:`OLD_OPTIMIZER_DEFAULTS`), and its ``trainer`` loses those keys. The
    optimiser built from it is the one the run was trained with, argument for argument.
    Anything else, today's form included, is returned as it is; the input is never
    modified."""
    if not isinstance(config, dict) or "optimizer" in config:
        return config
    trainer = config.get("trainer")
    if not isinstance(trainer, dict):
        return config
    old = {k: trainer.get(k, default) for k, default in OLD_OPTIMIZER_DEFAULTS.items()}
    target, keys, extra = OLD_OPTIMIZERS.get(old["optimizer"], OLD_OPTIMIZERS["adam"])
    node = {"_target_": target, "_partial_": True, **{k: old[k] for k in keys}, **extra}
    if "betas" in node:
        node["betas"] = list(node["betas"])
    kept = {k: v for k, v in trainer.items() if k not in OLD_OPTIMIZER_DEFAULTS}
    return {**config, "trainer": kept, "optimizer": node}


# remove after 2027-03-01 (issue 28, item 1: old run directories)
def upgrade_dataset_config(config: Any) -> Any:
    """A run config whose ``dataset`` node has ``binarize: true`` / ``false`` (before issue
    28) with today's names of the same protocols, ``threshold`` / ``none``
    (:data:`dgm_runner.config.RENAMED_VALUES`): the data it loads is the data the run was
    trained on, bit for bit. Anything else is returned as it is; the input is never
    modified."""
    dataset = config.get("dataset") if isinstance(config, dict) else None
    renamed = RENAMED_VALUES["dataset.binarize"]
    if not isinstance(dataset, dict) or not isinstance(dataset.get("binarize"), bool):
        return config
    return {**config, "dataset": {**dataset, "binarize": renamed[dataset["binarize"]]}}


def _renamed_value(key: str, value: str) -> str:
    """An override's value in today's spelling (:data:`dgm_runner.config.RENAMED_VALUES`:
    ``dataset.binarize=true`` -> ``threshold``); other values as they are."""
    old = {str(k).lower(): v for k, v in RENAMED_VALUES.get(key, {}).items()}
    return old.get(value.strip().lower(), value)


# remove after 2027-03-01 (issue 27, item 4, and issue 28, item 1: old run directories)
def upgrade_overrides(overrides: list[str]) -> list[str]:
    """Command-line overrides with today's keys (:data:`dgm_runner.config.MOVED_KEYS`:
    ``trainer.lr=0.01`` -> ``optimizer.lr=0.01``,
    ``trainer.optimizer=sgd`` -> ``optimizer=sgd``; a leading ``+``, ``++`` or ``~`` is
    kept) and values (:data:`dgm_runner.config.RENAMED_VALUES`: ``dataset.binarize=true`` ->
    ``dataset.binarize=threshold``): so ``trainer.resume=auto`` finds a run launched before
    issues 27 and 28 with the same settings. Other overrides are returned as they are."""
    out = []
    for override in overrides:
        sign = override[: len(override) - len(override.lstrip("+~"))]
        body = override[len(sign) :]
        key, eq, value = body.partition("=")
        if key in RENAMED_VALUES and eq:
            out.append(f"{sign}{key}={_renamed_value(key, value)}")
            continue
        out.append(f"{sign}{MOVED_KEYS[key]}{eq}{value}" if key in MOVED_KEYS else override)
    return out


def upgrade_run_config(config: Any) -> Any:
    """A run's config (a checkpoint's ``config``, a loaded ``.hydra/config.yaml``) in
    today's form: :func:`upgrade_sde_config` (with :func:`upgrade_eps_names`),
    :func:`upgrade_optimizer_config` and :func:`upgrade_dataset_config`. Plain data in, plain
    data out; the input is never modified.

    Raises:
        ValueError: see :func:`upgrade_sde_config` (one line).
    """
    return upgrade_dataset_config(upgrade_optimizer_config(upgrade_sde_config(config)))
