"""The opt-in Inception-v3 FID (dgm_runner.metrics.inception), offline: a missing weights file
is one line naming the file, its URL and its place; a random-valued weights file of the real
architecture (written here, never downloaded) runs the metric end to end on tiny images and
agrees with torchmetrics' own FID; the Frechet formula against its closed form."""

from __future__ import annotations

import dataclasses
import re
import urllib.error

import numpy as np
import pytest
import scipy.linalg
import torch
from torch.hub import HASH_REGEX

from dgm_runner.config import validate
from dgm_runner.data.base import DataSplits
from dgm_runner.errors import USER_ERRORS
from dgm_runner.io.checkpoint import CheckpointError, file_sha256
from dgm_runner.metrics import inception
from dgm_runner.metrics.fid import frechet_distance
from tests.components import ReplaySampler

fidelity = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")

ENABLE = "+sample_metrics@sample_metrics.inception_fid=inception_fid"


def _closed_form_fid(a: np.ndarray, b: np.ndarray) -> float:
    """||m1 - m2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2), unbiased covariances (Heusel et al. Eq. 6)."""
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def _offline(url, dst, hash_prefix=None, progress=True):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_the_pin_is_torch_fidelitys_file_and_its_name_carries_the_sha256_prefix():
    weights = inception.WEIGHTS
    assert weights.url == fidelity.URL_INCEPTION_V3 and weights.url.endswith("/" + weights.file)
    prefix = HASH_REGEX.search(weights.file).group(1)  # torch.hub's check_hash convention
    assert len(prefix) == 8 and weights.sha256.startswith(prefix) and len(weights.sha256) == 64


def test_missing_weights_offline_is_one_line_naming_the_file_its_url_and_its_place(
    tmp_path, monkeypatch, compose_cfg
):
    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(inception, "download_url_to_file", _offline)
    expected = tmp_path / "inception" / inception.WEIGHTS.file
    with pytest.raises(inception.InceptionWeightsMissing) as err:
        inception.fetch_weights()
    message = str(err.value)
    assert "\n" not in message and isinstance(err.value, USER_ERRORS)
    assert inception.WEIGHTS.url in message and f"put it at {expected}" in message
    assert "Temporary failure in name resolution" in message
    assert list((tmp_path / "inception").iterdir()) == []  # no temp file left behind
    # the config check fails before any training, with the same line
    cfg = compose_cfg("experiment=vae_mlp", ENABLE)
    with pytest.raises(inception.InceptionWeightsMissing, match=re.escape(str(expected))):
        validate(cfg)


def test_a_download_is_verified_before_it_is_renamed_into_place(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path))
    payload = b"inception weights"

    def fake_download(url, dst, hash_prefix=None, progress=True):
        with open(dst, "wb") as f:
            f.write(payload)

    monkeypatch.setattr(inception, "download_url_to_file", fake_download)
    path = inception.weights_path()
    with pytest.raises(inception.InceptionWeightsMissing, match="sha256"):
        inception.fetch_weights()  # the real pin: these bytes are refused
    assert not path.parent.exists() or list(path.parent.iterdir()) == []
    (tmp_path / "x").write_bytes(payload)
    pinned = dataclasses.replace(inception.WEIGHTS, sha256=file_sha256(tmp_path / "x"))
    assert inception.fetch_weights(pinned) == path and path.read_bytes() == payload
    assert list(path.parent.iterdir()) == [path]
    path.write_bytes(b"modified")  # a damaged cached file is refused, not re-used
    with pytest.raises(CheckpointError, match="delete it to download it again"):
        inception.fetch_weights(pinned)


def test_frechet_distance_matches_the_closed_form_of_two_gaussians():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(60, 5, generator=g, dtype=torch.float64)
    b = torch.randn(40, 5, generator=g, dtype=torch.float64) @ torch.diag(
        torch.tensor([0.5, 1.0, 2.0, 1.5, 0.3], dtype=torch.float64)
    ) + torch.tensor([1.0, 0.0, -1.0, 0.5, 0.0], dtype=torch.float64)
    expected = _closed_form_fid(a.numpy(), b.numpy())
    assert expected > 1.0
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert abs(frechet_distance(a, a)) < 1e-9


