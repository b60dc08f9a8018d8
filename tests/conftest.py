"""Shared fixtures: an isolated cache, config composition, a finished run to be hostile to.
What test files import (paths, skip marks, shrink overrides, helpers) is in
``tests/helpers.py``; importing it here also points DGM_DATA_DIR at the offline data."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import tests.helpers  # noqa: F401  (sets DGM_DATA_DIR to the offline copy when unset)
from dgm_runner import CONFIG_DIR
from tests.helpers import SMALL


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Decompress datasets into a per-session cache, never into the user's."""
    os.environ["DGM_CACHE_DIR"] = str(tmp_path_factory.mktemp("dgm_cache"))


@pytest.fixture
def compose_cfg():
    """``compose_cfg("experiment=vae_mlp", "trainer.epochs=1")`` -> the composed train config."""

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose("train", overrides=list(overrides))

    return _compose


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory):
    """A finished run, with the .hydra/ files and train.log that the CLI would add (made
    in-process: a CLI launch costs seconds of start-up). Shared by the tests of
    test_hostile_checkpoints.py and test_run_dirs.py, which leave it as it was."""
    from dgm_runner.loop import train

    run_dir = tmp_path_factory.mktemp("hostile") / "run"
    overrides = ["experiment=vae_mlp", *SMALL, "logger=none"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    train(cfg, run_dir)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run_dir / "train.log").write_text("[...] epoch 1/1\n")
    return run_dir
