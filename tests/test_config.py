"""Every experiment composes; every bad value fails before training, naming the key."""

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dgm_runner import CONFIG_DIR
from dgm_runner.cli.checks import check_group_choices
from dgm_runner.config import ConfigError, validate
from dgm_runner.loop import train

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))


def test_experiment_list_covers_seed_000():
    assert {"rbm_cdk", "vae_mlp", "vae_cnn"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_validates(compose_cfg, experiment, request):
    cfg = compose_cfg(f"experiment={experiment}")
    if "inception_fid" in cfg.sample_metrics:  # validating fetches its weights: a test-made
        request.getfixturevalue("fake_weights")  # file of their layout (tests/conftest.py)
    validate(cfg)
    assert cfg.experiment_name == experiment
    assert cfg.trainer.seed == 2025


def test_seed_000_settings(compose_cfg):
    rbm = compose_cfg("experiment=rbm_cdk")
    assert (
        rbm.model.hidden_dim == 128 and rbm.dataset.binarize == "threshold" and rbm.objective.k == 1
    )
    assert rbm.trainer.export_name == "model_rbm_seed2025.pt"
    for name, export in (
        ("vae_mlp", "model_vae_seed2025.pt"),
        ("vae_cnn", "model_vae2_seed2025.pt"),
    ):
        cfg = compose_cfg(f"experiment={name}")
        assert cfg.objective.likelihood == "mse" and cfg.objective.kl == "analytic"
        assert cfg.trainer.export_name == export and cfg.dataset.binarize == "none"
    assert compose_cfg("experiment=vae_mlp").model.hidden_dim == 500


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["experiment=vae_mlp", "model.latent_dim=0"], "model.latent_dim"),
        (["experiment=vae_cnn", "model.latent_dim=-3"], "model.latent_dim"),
        (["experiment=rbm_cdk", "objective.k=0"], "objective.k"),
        (["experiment=vae_mlp", "objective.kl=exact"], "objective.kl"),
        (["experiment=vae_mlp", "+model.depth=3"], "model.depth"),
        (["trainer.device=gpu"], "trainer.device"),
        (["optimizer.lr=-1"], "optimizer.lr"),
        (["experiment=vae_mlp", "optimizer.betas=[0.9,1.0]"], "optimizer.betas[1]"),
        (["+optimizer.lrr=0.1"], "optimizer.lrr"),
        (["trainer.epochs=1.5"], "trainer.epochs"),
        (["optimizer._target_=torch.nn.Linear"], "optimizer._target_"),
        (["+trainer.lr=0.1"], "optimizer.lr"),  # moved (issue 27): the hint names its place
        (["+trainer.foo=1"], "trainer.foo"),
        (["dataset.threshold=2"], "dataset.threshold"),
        (["dataset.subset=0"], "dataset.subset"),
        (["dataset.name=cifar"], "dataset.name"),
        (["sampler.steps=0"], "sampler.steps"),
    ],
)
def test_invalid_values_fail_with_the_key_named(compose_cfg, tmp_path, overrides, key):
    cfg = compose_cfg(*overrides)
    with pytest.raises(ConfigError) as err:
        train(cfg, tmp_path / "run")  # fails in validate(), before any data is loaded
    message = str(err.value)
    assert key in message and "\n" not in message
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").rglob("*.pt"))


def test_allowed_values_are_listed(compose_cfg):
    with pytest.raises(ConfigError, match="allowed values are 'auto', 'cpu', 'cuda'"):
        validate(compose_cfg("trainer.device=tpu"))
    with pytest.raises(ConfigError, match="allowed keys are .*latent_dim"):
        validate(compose_cfg("experiment=vae_mlp", "+model.nz=2"))


def test_objective_model_mismatch_is_a_config_error(compose_cfg, tmp_path):
    cfg = compose_cfg(
        "experiment=vae_mlp", "objective=cd", "dataset.subset=64", "dataset.test_subset=64"
    )
    with pytest.raises(ConfigError, match="needs a RBM model"):
        train(cfg, tmp_path)


def test_unknown_group_entry_is_one_line_naming_the_choices():
    models = ", ".join(sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml")))
    assert {"rbm", "vae_cnn", "vae_mlp"} <= set(models.split(", "))
    with pytest.raises(
        ConfigError, match=f"model=foo: unknown model; allowed values are {models}$"
    ):
        check_group_choices(["experiment=vae_mlp", "model=foo"])
    check_group_choices(
        ["model=rbm,vae_mlp", "optimizer.lr=1", "hydra/launcher=basic"]
    )  # valid: no error


def test_cli_rejects_bad_values_before_training(tmp_path):
    for args, key in (
        (["model=foo"], "model=foo"),
        (["experiment=vae_mlp", "model.latent_dim=0"], "model.latent_dim"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "dgm_runner", *args, f"hydra.run.dir={tmp_path / 'r'}"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2
        errors = [line for line in proc.stderr.splitlines() if "error" in line]
        assert len(errors) == 1 and key in errors[0]
        assert not list(tmp_path.rglob("*.pt"))


def test_config_is_plain_yaml_tree():
    # The registry is the config tree: every group entry names an importable _target_.
    for group in ("model", "dataset", "objective", "sampler", "logger"):
        for path in (Path(CONFIG_DIR) / group).glob("*.yaml"):
            node = OmegaConf.load(path)
            assert "_target_" in node, path
