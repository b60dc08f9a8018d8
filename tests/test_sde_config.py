"""The diffusion process as a nested config component (issue 27, item 2): ``model/sde``
selects a process with its own numbers, stale flat keys and a second ``sigma_data`` cannot
be configured, and runs written before keep working (their config is upgraded on read)."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from dgm_runner.build import build_model, load_run_model
from dgm_runner.config import validate, validate_node
from dgm_runner.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dgm_runner.io.legacy_config import upgrade_sde_config
from dgm_runner.io.run_config import check_config, load_yaml_config
from dgm_runner.models.score import ScoreUNet
from dgm_runner.models.unet import UNet
from dgm_runner.objectives.dsm import DiffusionDSM
from dgm_runner.sdes import VESDE, VPSDE, DiscreteDDPM, EDMProcess
from tests.helpers import config_error_line, needs_mnist

TINY = ["model.net.channels=[8,16,16]", "model.net.emb_dim=16", "model.net.groups=4"]
UNET = "dgm_runner.models.score.ScoreUNet"
NET = {"_target_": "dgm_runner.models.unet.UNet", "_partial_": True}  # configs/model/net/unet.yaml


# --------------------------------------------------------------------------- selection


def test_model_sde_edm_alone_gives_karras_numbers(compose_cfg):
    """``model/sde=edm`` on the VE experiment: EDM's own range (Karras et al. 2022, Table 1),
    not the VE range the flat keys used to keep."""
    cfg = compose_cfg("experiment=score_sde_mnist", "model/sde=edm", *TINY)
    validate(cfg)
    node = OmegaConf.to_container(cfg.model.sde)
    assert node == {
        "_target_": "dgm_runner.sdes.EDMProcess",
        "sigma_min": 0.002,
        "sigma_max": 80.0,
        "rho": 7.0,
    }
    sde = build_model(cfg, (1, 28, 28), 10).sde
    assert isinstance(sde, EDMProcess)
    assert (sde.sigma_min, sde.sigma_max, sde.rho) == (0.002, 80.0, 7.0)
    assert float(sde.prior_std()) == 80.0


@pytest.mark.parametrize(
    "entry, cls, values",
    [
        ("ve", VESDE, {"sigma_min": 0.01, "sigma_max": 50.0}),
        ("vp", VPSDE, {"beta_min": 0.1, "beta_max": 20.0}),
        ("ddpm", DiscreteDDPM, {"discrete_steps": 1000, "schedule": "linear"}),
        ("edm", EDMProcess, {"sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0}),
    ],
)
def test_each_process_entry_builds_with_its_own_numbers(compose_cfg, entry, cls, values):
    overrides = [] if entry == "ve" else [f"model/sde={entry}"]  # ve: score_unet's default
    cfg = compose_cfg("model=score_unet", *overrides, *TINY)
    validate(cfg)
    sde = build_model(cfg, (1, 28, 28), 10).sde
    assert type(sde) is cls
    assert {k: getattr(sde, k) for k in values} == values


def test_experiments_select_their_process_through_the_group(compose_cfg):
    edm = compose_cfg("experiment=edm_mnist_cpu")
    assert edm.model.sde._target_ == "dgm_runner.sdes.EDMProcess"
    assert (edm.model.sde.sigma_min, edm.model.sde.sigma_max) == (0.002, 80.0)
    ddpm = compose_cfg("experiment=ddpm_mnist_cpu", "model.sde.schedule=cosine")
    assert ddpm.model.sde._target_ == "dgm_runner.sdes.DiscreteDDPM"
    assert (ddpm.model.sde.timesteps, ddpm.model.sde.schedule) == (1000, "cosine")
    for cfg in (edm, ddpm):  # the flat keys of every process are gone from the model
        assert not {"sigma_min", "sigma_max", "rho", "timesteps", "schedule"} & set(cfg.model)


# --------------------------------------------------------------------------- refusals


def test_a_stale_flat_key_is_refused_in_one_line(compose_cfg):
    message = config_error_line(compose_cfg("experiment=edm_mnist_cpu", "+model.sigma_min=0.01"))
    assert message.startswith("model.sigma_min is not a valid key")
    assert "model.sde.sigma_min" in message  # where the key is now


def test_a_process_name_in_place_of_the_node_is_refused_in_one_line(compose_cfg):
    """``model.sde=edm`` (the old form; Hydra lets it replace the node) names the group."""
    message = config_error_line(compose_cfg("experiment=score_sde_mnist", "model.sde=edm"))
    assert message.startswith("model.sde='edm' is invalid") and "model/sde=NAME" in message


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.sde.sigma_min=0", "model.sde.sigma_min"),
        ("model.sde.rho=-7", "model.sde.rho"),
        ("+model.sde.beta_min=0.1", "model.sde.beta_min"),
    ],
)
def test_process_values_are_checked_against_its_constructor(compose_cfg, override, key):
    message = config_error_line(compose_cfg("experiment=edm_mnist_cpu", override))
    assert message.startswith(key), message


def test_ddpm_schedule_is_checked(compose_cfg):
    cfg = compose_cfg("experiment=ddpm_mnist_cpu", "model.sde.schedule=quadratic")
    assert config_error_line(cfg).startswith("model.sde.schedule='quadratic' is invalid")


def test_objective_and_model_cannot_disagree_on_sigma_data(compose_cfg):
    """The EDM weighting reads the model's sigma_data: the objective has no key for it."""
    cfg = compose_cfg("experiment=edm_mnist_cpu", "+objective.sigma_data=0.3")
    assert config_error_line(cfg).startswith("objective.sigma_data is not a valid key")


