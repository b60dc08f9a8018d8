"""Optimisers as ``_partial_`` configs (issue 27, item 4): ``configs/optimizer/`` builds the
optimiser each entry names with its own keywords, argument for argument as the former
``trainer.optimizer`` if-chain did; bad values and stale ``trainer.*`` keys fail in one line
before any work; runs written before keep working (their config is upgraded on read)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf, open_dict

from dgm_runner import CONFIG_DIR
from dgm_runner.build import make_optimizer, optimizer_config, restore_run
from dgm_runner.cli import train as train_cli
from dgm_runner.cli.checks import check_group_choices, check_override_keys
from dgm_runner.config import ConfigError, validate
from dgm_runner.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dgm_runner.io.legacy_config import (
    upgrade_optimizer_config,
    upgrade_overrides,
    upgrade_run_config,
)
from dgm_runner.io.resume import find_unfinished_run
from dgm_runner.io.run_config import (
    UnsafeConfig,
    check_config,
    load_yaml_config,
    trust_targets_of,
)
from dgm_runner.loop import train
from tests.helpers import VAE, needs_mnist, one_line_error

#: Each entry: its class and the hyper-parameters its file sets.
ENTRIES = {
    "adam": (
        torch.optim.Adam,
        {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
    ),
    "adamw": (
        torch.optim.AdamW,
        {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01},
    ),
    "sgd": (torch.optim.SGD, {"lr": 0.05, "momentum": 0.0, "weight_decay": 0.0}),
    "adagrad": (torch.optim.Adagrad, {"lr": 0.02, "weight_decay": 0.0}),
    "adamax": (
        torch.optim.Adamax,
        {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
    ),
}


def _params() -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    return list(torch.nn.Linear(4, 3).parameters())


def _settings(opt: torch.optim.Optimizer) -> dict:
    return {k: v for k, v in opt.param_groups[0].items() if k != "params"}


def test_the_group_has_its_entries():
    names = sorted(p.stem for p in (Path(CONFIG_DIR) / "optimizer").glob("*.yaml"))
    assert names == sorted(ENTRIES)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_each_entry_builds_its_class_with_its_hyper_parameters(name):
    cls, values = ENTRIES[name]
    node = optimizer_config(name)
    assert node._target_ == f"torch.optim.{cls.__name__}" and node._partial_ is True
    opt = make_optimizer(_params(), node, "for_loop")
    assert type(opt) is cls
    settings = _settings(opt)
    assert {k: settings[k] for k in values} == values
    assert isinstance(settings.get("betas", ()), tuple)  # a list in YAML, a tuple for torch
    plain = OmegaConf.to_container(node)  # a plain dict works as well
    assert _settings(make_optimizer(_params(), plain, "for_loop")) == settings


@pytest.mark.parametrize(
    "name, old_call",
    [  # the former if-chain's constructor call, argument for argument (impl: for_loop)
        (
            "adam",
            lambda p: torch.optim.Adam(
                p, lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0, foreach=False
            ),
        ),
        (
            "sgd",
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.0, weight_decay=0.0, foreach=False),
        ),
        ("adagrad", lambda p: torch.optim.Adagrad(p, lr=0.02, weight_decay=0.0, foreach=False)),
    ],
)
def test_the_configs_build_what_the_if_chain_built(name, old_call):
    """Same settings and the same updates, bit for bit, as the code they replace (the 1-epoch
    trajectories of vae_mlp, rbm_cdk, vae_kingma_14x14 and gan_mnist were compared too)."""
    new_params, old_params = _params(), _params()
    new = make_optimizer(new_params, optimizer_config(name), "for_loop")
    old = old_call(old_params)
    assert _settings(new) == _settings(old)
    for _ in range(3):
        for params, opt in ((new_params, new), (old_params, old)):
            opt.zero_grad()
            sum((p**2).sum() for p in params).backward()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(new_params, old_params))


class PlainSGD(torch.optim.Optimizer):
    """An optimiser of a user's own that takes neither ``fused`` nor ``foreach``."""

    def __init__(self, params, lr: float = 0.1) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        """``p -= lr * grad`` for every parameter with a gradient."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"])


def test_an_optimiser_of_ones_own_is_validated_and_built(compose_cfg):
    target = f"{__name__}.PlainSGD"
    cfg = _with(
        compose_cfg("experiment=vae_mlp"), "optimizer", {"_target_": target, "_partial_": True}
    )
    validate(_with(cfg, "optimizer.lr", 0.5))
    with pytest.raises(ConfigError, match=r"optimizer.lr=0 is invalid: must be > 0"):
        validate(_with(cfg, "optimizer.lr", 0))
    opt = make_optimizer(_params(), {"_target_": target, "_partial_": True, "lr": 0.5})
    assert type(opt) is PlainSGD and opt.param_groups[0]["lr"] == 0.5  # auto: no flag
    with pytest.raises(ConfigError, match=r"^trainer.optimizer_impl=for_loop cannot be used"):
        make_optimizer(_params(), {"_target_": target, "_partial_": True}, "for_loop")


def test_experiments_pick_their_optimiser_through_the_group(compose_cfg):
    assert compose_cfg("experiment=vae_mlp").optimizer._target_ == "torch.optim.Adam"
    rbm = compose_cfg("experiment=rbm_cdk").optimizer
    assert rbm._target_ == "torch.optim.SGD" and (rbm.lr, rbm.momentum) == (0.05, 0.0)
    gan = compose_cfg("experiment=gan_mnist").optimizer
    assert (gan.lr, list(gan.betas)) == (2e-4, [0.5, 0.999])
    kingma = compose_cfg("experiment=vae_kingma_14x14").optimizer
    assert kingma._target_ == "torch.optim.Adagrad" and kingma.lr == 0.02
    swapped = compose_cfg("experiment=vae_mlp", "optimizer=adamw", "optimizer.lr=3e-4").optimizer
    assert swapped._target_ == "torch.optim.AdamW" and swapped.lr == 3e-4
    for key in ("lr", "optimizer", "betas", "momentum", "weight_decay"):
        assert key not in compose_cfg("experiment=vae_mlp").trainer


def _with(cfg, key: str, value):
    out = copy.deepcopy(cfg)
    with open_dict(out):
        OmegaConf.update(out, key, value, merge=False)
    return out


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("optimizer.lr", 0.0, "optimizer.lr=0.0 is invalid: must be > 0"),
        ("optimizer.lr", -1e-3, "optimizer.lr=-0.001 is invalid: must be > 0"),
        ("optimizer.betas", [0.9, 1.0], "optimizer.betas[1]=1.0 is invalid: must be < 1"),
        ("optimizer.eps", -1.0, "optimizer.eps=-1.0 is invalid: must be >= 0"),
        ("optimizer.weight_decay", "a", "optimizer.weight_decay='a' is invalid: must be a number"),
        ("optimizer.lrr", 0.1, "optimizer.lrr is not a valid key of torch.optim.Adam"),
        ("optimizer.momentum", 0.5, "remove it: ~optimizer.momentum"),  # Adam has none
        ("optimizer.fused", True, "optimizer.fused is set by the runner"),
        ("optimizer._partial_", False, "optimizer._partial_=False is invalid: must be true"),
        ("optimizer._target_", "torch.nn.Linear", "must be a torch.optim.Optimizer subclass"),
        ("optimizer._target_", "torch.optim.LBFGS", "its step() needs a closure"),
        ("optimizer._target_", "torch.optim.Nope", "cannot be imported"),
        ("optimizer", "adam", "must be a config node with a _target_"),
        ("trainer.lr", 0.1, "trainer.lr is not a valid key"),
    ],
)
def test_bad_optimiser_values_fail_in_one_line_before_any_work(compose_cfg, key, value, says):
    cfg = compose_cfg("experiment=vae_mlp")
    validate(cfg)
    with pytest.raises(ConfigError) as err:
        validate(_with(cfg, key, value))
    assert says in str(err.value) and "\n" not in str(err.value)


def test_an_experiments_setting_of_another_optimiser_is_named_with_the_fix(compose_cfg):
    """gan_mnist sets Adam's betas; with optimizer=sgd they are refused (the former
    trainer.optimizer=sgd dropped them silently), the line says how to drop them."""
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg("experiment=gan_mnist", "optimizer=sgd"))
    assert str(err.value).startswith("optimizer.betas is not a valid key of torch.optim.SGD")
    assert str(err.value).endswith("(remove it: ~optimizer.betas)")
    validate(compose_cfg("experiment=gan_mnist", "optimizer=sgd", "~optimizer.betas"))


def test_sgd_momentum_is_bounded_as_trainer_momentum_was(compose_cfg):
    cfg = compose_cfg("experiment=rbm_cdk")
    validate(_with(cfg, "optimizer.momentum", 0.9))
    with pytest.raises(ConfigError, match=r"optimizer.momentum=1.5 is invalid: must be <= 1"):
        validate(_with(cfg, "optimizer.momentum", 1.5))


def test_an_unknown_optimiser_entry_is_one_line_naming_the_entries():
    with pytest.raises(ConfigError) as err:
        check_group_choices(["experiment=vae_mlp", "optimizer=rmsprop"])
    assert str(err.value) == (
        "optimizer=rmsprop: unknown optimizer; allowed values are adagrad, adam, adamax, adamw, sgd"
    )


@pytest.mark.parametrize(
    "arg, says",
    [
        ("trainer.lr=1e-4", "did you mean optimizer.lr=1e-4?"),
        ("trainer.optimizer=sgd", "did you mean optimizer=sgd?"),
        ("trainer.betas=[0.5,0.9]", "did you mean optimizer.betas=[0.5,0.9]?"),
        ("trainer.weight_decay=0.01", "did you mean optimizer.weight_decay=0.01?"),
        ("trainer.momentum=0.5", "did you mean optimizer.momentum=0.5?"),
        ("trainer.lr=1e-3,3e-4", "did you mean optimizer.lr=1e-3,3e-4?"),  # a sweep
    ],
)
def test_a_moved_key_on_the_command_line_names_its_new_place(arg, says):
    with pytest.raises(ConfigError) as err:
        check_override_keys(["experiment=rbm_cdk", arg], "train")
    assert str(err.value) == f"{arg}: no such key ({says.removesuffix('?')}?)"


def test_a_moved_key_added_with_plus_names_its_new_place_too(compose_cfg):
    """``+trainer.lr=...`` (or a user's config file) passes the command-line check; the
    validator gives the hint: ``optimizer.lr``, and ``optimizer=NAME`` for the group."""
    with pytest.raises(ConfigError, match=r"\(did you mean optimizer.lr\?\)$"):
        validate(compose_cfg("experiment=vae_mlp", "+trainer.lr=0.1"))
    with pytest.raises(ConfigError, match=r"\(did you mean optimizer=sgd\?\)$"):
        validate(compose_cfg("experiment=vae_mlp", "+trainer.optimizer=sgd"))


def test_dgm_train_with_an_old_key_prints_one_line(monkeypatch, capsys):
    one_line_error(
        train_cli.main,
        ["dgm-train", "experiment=vae_mlp", "trainer.optimizer=sgd"],
        "ConfigError",
        "trainer.optimizer=sgd: no such key (did you mean optimizer=sgd?)",
        monkeypatch,
        capsys,
    )


# ---- runs written before issue 27, item 4 --------------------------------------------------

#: The optimiser part of an old run's config (``trainer`` held it) and the node it becomes.
OLD_TRAINERS = [
    (
        {"optimizer": "sgd", "lr": 0.05, "momentum": 0.5, "betas": [0.9, 0.999]},
        {"_target_": "torch.optim.SGD", "lr": 0.05, "momentum": 0.5, "weight_decay": 0.0},
    ),
    (
        {"optimizer": "adagrad", "lr": 0.02, "weight_decay": 0.001},
        {"_target_": "torch.optim.Adagrad", "lr": 0.02, "weight_decay": 0.001},
    ),
    (
        {"optimizer": "adam", "lr": 2e-4, "betas": [0.5, 0.999]},
        {
            "_target_": "torch.optim.Adam",
            "lr": 2e-4,
            "betas": [0.5, 0.999],
            "eps": 1e-8,
            "weight_decay": 0.0,
        },
    ),
    (  # a config from before the keys existed: the old defaults (Adam, 1e-3)
        {},
        {
            "_target_": "torch.optim.Adam",
            "lr": 1e-3,
            "betas": [0.9, 0.999],
            "eps": 1e-8,
            "weight_decay": 0.0,
        },
    ),
]


@pytest.mark.parametrize("old, node", OLD_TRAINERS)
def test_old_trainer_keys_become_the_optimizer_node(old, node):
    config = {"model": {"_target_": "x.Y"}, "trainer": {"epochs": 3, **old}}
    before = copy.deepcopy(config)
    new = upgrade_optimizer_config(config)
    assert config == before  # the input is never modified
    assert new["optimizer"] == {"_partial_": True, **node}
    assert new["trainer"] == {"epochs": 3} and new["model"] == config["model"]
    assert upgrade_optimizer_config(new) is new  # today's form is left as it is
    assert upgrade_optimizer_config({"model": {}}) == {"model": {}}  # no trainer: as it is


def test_an_old_run_config_builds_the_optimiser_it_was_trained_with():
    """The upgraded node passes today's validation of the node and builds the optimiser the
    old if-chain built (``trainer.optimizer=sgd, lr=0.05, momentum=0.5``)."""
    from dgm_runner.config import validate_optimizer

    new = upgrade_run_config({"trainer": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.5}})
    validate_optimizer(new["optimizer"])
    params = _params()
    built = make_optimizer(params, new["optimizer"], "for_loop")
    old = torch.optim.SGD(_params(), lr=0.05, momentum=0.5, weight_decay=0.0, foreach=False)
    assert type(built) is torch.optim.SGD and _settings(built) == _settings(old)


def test_old_run_files_are_read_in_todays_form_and_pass_the_safety_check(tmp_path):
    old = {"trainer": {"optimizer": "adagrad", "lr": 0.02, "epochs": 1}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    save_checkpoint(tmp_path / "last.pt", {"config": old})
    from_yaml = load_yaml_config(tmp_path / "config.yaml")
    from_ckpt = load_checkpoint(tmp_path / "last.pt")["config"]
    assert from_yaml == from_ckpt == upgrade_run_config(old)
    assert from_ckpt["optimizer"]["_target_"] == "torch.optim.Adagrad"
    check_config(from_ckpt, tmp_path / "last.pt")  # raises UnsafeConfig if refused


def test_a_run_config_may_name_torch_optim_classes_only_at_optimizer(compose_cfg):
    """Allowed by name, at ``optimizer._target_`` only; training a run (which trusts its own
    config's modules) does not trust ``torch.optim`` as a module: a name reached through it
    (``torch.optim.swa_utils.torch.save`` is ``torch.save``) stays refused."""
    check_config({"optimizer": {"_target_": "torch.optim.RMSprop", "_partial_": True}}, "f")
    trust_targets_of(compose_cfg("experiment=vae_mlp"))  # what train() does first
    for bad in (
        {"optimizer": {"_target_": "torch.save"}},
        {"optimizer": {"_target_": "torch.optim.LBFGS"}},  # its step() needs a closure
        {"model": {"_target_": "torch.optim.Adam"}},  # not the optimiser's place
        {"optimizer": {"_target_": "torch.optim.swa_utils.torch.save"}},
    ):
        with pytest.raises(UnsafeConfig, match="refused"):
            check_config(bad, "f")


def test_resume_auto_finds_an_old_run_launched_with_the_old_keys(tmp_path):
    assert upgrade_overrides(["trainer.lr=0.01", "+trainer.optimizer=sgd", "model.x=1"]) == [
        "optimizer.lr=0.01",
        "+optimizer=sgd",
        "model.x=1",
    ]
    run = tmp_path / "2026-01-01_00-00-00_000000"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    (run / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump(["experiment=rbm_cdk", "trainer.optimizer=adam", "trainer.lr=0.01"])
    )
    found = find_unfinished_run(
        tmp_path, ["experiment=rbm_cdk", "optimizer=adam", "optimizer.lr=0.01"]
    )
    assert found == run
    assert find_unfinished_run(tmp_path, ["experiment=rbm_cdk", "optimizer=sgd"]) is None


def _as_an_old_run(run_dir: Path) -> None:
    """Rewrite a run's ``last.pt`` and ``.hydra/config.yaml`` configs in the form of before
    issue 27, item 4: the optimiser's keys in ``trainer``, no ``optimizer`` node."""
    path = run_dir / "checkpoints" / "last.pt"
    ckpt = torch.load(path, weights_only=False)
    config = ckpt["config"]
    node = config.pop("optimizer")
    config["trainer"].update(
        optimizer="adam", lr=node["lr"], betas=node["betas"], momentum=0.0, weight_decay=0.0
    )
    torch.save(ckpt, path)
    (run_dir / ".hydra").mkdir(exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))


@needs_mnist
def test_an_old_run_directory_is_evaluated_and_resumed(compose_cfg, tmp_path, caplog):
    """dgm-eval / dgm-sample (``restore_run``) and a resume of a run whose config holds the
    old trainer keys: the optimiser is the run's (Adam), a changed lr is applied, another
    optimiser is refused in one line."""
    import logging

    run_dir = tmp_path / "run"
    train(compose_cfg(*VAE), run_dir)
    _as_an_old_run(run_dir)
    assert "optimizer" not in torch.load(run_dir / "checkpoints" / "last.pt")["config"]
    cfg, comps, _ = restore_run(run_dir, device="cpu")
    assert cfg.optimizer._target_ == "torch.optim.Adam" and "lr" not in cfg.trainer
    with pytest.raises(CheckpointError, match="resume with optimizer=adam$"):
        train(
            compose_cfg(*VAE, "trainer.epochs=2", "optimizer=sgd", f"trainer.resume={run_dir}"),
            run_dir,
        )
    caplog.set_level(logging.INFO, logger="dgm_runner")
    train(
        compose_cfg(*VAE, "trainer.epochs=2", "optimizer.lr=5e-4", f"trainer.resume={run_dir}"),
        run_dir,
    )
    assert "optimizer.lr changed on resume: 0.001 -> 0.0005" in caplog.text
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["config"]["optimizer"]["lr"] == 5e-4
    assert ckpt["optimizers"]["model"]["param_groups"][0]["lr"] == 5e-4
