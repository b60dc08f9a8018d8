"""Shared fixtures: offline data location, an isolated cache, config composition."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from dgm_runner import CONFIG_DIR

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Offline MNIST (CI and course machines); an explicit DGM_DATA_DIR wins.
if not os.environ.get("DGM_DATA_DIR") and (SHARED_DATA / "MNIST").is_dir():
    os.environ["DGM_DATA_DIR"] = str(SHARED_DATA)

# Small-but-real settings for smoke runs on MNIST.
SMALL = [
    "dataset.subset=256",
    "dataset.test_subset=200",
    "trainer.epochs=1",
    "trainer.batch_size=64",
    "trainer.progress=false",
    "trainer.n_samples=16",
]


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


def has_mnist() -> bool:
    """Whether the offline MNIST copy is reachable."""
    root = os.environ.get("DGM_DATA_DIR")
    return bool(root) and (Path(root) / "MNIST" / "raw").is_dir()


needs_mnist = pytest.mark.skipif(not has_mnist(), reason="offline MNIST not found (set DGM_DATA_DIR)")