def test_edm_weighting_uses_the_models_sigma_data():
    torch.manual_seed(0)
    net = partial(UNet, channels=(4, 8, 8), emb_dim=16, groups=2)
    model = ScoreUNet((1, 8, 8), EDMProcess(), net, "edm", sigma_data=0.3)
    x0, noise = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    t = torch.tensor([0.2, 0.5, 0.8])
    objective = DiffusionDSM(weighting="edm")
    objective.check_model(model)
    got = objective.per_example(model, x0, t, noise)
    x_t = x0 + model.sde.sigma(t)[:, None, None, None] * noise
    plain = 0.5 * (model.predict_noise(x_t, t) - noise).pow(2).flatten(1).sum(1)
    s2 = model.sde.sigma_hat(t) ** 2
    torch.testing.assert_close(got, plain * (s2 + 0.09) / 0.09)
    # with the old default 0.5 instead, the loss would differ: the model's value is used
    assert not torch.allclose(got, plain * (s2 + 0.25) / 0.25)


# --------------------------------------------------------------------------- old runs


def _old_model(**changes) -> dict:
    """A ``model`` node as ``.hydra/config.yaml`` held it before issue 27."""
    node = {
        "_target_": UNET,
        "channels": [8, 16, 16],
        "emb_dim": 16,
        "groups": 4,
        "sde": "edm",
        "sigma_min": 0.002,
        "sigma_max": 80.0,
        "beta_min": 0.1,
        "beta_max": 20.0,
        "timesteps": 1000,
        "schedule": "linear",
        "rho": 7.0,
        "preconditioning": "edm",
        "sigma_data": 0.5,
        "centered": True,
    }
    node.update(changes)
    return {k: v for k, v in node.items() if v is not None}


OLD_OBJECTIVE = {
    "_target_": "dgm_runner.objectives.dsm.DiffusionDSM",
    "t_min": 1e-5,
    "weighting": "edm",
    "time_sampling": "lognormal",
    "p_mean": -1.2,
    "p_std": 1.2,
    "sigma_data": 0.5,
}


def test_old_edm_config_becomes_the_nested_node_with_the_runs_numbers():
    old = {"model": _old_model(sigma_max=60.0), "objective": dict(OLD_OBJECTIVE), "x": 1}
    before = copy.deepcopy(old)
    new = upgrade_sde_config(old)
    assert old == before  # the input is not modified
    assert new["model"] == {
        "sde": {
            "_target_": "dgm_runner.sdes.EDMProcess",
            "sigma_min": 0.002,
            "sigma_max": 60.0,
            "rho": 7.0,
        },
        "_target_": UNET,
        "preconditioning": "edm",
        "sigma_data": 0.5,
        "centered": True,
        "net": {**NET, "channels": [8, 16, 16], "emb_dim": 16, "groups": 4},
    }
    assert new["objective"] == {k: v for k, v in OLD_OBJECTIVE.items() if k != "sigma_data"}
    assert new["x"] == 1
    assert upgrade_sde_config(new) == new  # today's form is left as it is


@pytest.mark.parametrize(
    "changes, cls, values",
    [
        ({"sde": "ve"}, "VESDE", {"sigma_min": 0.002, "sigma_max": 80.0}),
        ({"sde": "vp", "beta_max": 10.0}, "VPSDE", {"beta_min": 0.1, "beta_max": 10.0}),
        (
            {"sde": "ddpm", "timesteps": 20, "schedule": "cosine"},
            "DiscreteDDPM",
            {"timesteps": 20, "schedule": "cosine"},
        ),
        # keys the old config lacked: the old constructor's defaults (sde=ve, the VE range)
        ({"sde": None, "sigma_min": None}, "VESDE", {"sigma_min": 0.01, "sigma_max": 80.0}),
        (
            {"sigma_min": None, "sigma_max": None, "rho": None},
            "EDMProcess",
            {"sigma_min": 0.01, "sigma_max": 50.0, "rho": 7.0},
        ),
    ],
)
def test_old_configs_of_every_process(changes, cls, values):
    new = upgrade_sde_config({"model": _old_model(**changes)})
    assert new["model"]["sde"] == {"_target_": f"dgm_runner.sdes.{cls}", **values}
    kept = {"sde", "net", "_target_", "preconditioning"}
    assert set(new["model"]) == kept | {"sigma_data", "centered"}
    validate_node("model", new["model"], {"image_shape", "n_classes"})  # today's form


