"""The raw U-Net as a network component of its own (issue 27, item 2): ``UNet`` alone,
``model.net`` (group ``model/net``) built and validated like ``model.sde``, and runs written
before the split (U-Net keys flat in ``model``, weights without ``net.``) still load."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from torch.optim.swa_utils import AveragedModel

from dgm_runner.build import build_model, check_model_fits, load_run_model
from dgm_runner.cli.checks import check_group_choices, check_override_keys
from dgm_runner.config import ConfigError, validate, validate_node
from dgm_runner.io.checkpoint import save_checkpoint
from dgm_runner.io.legacy_config import upgrade_net_config, upgrade_sde_config
from dgm_runner.io.run_config import UnsafeConfig, check_config
from dgm_runner.models.score import OLD_UNET_LAYERS, ScoreUNet
from dgm_runner.models.unet import UNet
from dgm_runner.sdes import VESDE, EDMProcess
from tests.helpers import config_error_line, needs_mnist

TINY = ["model.net.channels=[8,16,16]", "model.net.emb_dim=16", "model.net.groups=4"]
NET = {"_target_": "dgm_runner.models.unet.UNet", "_partial_": True}
RUNTIME = {"image_shape", "n_classes"}


def _old_keys(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """A state dict as ScoreUNet wrote it before the split: ``net.`` dropped."""
    head = f"{prefix}net."
    return {(prefix + k[len(head) :] if k.startswith(head) else k): v for k, v in state.items()}


# --------------------------------------------------------------------------- UNet alone


def test_unet_maps_images_to_images_of_out_channels():
    torch.manual_seed(0)
    x, cond = torch.randn(3, 1, 28, 28), torch.rand(3)
    unet = UNet(1, (8, 16, 16), emb_dim=16, groups=4)
    assert unet(x, cond).shape == (3, 1, 28, 28)
    assert UNet(1, (8, 16, 16), 16, 4, out_channels=2)(x, cond).shape == (3, 2, 28, 28)
    rgb = UNet(3, (8, 16, 16), 16, 4)
    assert rgb(torch.randn(2, 3, 8, 12), torch.rand(2)).shape == (2, 3, 8, 12)
    # the conditioning enters the output
    assert not torch.allclose(unet(x, cond), unet(x, cond + 0.5))


def test_unet_parameter_counts_of_the_docstring():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(UNet(1)) == 930_241  # (32, 64, 128): score_sde_mnist
    assert count(UNet(1, (16, 32, 64))) == 272_737  # edm_mnist_cpu, ddpm_mnist_cpu


@pytest.mark.parametrize(
    "shape, match",
    [
        ((2, 1, 30, 28), "divisible by 4"),
        ((2, 1, 28, 6), "divisible by 4"),
        ((2, 3, 28, 28), r"needs \(B, 1, H, W\)"),
        ((1, 28, 28), r"needs \(B, 1, H, W\)"),
    ],
)
def test_unet_refuses_input_it_cannot_take(shape, match):
    with pytest.raises(ValueError, match=match):
        UNet(1, (8, 16, 16), 16, 4)(torch.randn(*shape), torch.rand(shape[0]))


def test_unet_needs_three_widths():
    with pytest.raises(ValueError, match="3 channel widths"):
        UNet(1, (8, 16))


def test_unet_layers_are_created_in_the_order_of_the_old_score_unet():
    """Creation order = initialisation order under a seed and state_dict order: the layers
    ScoreUNet created itself before the split, in the same order (same weights per seed)."""
    names = [key.split(".", 1)[0] for key in UNet(1, (8, 16, 16), 16, 4).state_dict()]
    assert list(dict.fromkeys(names)) == list(OLD_UNET_LAYERS)


# --------------------------------------------------------------------------- model.net


def test_score_unet_builds_its_net_from_the_config_group(compose_cfg):
    cfg = compose_cfg("model=score_unet", "model.net.channels=[16,32,64]")
    validate(cfg)
    assert OmegaConf.to_container(cfg.model.net) == {
        **NET,
        "channels": [16, 32, 64],
        "emb_dim": 128,
        "groups": 8,
    }
    model = build_model(cfg, (1, 28, 28), 10)
    assert isinstance(model.net, UNet) and model.net.in_channels == 1
    assert model.net.conv_in.out_channels == 16
    assert sum(p.numel() for p in model.parameters()) == 272_737
    rgb = build_model(cfg, (3, 32, 32), 10)  # the model completes the partial with C
    assert rgb.net.in_channels == rgb.net.out_channels == 3
    assert rgb.predict_noise(torch.randn(2, 3, 32, 32), torch.rand(2)).shape == (2, 3, 32, 32)


def test_experiments_set_the_width_in_model_net(compose_cfg):
    for experiment, widths in (
        ("edm_mnist_cpu", [16, 32, 64]),
        ("ddpm_mnist_cpu", [16, 32, 64]),
        ("score_sde_mnist", [32, 64, 128]),
    ):
        cfg = compose_cfg(f"experiment={experiment}")
        assert list(cfg.model.net.channels) == widths, experiment
        assert not {"channels", "emb_dim", "groups"} & set(cfg.model), experiment


@pytest.mark.parametrize(
    "override, start, then",
    [
        ("+model.channels=[8,8,8]", "model.channels is not a valid key", "model.net.channels?"),
        ("+model.emb_dim=16", "model.emb_dim is not a valid key", "model.net.emb_dim?"),
        (
            "+model.net.in_channels=3",
            "model.net.in_channels is set by model",
            "must not be configured",
        ),
        ("model.net=unet", "model.net='unet' is invalid", "model/net=NAME"),
        ("model.net._partial_=false", "model.net._partial_=false is invalid", "in_channels"),
        ("model.net.channels=[8,0,8]", "model.net.channels[1]=0 is invalid", ">= 1"),
        ("model.net.channels=[8,8]", "model.net.channels=[8, 8] is invalid", "3 values"),
    ],
)
def test_net_values_are_checked_in_one_line(compose_cfg, override, start, then):
    message = config_error_line(compose_cfg("experiment=edm_mnist_cpu", override))
    assert message.startswith(start) and then in message, message


@pytest.mark.parametrize("key", ["channels=[8,8,8]", "emb_dim=16", "groups=4"])
def test_a_stale_flat_override_names_its_new_place(key):
    """``dgm-train experiment=edm_mnist_cpu model.channels=...`` (no ``+``), before Hydra."""
    with pytest.raises(ConfigError) as info:
        check_override_keys(["experiment=edm_mnist_cpu", f"model.{key}"], "train")
    assert f"(did you mean model.net.{key.split('=')[0]}?)" in str(info.value)


def test_an_unknown_network_entry_is_refused_naming_the_entries():
    check_group_choices(["experiment=edm_mnist_cpu", "model/net=unet"])
    with pytest.raises(ConfigError, match=r"^model/net=resnet: unknown model/net; allowed .* unet"):
        check_group_choices(["experiment=edm_mnist_cpu", "model/net=resnet"])


def test_a_too_large_net_is_refused_naming_its_nested_widths(compose_cfg):
    cfg = compose_cfg("experiment=edm_mnist_cpu", "model.net.channels=[100000,100000,100000]")
    with pytest.raises(ConfigError, match=r"net\.channels=\[100000, 100000, 100000\]"):
        check_model_fits(cfg, (1, 28, 28), 10, torch.device("cpu"))


def test_a_built_network_is_taken_when_its_channels_fit():
    net = UNet(1, (8, 16, 16), 16, 4)
    model = ScoreUNet((1, 8, 8), VESDE(), net)
    assert model.net is net
    with pytest.raises(ValueError, match=r"^ScoreUNet's net must map 1-channel .* in_channels=3"):
        ScoreUNet((1, 8, 8), VESDE(), UNet(3, (8, 16, 16), 16, 4))
    with pytest.raises(ValueError, match="out_channels=2"):
        ScoreUNet((1, 8, 8), VESDE(), UNet(1, (8, 16, 16), 16, 4, out_channels=2))
    with pytest.raises(TypeError, match="model/net=unet"):
        ScoreUNet((1, 8, 8), VESDE(), "unet")
    default = ScoreUNet((1, 8, 8), VESDE())  # the class itself: UNet's default widths
    assert isinstance(default.net, UNet) and default.net.conv_in.out_channels == 32


def test_the_seed_gives_the_same_weights_through_the_config_and_by_hand(compose_cfg):
    cfg = compose_cfg("experiment=edm_mnist_cpu", *TINY)
    torch.manual_seed(3)
    built = build_model(cfg, (1, 28, 28), 10)
    torch.manual_seed(3)
    by_hand = UNet(1, (8, 16, 16), emb_dim=16, groups=4)
    for (name, a), b in zip(built.net.state_dict().items(), by_hand.state_dict().values()):
        assert torch.equal(a, b), name


# --------------------------------------------------------------------------- old weights


def _tiny(seed: int, **kwargs) -> ScoreUNet:
    torch.manual_seed(seed)
    return ScoreUNet(
        (1, 8, 8), EDMProcess(), partial(UNet, channels=(4, 8, 8), emb_dim=16, groups=2), **kwargs
    )


def test_weights_saved_before_the_split_load_into_the_net():
    trained = _tiny(0)
    old = _old_keys(trained.state_dict())
    assert "conv_in.weight" in old and not any(k.startswith("net.") for k in old)
    fresh = _tiny(1)
    assert not torch.equal(fresh.net.conv_in.weight, trained.net.conv_in.weight)
    fresh.load_state_dict(old)  # strict: every key found
    for name, tensor in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
    assert set(old) == set(_old_keys(trained.state_dict()))  # the caller's dict is left alone
    fresh.load_state_dict(trained.state_dict())  # today's keys as they are


def test_an_old_ema_state_loads_under_its_prefix():
    """An EMA (``AveragedModel``: ``module.conv_in.weight``, ``n_averaged``), as resume
    loads it."""
    trained = AveragedModel(_tiny(0))
    old = _old_keys(trained.state_dict(), prefix="module.")
    assert "module.conv_in.weight" in old and "n_averaged" in old
    fresh = AveragedModel(_tiny(1))
    fresh.load_state_dict(old)
    for name, tensor in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name


def test_keys_that_fit_neither_layout_are_still_refused():
    state = _old_keys(_tiny(0).state_dict())
    state["bogus.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="bogus.weight"):
        _tiny(1).load_state_dict(state)
    del state["bogus.weight"], state["conv_out.2.bias"]
    with pytest.raises(RuntimeError, match=r"net\.conv_out\.2\.bias"):
        _tiny(1).load_state_dict(state)


# --------------------------------------------------------------------------- old configs


def _old_model(**changes) -> dict:
    """A ScoreUNet node of a run config from before the split (the process already nested)."""
    node = {
        "sde": {"_target_": "dgm_runner.sdes.VESDE", "sigma_min": 0.01, "sigma_max": 50.0},
        "_target_": "dgm_runner.models.score.ScoreUNet",
        "channels": [8, 16, 16],
        "emb_dim": 16,
        "groups": 4,
        "preconditioning": "none",
        "sigma_data": 0.5,
        "centered": False,
    }
    node.update(changes)
    return {k: v for k, v in node.items() if v is not None}


def test_old_flat_unet_keys_move_into_model_net():
    old = {"model": _old_model(), "x": 1}
    before = copy.deepcopy(old)
    new = upgrade_net_config(old)
    assert old == before  # the input is not modified
    assert new["model"] == {
        "sde": old["model"]["sde"],
        "_target_": "dgm_runner.models.score.ScoreUNet",
        "preconditioning": "none",
        "sigma_data": 0.5,
        "centered": False,
        "net": {**NET, "channels": [8, 16, 16], "emb_dim": 16, "groups": 4},
    }
    assert new["x"] == 1
    assert upgrade_net_config(new) is new  # today's form is left as it is
    assert upgrade_sde_config(old) == new  # what every reader of a run's config applies
    validate_node("model", new["model"], RUNTIME)  # today's form
    check_config(new, "run/last.pt")  # _partial_: true is allowed from disk
    other = {"model": {"_target_": "dgm_runner.models.vae.VAECNN", "channels": 8}}
    assert upgrade_net_config(other) is other  # another model's channels stay


def test_keys_an_old_config_lacked_take_the_old_defaults():
    new = upgrade_net_config({"model": _old_model(channels=None, emb_dim=None, groups=None)})
    assert new["model"]["net"] == {**NET, "channels": [32, 64, 128], "emb_dim": 128, "groups": 8}


@pytest.mark.parametrize("value", ["yes", 1, None, "${oc.env:X}"])
def test_a_partial_flag_other_than_true_or_false_is_refused_from_disk(value):
    config = {"model": {**_old_model(), "net": {**NET, "_partial_": value}}}
    with pytest.raises(UnsafeConfig, match=r"refused model\.net\._partial_: _partial_="):
        check_config(config, "run/last.pt")


@needs_mnist
def test_an_old_run_directory_with_old_weights_and_ema_still_loads(compose_cfg, tmp_path):
    """A run written before the split: flat U-Net keys in both config files, weights and EMA
    without ``net.``; dgm-eval / dgm-sample rebuild it with the EMA's weights."""
    cfg = compose_cfg("experiment=edm_mnist_cpu", "+debug=smoke", "logger=none", *TINY)
    torch.manual_seed(0)
    trained = build_model(cfg, (1, 28, 28), 10)
    ema = AveragedModel(trained)
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(1.0)  # EMA weights that differ from the model's
    config = OmegaConf.to_container(cfg, resolve=True)
    sde = config["model"]["sde"]
    config["model"] = _old_model(sde=sde, preconditioning="edm", centered=True)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / ".hydra").mkdir()
    payload = {
        "model": _old_keys(trained.state_dict()),
        "ema": _old_keys(ema.state_dict(), prefix="module."),
        "config": config,
    }
    save_checkpoint(tmp_path / "checkpoints" / "last.pt", payload)
    (tmp_path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    model = load_run_model(str(tmp_path))
    assert isinstance(model.net, UNet) and model.net.conv_in.out_channels == 8
    assert (model.preconditioning, model.centered) == ("edm", True)
    for name, tensor in ema.module.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
