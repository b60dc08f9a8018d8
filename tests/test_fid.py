"""Classifier-feature FID / KID / precision-recall: closed forms and references on random
features, FID(test, test) = 0 and FID(test, noise) large through a trained classifier,
and the classifier export / lookup used by every run's final evaluation."""

import json

import numpy as np
import pytest
import scipy.linalg
import torch

import dgm_runner.metrics.features as features
from dgm_runner.data.base import DataSplits
from dgm_runner.io.checkpoint import CheckpointError
from dgm_runner.loop import train
from dgm_runner.metrics.features import (
    SHIPPED,
    FeatureClassifierMissing,
    classifier_path,
    export_feature_classifier,
    file_sha256,
    load_feature_classifier,
    shipped_path,
)
from dgm_runner.metrics.fid import (
    classifier_fid,
    frechet_distance,
    kernel_distance,
    precision_recall,
)
from dgm_runner.models.classifier import FeatureCNN
from dgm_runner.samplers.base import NoSampler, Sampler
from tests.components import ReplaySampler
from tests.helpers import SMALL, needs_fashion, needs_mnist


def _gaussian(n, d, seed, shift=0.0, scale=1.0):
    """n draws of a correlated d-dim Gaussian (the same covariance for every seed)."""
    mix = torch.randn(d, d, generator=torch.Generator().manual_seed(12345)) / d**0.5
    return (torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) @ mix) * scale + shift


def test_frechet_distance_matches_a_scipy_sqrtm_reference():
    real, fake = _gaussian(600, 8, 0), _gaussian(500, 8, 1, shift=0.3, scale=1.5) ** 2
    r, f = real.double().numpy(), fake.double().numpy()
    mu_r, mu_f = r.mean(0), f.mean(0)
    s_r, s_f = np.cov(r, rowvar=False), np.cov(f, rowvar=False)
    root = scipy.linalg.sqrtm(s_r @ s_f).real
    reference = ((mu_r - mu_f) ** 2).sum() + np.trace(s_r + s_f - 2 * root)
    assert frechet_distance(real, fake) == pytest.approx(reference, rel=1e-6)


def test_frechet_distance_is_zero_on_identical_sets_and_grows_with_a_shift():
    x = _gaussian(1000, 6, 2)
    assert abs(frechet_distance(x, x)) < 1e-6
    same = frechet_distance(x, _gaussian(1000, 6, 3))
    # a mean shift of 1 in each of the 6 dimensions adds ||delta||^2 = 6 (covariances unchanged)
    shifted = frechet_distance(x, x + 1.0)
    assert same < 0.5 and shifted == pytest.approx(6.0, rel=1e-6)


def test_kid_with_one_full_subset_is_the_unbiased_polynomial_mmd():
    real, fake = _gaussian(200, 5, 4), _gaussian(200, 5, 5, shift=0.5)
    mean, _ = kernel_distance(real, fake, subsets=1, subset_size=200)
    k = lambda a, b: (a.double() @ b.double().T / a.shape[1] + 1) ** 3  # noqa: E731
    n = 200
    kxx, kyy, kxy = k(real, real), k(fake, fake), k(real, fake)
    mmd = (
        (kxx.sum() - kxx.trace()) / (n * (n - 1))
        + (kyy.sum() - kyy.trace()) / (n * (n - 1))
        - 2 * kxy.mean()
    )
    assert mean == pytest.approx(float(mmd), rel=1e-6)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    real = _gaussian(2000, 8, 6)
    same_mean, same_std = kernel_distance(real, _gaussian(2000, 8, 7), subsets=20, subset_size=500)
    diff_mean, _ = kernel_distance(
        real, _gaussian(2000, 8, 7, shift=1.0), subsets=20, subset_size=500
    )
    assert abs(same_mean) < 4 * same_std + 1e-3 and diff_mean > 100 * abs(same_mean)


def test_precision_recall_detects_mode_dropping():
    g = torch.Generator().manual_seed(8)
    mode_a = torch.randn(500, 4, generator=g)
    mode_b = torch.randn(500, 4, generator=g) + 20.0
    real = torch.cat([mode_a, mode_b])
    assert precision_recall(real, real.clone()) == (1.0, 1.0)
    collapsed = torch.randn(1000, 4, generator=g)  # only mode a
    precision, recall = precision_recall(real, collapsed)
    assert precision > 0.95 and 0.4 < recall < 0.6
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)
    with pytest.raises(ValueError, match="more than k"):
        precision_recall(real[:3], real)


