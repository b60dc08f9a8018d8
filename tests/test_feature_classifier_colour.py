"""The feature classifier of the classifier-feature FID on colour images of any size (issue 32):
the network takes its training data's shape (MNIST's 28x28 unchanged), CIFAR-10 has a recipe
but no shipped weights (one line naming the command), and an exported colour classifier
scores colour samples."""

from __future__ import annotations

import pytest
import torch

from dgm_runner.config import validate
from dgm_runner.data.base import DataSplits
from dgm_runner.metrics.features import (
    FeatureClassifierMissing,
    export_feature_classifier,
    load_feature_classifier,
)
from dgm_runner.metrics.fid import classifier_fid
from dgm_runner.models.classifier import FeatureCNN
from dgm_runner.samplers.base import Sampler


class _Noise(Sampler):
    def __init__(self, shape):
        self.shape = shape

    def sample(self, model, n, generator):
        return torch.rand(n, *self.shape, generator=generator)


@pytest.mark.parametrize(
    "shape, flat",
    [((1, 28, 28), 64 * 7 * 7), ((3, 32, 32), 64 * 8 * 8), ((3, 20, 12), 64 * 5 * 3)],
)
def test_the_classifier_takes_its_training_datas_shape(shape, flat):
    model = FeatureCNN(shape, 10).eval()
    assert model.hidden[0].in_features == flat and model.conv[0].in_channels == shape[0]
    x = torch.rand(3, *shape)
    assert model.features(x).shape == (3, 128) and model(x).shape == (3, 10)
    # another size is resized to the training size (bilinear) before the network
    other = torch.rand(2, shape[0], 16, 16)
    resized = torch.nn.functional.interpolate(other, size=shape[1:], mode="bilinear")
    assert torch.equal(model.features(other), model.features(resized))


def test_mnist_classifier_keeps_its_size_and_too_small_images_are_refused():
    assert sum(p.numel() for p in FeatureCNN((1, 28, 28), 10).parameters()) == 421642
    with pytest.raises(ValueError, match="at least 4x4"):
        FeatureCNN((3, 3, 32), 10)


def test_cifar10_has_a_recipe_but_no_shipped_classifier(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path))
    with pytest.raises(FeatureClassifierMissing) as err:
        load_feature_classifier("cifar10")
    message = str(err.value)
    assert "\n" not in message and "no copy of CIFAR-10" in message
    assert "`dgm-train experiment=classifier_cifar10`" in message
    assert str(tmp_path / "classifiers" / "cifar10.pt") in message
    assert "sample_metrics.fid.classifier=" in message


def test_the_cifar10_recipe_trains_the_cnn_on_cifar10_and_exports_it(compose_cfg):
    cfg = compose_cfg("experiment=classifier_cifar10")
    validate(cfg)
    assert cfg.dataset.name == "cifar10" and cfg.model._target_.endswith("FeatureCNN")
    assert cfg.exports.feature_classifier._target_.endswith("export_feature_classifier")


def test_an_exported_colour_classifier_scores_colour_samples(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path))
    g = torch.Generator().manual_seed(1)  # not the samplers' seed 0: other images
    x, y = torch.rand(40, 3, 8, 8, generator=g), torch.arange(40) % 10
    data = DataSplits("tiny_colour", x, y, x.clone(), y, 10, False)
    model = torch.nn.Linear(1, 1)
    assert classifier_fid(model, _Noise((3, 8, 8)), data, 0, final=True) == {}
    assert "Inception FID: +sample_metrics@sample_metrics.inception_fid" in caplog.text
    path = export_feature_classifier(
        FeatureCNN((3, 8, 8), 10), data, tmp_path, {"test/accuracy": 0.5}
    )
    out = classifier_fid(
        model, _Noise((3, 8, 8)), data, 0, final=True, classifier=str(path), kid_subset_size=20
    )
    assert out["fid"] > 0 and out["fid_n_samples"] == 40 and out["fid_classifier_shipped"] == 0
    assert out["fid_reference_channels"] == 3  # a colour reference, said in the record
    test_set = _Noise((3, 8, 8))
    test_set.sample = lambda model, n, generator: x[:n]  # the test images themselves
    itself = classifier_fid(model, test_set, data, 0, final=True, classifier=str(path))
    assert abs(itself["fid"]) < 1e-6 * out["fid"]