def test_an_old_run_with_two_sigma_data_is_refused_in_one_line(tmp_path):
    old = {"model": _old_model(), "objective": {**OLD_OBJECTIVE, "sigma_data": 0.3}}
    with pytest.raises(ValueError, match=r"objective.sigma_data=0.3 differs from model.sigma"):
        upgrade_sde_config(old)
    save_checkpoint(tmp_path / "last.pt", {"config": old})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "last.pt")
    assert "\n" not in str(info.value) and str(tmp_path / "last.pt") in str(info.value)


def test_old_run_files_are_read_in_todays_form(tmp_path):
    """``.hydra/config.yaml`` and a checkpoint of an old run: both readers upgrade, and the
    result passes the config safety check (the process classes are allowed targets)."""
    old = {"model": _old_model(), "objective": dict(OLD_OBJECTIVE)}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    save_checkpoint(tmp_path / "last.pt", {"config": old})
    from_yaml = load_yaml_config(tmp_path / "config.yaml")
    from_ckpt = load_checkpoint(tmp_path / "last.pt")["config"]
    assert from_yaml == from_ckpt == upgrade_sde_config(old)
    assert from_yaml["model"]["sde"]["_target_"] == "dgm_runner.sdes.EDMProcess"
    check_config(from_ckpt, tmp_path / "last.pt")  # raises UnsafeConfig if refused


@needs_mnist
def test_an_old_run_directory_still_loads(compose_cfg, tmp_path):
    """A run directory whose checkpoint and ``.hydra/config.yaml`` hold the old form is
    rebuilt with its own process and weights (what dgm-eval / dgm-sample do)."""
    cfg = compose_cfg("experiment=edm_mnist_cpu", "+debug=smoke", "logger=none", *TINY)
    torch.manual_seed(0)
    trained = build_model(cfg, (1, 28, 28), 10)
    config = OmegaConf.to_container(cfg, resolve=True)
    config["model"] = _old_model(sigma_max=60.0)
    config["objective"] = dict(OLD_OBJECTIVE)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / ".hydra").mkdir()
    save_checkpoint(
        tmp_path / "checkpoints" / "last.pt", {"model": trained.state_dict(), "config": config}
    )
    (tmp_path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    model = load_run_model(str(tmp_path))
    assert isinstance(model.sde, EDMProcess)
    assert (model.sde.sigma_min, model.sde.sigma_max, model.sde.rho) == (0.002, 60.0, 7.0)
    assert (model.preconditioning, model.sigma_data, model.centered) == ("edm", 0.5, True)
    for name, tensor in trained.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_old_eps_keys_get_todays_names():
    """Run configs from before issue 27, item 5: ``eps`` of a diffusion sampler, objective or
    bits/dim is the time floor ``t_min``, annealed Langevin's is ``step_size``; the alias
    ``ContinuousDSM`` is ``DiffusionDSM``."""
    from dgm_runner.io.legacy_config import upgrade_sde_config

    old = {
        "sampler": {"_target_": "dgm_runner.samplers.diffusion.HeunODE", "steps": 18, "eps": 1e-3},
        "objective": {"_target_": "dgm_runner.objectives.dsm.ContinuousDSM", "eps": 1e-5},
        "sample_metrics": {
            "bpd": {"_target_": "dgm_runner.metrics.likelihood.pf_ode_bits_per_dim", "eps": 1e-5},
            "fid": None,
        },
    }
    new = upgrade_sde_config(old)
    assert new["sampler"] == {"_target_": old["sampler"]["_target_"], "steps": 18, "t_min": 1e-3}
    assert new["objective"] == {"_target_": "dgm_runner.objectives.dsm.DiffusionDSM", "t_min": 1e-5}
    assert new["sample_metrics"]["bpd"]["t_min"] == 1e-5 and new["sample_metrics"]["fid"] is None
    assert "eps" in old["sampler"]  # the input is left as it was
    langevin = {"sampler": {"_target_": "dgm_runner.samplers.score.AnnealedLangevin", "eps": 2e-5}}
    assert upgrade_sde_config(langevin)["sampler"]["step_size"] == 2e-5
    today = {"sampler": {"_target_": "dgm_runner.samplers.diffusion.DDIM", "t_min": 1e-3}}
    assert upgrade_sde_config(today) is today