class _Noise(Sampler):
    def sample(self, model, n, generator):
        return torch.rand(n, 1, 28, 28, generator=generator)


def _toy_images(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    return DataSplits("toyimg", x, torch.arange(n) % 10, x.clone(), torch.arange(n) % 10, 10, False)


def test_fid_is_skipped_without_a_classifier_without_images_or_without_a_sampler(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path))
    data = _toy_images()
    model = torch.nn.Linear(1, 1)
    with pytest.raises(
        FeatureClassifierMissing,
        match=r"experiment=classifier_mnist dataset=<the config of toyimg>",
    ):
        load_feature_classifier("toyimg")
    assert classifier_fid(model, _Noise(), data, 0, final=True) == {}
    assert "FID/KID skipped" in caplog.text
    assert classifier_fid(model, NoSampler(), data, 0, final=True) == {}
    assert classifier_fid(model, _Noise(), data, 0, final=False) == {}  # intermediate evaluation


def test_export_keeps_the_better_classifier(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path))
    data = _toy_images()
    good, bad = FeatureCNN((1, 28, 28), 10), FeatureCNN((1, 28, 28), 10)
    assert export_feature_classifier(
        good, data, tmp_path, {"test/accuracy": 0.9}
    ) == classifier_path("toyimg")
    assert export_feature_classifier(bad, data, tmp_path, {"test/accuracy": 0.5}) is None
    exported = str(classifier_path("toyimg"))
    loaded, info = load_feature_classifier("toyimg", classifier=exported)
    assert not info["shipped"] and info["sha256"] == file_sha256(classifier_path("toyimg"))
    assert info["test_accuracy"] == 0.9
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), good.state_dict().values())
    )
    export_feature_classifier(bad, data, tmp_path, {"test/accuracy": 0.5}, overwrite="always")
    assert load_feature_classifier("toyimg", classifier=exported)[1]["test_accuracy"] == 0.5
    with pytest.raises(CheckpointError, match="classifier of 'toyimg', not of 'mnist'"):
        load_feature_classifier("mnist", classifier=exported)  # another dataset's features
    with pytest.raises(FeatureClassifierMissing, match="sample_metrics.fid.classifier"):
        load_feature_classifier("toyimg", classifier=str(tmp_path / "none.pt"))


@pytest.mark.parametrize("dataset", sorted(SHIPPED))
def test_the_shipped_classifiers_match_their_pins_and_a_modified_one_is_refused(
    dataset, tmp_path, monkeypatch
):
    path = shipped_path(dataset)
    assert file_sha256(path) == SHIPPED[dataset].sha256
    model, info = load_feature_classifier(dataset)
    assert info["shipped"] and info["test_accuracy"] == SHIPPED[dataset].test_accuracy
    assert sum(p.numel() for p in model.parameters()) == 421642  # configs/model/classifier_cnn
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 1  # one bit of one weight
    (tmp_path / path.name).write_bytes(bytes(blob))
    monkeypatch.setattr(features, "ASSETS", tmp_path)
    with pytest.raises(CheckpointError, match="does not match its pinned sha256"):
        load_feature_classifier(dataset)


@pytest.mark.parametrize(
    "dataset",
    [pytest.param("mnist", marks=needs_mnist), pytest.param("fashion_mnist", marks=needs_fashion)],
)
def test_the_shipped_classifiers_have_their_recorded_test_accuracy(dataset):
    from dgm_runner.data.vision import load_vision_dataset

    data = load_vision_dataset(dataset)
    model, info = load_feature_classifier(dataset)
    with torch.no_grad():
        predicted = torch.cat(
            [model(data.test_x[i : i + 2000]).argmax(1) for i in range(0, 10000, 2000)]
        )
    accuracy = (predicted == data.test_y).double().mean().item()
    assert accuracy == pytest.approx(info["test_accuracy"], abs=5e-5)


