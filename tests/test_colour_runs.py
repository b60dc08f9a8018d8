"""Colour runs end to end (issue 32): the commands a user with internet runs,
`dgm-train experiment=edm_cifar10` and `dgm-train dataset=image_folder dataset.root=DIR
experiment=...`, here on files in the real formats that the tests write (no colour dataset
is reachable on this project's machines): train, evaluate (the opt-in Inception FID with a
weights file of the real layout and random values), a colour sample grid, and a resume that
ends bit-identical to the uninterrupted run, on a memory-mapped training split with
horizontal flips."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dgm_runner.cli.sampler_table import sampler_table
from dgm_runner.data.images import load_image_dataset
from dgm_runner.loop import train
from dgm_runner.metrics.features import export_feature_classifier
from dgm_runner.models.classifier import FeatureCNN
from dgm_runner.testing import compose_train
from tests.image_files import write_cifar, write_image_folder
from tests.resume_check import assert_resume_is_bit_exact

# a narrow U-Net so a CPU epoch takes a second; everything else is the experiment's
NARROW = ["model.net.channels=[8,16,16]", "model.net.emb_dim=16", "model.net.groups=4"]


@pytest.fixture
def cifar_root(tmp_path, monkeypatch):
    """Test-made CIFAR-10 batches with the smoke run's 256 training and 200 test images."""
    monkeypatch.delenv("DGM_DATA_DIR", raising=False)
    write_cifar(tmp_path / "cifar", per_batch=52, n_test=200)
    return tmp_path / "cifar"


def test_edm_cifar10_trains_evaluates_and_draws_a_colour_grid(cifar_root, fake_weights, tmp_path):
    cfg = compose_train(
        [
            "experiment=edm_cifar10",
            "+debug=smoke",
            f"dataset.root={cifar_root}",
            "sample_metrics.inception_fid.features=64",  # the 2048 eigen-solve is 7 s
            "dataset.test_subset=16",  # Inception costs 0.4 s an image: 16 samples, 16 real
            *NARROW,
        ]
    )
    assert cfg.dataset.hflip and cfg.dataset.name == "cifar10"
    final = train(cfg, tmp_path / "run")
    assert final["test/inception_fid"] > 0 and final["test/inception_fid_n_samples"] == 16
    assert "test/fid" not in final  # no CIFAR-10 feature classifier: skipped with a warning
    assert final["test/inception_fid_features"] == 64
    with Image.open(tmp_path / "run" / "samples" / "final.png") as grid:
        assert grid.mode == "RGB" and grid.size == (138, 138)  # 4x4 samples of 32x32, 2-px pads
        pixels = np.asarray(grid).astype(int)
    assert (pixels[..., 0] != pixels[..., 1]).any()  # colour, not grey in three channels
    # the samplers table of the run, in the features of a CIFAR-10 classifier a user trained
    # (none is shipped; an untrained one of the recipe's network stands for it here)
    data = load_image_dataset("cifar10", root=str(cifar_root), test_subset=16)
    path = export_feature_classifier(
        FeatureCNN(data.image_shape, 10), data, tmp_path / "cls", {"test/accuracy": 0.1}
    )
    (row,) = sampler_table(tmp_path / "run", ["heun:2"], n=8, feature_classifier=str(path))
    assert row["reference"] == "colour test images" and not row["classifier_shipped"]
    assert row["nfe"] == 3 and row["fid"] > 0


def test_a_colour_run_resumes_bit_exact_from_a_memory_mapped_split(
    cifar_root, tmp_path, monkeypatch
):
    overrides = [
        "experiment=edm_cifar10",
        "+debug=smoke",
        f"dataset.root={cifar_root}",
        "dataset.storage=memmap",
        "dataset.dequantize=uniform",
        "~sample_metrics.inception_fid",
        "logger=none",
        "trainer.epochs=2",  # 4 batches of 64 an epoch: the signal before step 6 is in epoch 2
        "objective._target_=tests.components.SignallingDSM",
        *NARROW,
    ]
    assert_resume_is_bit_exact(tmp_path, monkeypatch, overrides, signal_at="0:6")


def test_an_image_folder_trains_with_any_experiment(tmp_path, monkeypatch):
    """`dataset=image_folder dataset.root=DIR` under an experiment written for MNIST: the
    folder's classes, the requested size and channels, a grid in colour."""
    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path / "cache"))
    write_image_folder(tmp_path / "imgs", per_class=12)
    final = train(
        compose_train(
            [
                "experiment=vae_mlp",
                "dataset=image_folder",
                f"dataset.root={tmp_path / 'imgs'}",
                "dataset.image_size=16",
                "+debug=smoke",
                "dataset.subset=null",
                "dataset.test_subset=null",
            ]
        ),
        tmp_path / "run",
    )
    assert final["status"] == "completed" and final["test/elbo_loss"] > 0
    with Image.open(tmp_path / "run" / "samples" / "final.png") as grid:
        assert grid.mode == "RGB" and grid.size == (74, 74)  # 4x4 samples of 16x16, 2-px pads