def test_uint8_conversion_rounds_the_8_bit_levels_back_and_repeats_grey():
    levels = torch.arange(256, dtype=torch.float32) / 255  # as the datasets store them
    grey = levels.reshape(1, 1, 16, 16)
    out = inception.to_uint8_rgb(grey)
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 16, 16)
    assert torch.equal(out[0, 0].flatten(), torch.arange(256, dtype=torch.uint8))
    assert torch.equal(out[:, 0], out[:, 2])
    between = torch.full((1, 1, 1, 1), 100.6 / 255)  # a sample between two levels: nearest one
    assert int(inception.to_uint8_rgb(between)[0, 0, 0, 0]) == 101  # (b * 255).byte() gives 100
    with pytest.raises(ValueError, match="1 or 3"):
        inception.to_uint8_rgb(torch.zeros(1, 2, 4, 4))


def _images(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) * 255).round() / 255


def test_inception_fid_end_to_end_agrees_with_torchmetrics_and_is_zero_against_itself(
    fake_weights,
):
    from torchmetrics.image.fid import FrechetInceptionDistance

    test_x, other = _images((5, 3, 8, 8), 0), _images((5, 3, 8, 8), 1)
    y = torch.arange(5)
    data = DataSplits("tiny_rgb", test_x, y, test_x, y, 10, False)
    model = torch.nn.Linear(1, 1)
    args = dict(n_samples=5, batch_size=3, features=64)
    out = inception.inception_fid(model, ReplaySampler(other), data, 0, final=True, **args)
    assert out["inception_fid_n_samples"] == 5 and out["inception_fid_n_real"] == 5
    assert out["inception_fid_features"] == 64
    reference = FrechetInceptionDistance(
        feature=64, antialias=False, feature_extractor_weights_path=str(fake_weights)
    )
    reference.update(inception.to_uint8_rgb(test_x), real=True)
    reference.update(inception.to_uint8_rgb(other), real=False)
    assert out["inception_fid"] > 0
    assert out["inception_fid"] == pytest.approx(float(reference.compute()), rel=1e-5)
    itself = inception.inception_fid(model, ReplaySampler(test_x), data, 0, final=True, **args)
    assert abs(itself["inception_fid"]) < 1e-6 * out["inception_fid"]
    assert inception.inception_fid(model, ReplaySampler(other), data, 0, final=False, **args) == {}


def test_grey_images_are_scored_as_their_rgb_repeat(fake_weights):
    grey, sample = _images((4, 1, 8, 8), 2), _images((4, 1, 8, 8), 3)
    y = torch.arange(4)
    network, _ = inception.load_inception("cpu", 64)
    assert torch.equal(
        inception.inception_features(network, grey),
        inception.inception_features(network, grey.repeat(1, 3, 1, 1)),
    )
    data = DataSplits("tiny_grey", grey, y, grey, y, 10, False)
    out = inception.inception_fid(
        torch.nn.Linear(1, 1), ReplaySampler(sample), data, 0, True, n_samples=4, features=64
    )
    colour = grey.repeat(1, 3, 1, 1)
    rgb = DataSplits("tiny_rgb", colour, y, colour, y, 10, False)
    again = inception.inception_fid(
        torch.nn.Linear(1, 1),
        ReplaySampler(sample.repeat(1, 3, 1, 1)),
        rgb,
        0,
        True,
        n_samples=4,
        features=64,
    )
    assert out["inception_fid"] == pytest.approx(again["inception_fid"], rel=1e-9)


def test_the_config_entry_validates_and_is_planned(fake_weights, compose_cfg):
    cfg = compose_cfg("experiment=vae_mlp", ENABLE)
    validate(cfg)  # the weights are found (and verified) before any work
    node = cfg.sample_metrics.inception_fid
    assert node._target_ == "dgm_runner.metrics.inception.inception_fid"
    assert node.features == 2048 and node.n_samples == "test"
    assert "fid" in cfg.sample_metrics  # beside the classifier-feature FID
    bad = compose_cfg("experiment=vae_mlp", ENABLE, "sample_metrics.inception_fid.n_samples=1")
    with pytest.raises(Exception, match="sample_metrics.inception_fid"):
        validate(bad)
    default = compose_cfg("experiment=vae_mlp")
    assert "inception_fid" not in default.sample_metrics  # off by default