@needs_mnist
def test_binarized_runs_are_scored_against_the_grey_test_images_unless_asked(monkeypatch):
    import dgm_runner.metrics.fid as fid_module
    from dgm_runner.data.vision import load_vision_dataset

    data = load_vision_dataset("mnist", binarize="threshold", test_subset=500)
    assert data.grey_test_x is not None and not torch.equal(data.grey_test_x, data.test_x)
    assert torch.equal((data.grey_test_x > 0.5).float(), data.test_x)
    model = torch.nn.Linear(1, 1)
    args = dict(final=True, batch_size=250)  # n_samples "test": the 500 test images
    fid_module._REAL_FEATURES.clear()
    grey = classifier_fid(model, ReplaySampler(data.grey_test_x), data, 0, **args)
    assert abs(grey["fid"]) < 1e-3 and grey["fid_reference_binarized"] == 0.0
    against_data = classifier_fid(
        model, ReplaySampler(data.grey_test_x), data, 0, reference="data", **args
    )
    assert against_data["fid"] > 1.0 and against_data["fid_reference_binarized"] == 1.0
    # each run also reports the other reference from the same samples
    assert grey["fid_vs_binarized"] == pytest.approx(against_data["fid"], rel=1e-6)
    assert abs(against_data["fid_vs_grey"]) < 1e-3
    assert grey["fid_classifier_shipped"] == 1.0
    assert grey["fid_n_samples"] == 500 == grey["fid_n_real"]


@needs_mnist
def test_classifier_run_exports_and_fid_separates_data_from_noise(
    compose_cfg, tmp_path, monkeypatch
):
    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path / "cache"))
    cfg = compose_cfg(
        "experiment=classifier_mnist", *SMALL, "dataset.subset=2000", "dataset.test_subset=1000"
    )
    final = train(cfg, tmp_path / "clf")
    assert 0.5 < final["test/accuracy"] <= 1.0 and final["test/error"] == pytest.approx(
        1 - final["test/accuracy"]
    )
    assert not list((tmp_path / "clf" / "samples").glob("*.png"))  # not generative: no grids
    _, info = load_feature_classifier("mnist", classifier=str(classifier_path("mnist")))
    assert info["test_accuracy"] == final["test/accuracy"]
    _, info = load_feature_classifier("mnist")  # FID keeps the shipped one unless named

    # FID(test, test) = 0 through the shipped features; FID(test, uniform noise) is large
    cfg = compose_cfg("experiment=vae_mlp", *SMALL, "dataset.test_subset=1000")
    from hydra.utils import instantiate

    data = instantiate(cfg.dataset, device=torch.device("cpu"))
    model = torch.nn.Linear(1, 1)
    import dgm_runner.metrics.fid as fid_module

    extracted = []
    real_extract = fid_module.extract_features
    monkeypatch.setattr(
        fid_module,
        "extract_features",
        lambda c, x, b: extracted.append(len(x)) or real_extract(c, x, b),
    )
    fid_module._REAL_FEATURES.clear()
    replay = classifier_fid(model, ReplaySampler(data.test_x), data, 0, final=True, batch_size=250)
    noise = classifier_fid(model, _Noise(), data, 0, final=True, n_samples=1000, batch_size=250)
    assert len(extracted) == 3  # the test split's features once, then reused; each sample set once
    assert abs(replay["fid"]) < 1e-3 and replay["precision"] == 1.0 and replay["recall"] == 1.0
    assert (
        noise["fid"] > 100 * max(abs(replay["fid"]), 1e-2) and noise["kid"] > 10 * noise["kid_std"]
    )
    assert replay["fid_n_samples"] == 1000 and replay["fid_n_real"] == 1000
    assert replay["fid_classifier_accuracy"] == info["test_accuracy"]

    # a generative run's final evaluation now reports FID/KID with what they were computed from
    cfg = compose_cfg(
        "experiment=vae_mlp",
        *SMALL,
        "sample_metrics.fid.n_samples=300",
        "sample_metrics.fid.batch_size=100",
    )
    metrics = train(cfg, tmp_path / "vae")
    for key in (
        "fid",
        "kid",
        "kid_std",
        "precision",
        "recall",
        "fid_n_samples",
        "fid_classifier_accuracy",
    ):
        assert f"test/{key}" in metrics
    assert metrics["test/fid_n_samples"] == 300 and metrics["test/fid"] > 0
    saved = json.loads((tmp_path / "vae" / "metrics.json").read_text())
    assert saved["test/fid"] == metrics["test/fid"]
