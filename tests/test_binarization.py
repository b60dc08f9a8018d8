"""Data protocols (issue 28, item 1): dataset.binarize=none|threshold|dynamic|fixed, Larochelle's
.amat files, dataset.dequantize=uniform, and the one nats -> bits/dim conversion."""

from __future__ import annotations

import math

import pytest
import torch

from dgm_runner.config import ConfigError, validate
from dgm_runner.data import vision
from dgm_runner.data.amat import read_amat
from dgm_runner.data.base import DataError
from dgm_runner.data.protocols import (
    DynamicBinarization,
    UniformDequantization,
    check_protocol,
    fixed_binarization,
)
from dgm_runner.distributions import shard_rows
from dgm_runner.io.legacy_config import upgrade_overrides, upgrade_run_config
from dgm_runner.loop import train
from dgm_runner.metrics.units import LN256, bits_per_dim_standard_error, nats_to_bits_per_dim
from dgm_runner.testing import compose_train
from tests.helpers import SMALL, needs_mnist
from tests.resume_check import assert_resume_is_bit_exact

# ----------------------------------------------------------------------------- dynamic


def test_dynamic_draws_average_to_the_intensities():
    """4000 draws of one image: every pixel's mean is within 5 standard errors
    ``sqrt(p (1 - p) / 4000)`` of its intensity ``p`` (at most 0.040 for p = 1/2); pixels of
    intensity 0 and 1 are exactly 0 and 1 in every draw."""
    torch.manual_seed(0)
    p = torch.linspace(0, 1, 784).reshape(1, 1, 28, 28)
    draws = DynamicBinarization()(p.expand(4000, 1, 28, 28).contiguous())
    assert set(draws.unique().tolist()) == {0.0, 1.0} and draws.dtype == torch.float32
    mean = draws.mean(0)
    se = (p * (1 - p) / 4000).sqrt()[0]
    assert ((mean - p[0]).abs() <= 5 * se).all()
    assert mean.flatten()[0] == 0.0 and mean.flatten()[-1] == 1.0
    again = DynamicBinarization()(p.expand(4000, 1, 28, 28).contiguous())
    assert not torch.equal(again, draws)  # fresh draws at every use


def test_a_shard_binarizes_its_rows_of_the_global_batch_as_one_process_does():
    x = torch.rand(11, 1, 4, 4)
    torch.manual_seed(3)
    whole = DynamicBinarization()(x)
    torch.manual_seed(3)
    with shard_rows(6, 5, 11):  # process 1 of 2: rows 6..10
        part = DynamicBinarization()(x[6:])
    assert torch.equal(part, whole[6:])


# ----------------------------------------------------------------------------- fixed


@needs_mnist
def test_fixed_binarization_is_the_same_in_every_load_and_not_the_threshold():
    sizes = {"subset": 2000, "test_subset": 2000, "download": False}
    fixed = vision.load_vision_dataset("mnist", binarize="fixed", **sizes)
    vision._load_uint8.cache_clear()  # the second load reads and draws again
    again = vision.load_vision_dataset("mnist", binarize="fixed", **sizes)
    assert torch.equal(fixed.train_x, again.train_x) and torch.equal(fixed.test_x, again.test_x)
    assert set(fixed.train_x.unique().tolist()) == {0.0, 1.0} and fixed.binarized
    threshold = vision.load_vision_dataset("mnist", binarize="threshold", **sizes)
    assert not torch.equal(fixed.train_x, threshold.train_x)
    assert not torch.equal(fixed.test_x, threshold.test_x)
    assert torch.equal(fixed.grey_test_x, threshold.grey_test_x)  # the FID reference
    # Bernoulli(intensity): the bits' mean is the intensities' mean (1.6M pixels: sd < 4e-4)
    grey = vision.load_vision_dataset("mnist", **sizes)
    assert float(fixed.train_x.mean()) == pytest.approx(float(grey.train_x.mean()), abs=2e-3)
    # drawn for the whole split: an image has the same bits in any subset
    small = vision.load_vision_dataset(
        "mnist", binarize="fixed", subset=50, test_subset=20, download=False
    )
    assert torch.equal(small.train_x, fixed.train_x[:50])
    assert torch.equal(small.test_x, fixed.test_x[:20])
    other = vision.load_vision_dataset(
        "mnist", binarize="fixed", binarize_seed=7, subset=50, download=False
    )
    assert not torch.equal(other.train_x, small.train_x)
    # dynamic: grey training images, the fixed test images, the transform of the loop
    dynamic = vision.load_vision_dataset(
        "mnist", binarize="dynamic", subset=50, test_subset=20, download=False
    )
    assert torch.equal(dynamic.train_x, grey.train_x[:50]) and dynamic.binarized
    assert torch.equal(dynamic.test_x, small.test_x)
    assert isinstance(dynamic.train_transform, DynamicBinarization)
    assert fixed.train_transform is None and threshold.train_transform is None


def test_fixed_binarization_draws_from_its_own_seed():
    grey = torch.full((3, 1, 2, 2), 0.5)
    a, b = fixed_binarization(grey, 0), fixed_binarization(grey, 0)
    assert torch.equal(a, b) and not torch.equal(a, fixed_binarization(grey, 1))
    assert torch.equal(fixed_binarization(torch.ones(2, 3), 5), torch.ones(2, 3))
    assert torch.equal(fixed_binarization(torch.zeros(2, 3), 5), torch.zeros(2, 3))


# ----------------------------------------------------------------------------- Larochelle


def _amat(rows: list[list[int]], sep: str = " ") -> str:
    return "".join(sep.join(str(v) for v in row) + "\n" for row in rows)


def _write_larochelle(folder, n=(3, 2, 2), seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = {}
    for split, count in zip(("train", "valid", "test"), n):
        bits = torch.randint(0, 2, (count, 784), generator=gen)
        images[split] = bits
        (folder / f"binarized_mnist_{split}.amat").write_text(_amat(bits.tolist()))
    return images


def test_larochelle_files_are_read_train_and_valid_as_the_training_set(tmp_path):
    images = _write_larochelle(tmp_path)
    data = vision.load_vision_dataset(
        root=str(tmp_path), binarize="fixed", fixed_source="larochelle"
    )
    assert data.train_x.shape == (5, 1, 28, 28) and data.test_x.shape == (2, 1, 28, 28)
    assert torch.equal(
        data.train_x.reshape(5, 784), torch.cat([images["train"], images["valid"]]).float()
    )
    assert torch.equal(data.test_x.reshape(2, 784), images["test"].float())
    assert data.binarized and data.grey_test_x is None and data.n_classes == 1
    assert data.train_y.tolist() == [0] * 5 and data.name == "mnist"
    sub = vision.load_vision_dataset(
        root=str(tmp_path), binarize="fixed", fixed_source="larochelle", subset=4, test_subset=1
    )
    assert torch.equal(sub.train_x, data.train_x[:4]) and torch.equal(sub.test_x, data.test_x[:1])


def test_the_amat_reader_takes_any_spacing_and_names_a_bad_line(tmp_path):
    rows = torch.randint(0, 2, (3, 784), generator=torch.Generator().manual_seed(1)).tolist()
    plain, spaced = tmp_path / "plain.amat", tmp_path / "spaced.amat"
    plain.write_text(_amat(rows))
    spaced.write_text(_amat(rows, sep="  ").replace("\n", " \r\n") + "\n")  # slow path
    assert torch.equal(read_amat(plain), torch.tensor(rows, dtype=torch.uint8))
    assert torch.equal(read_amat(spaced), read_amat(plain))
    short = tmp_path / "short.amat"
    short.write_text(_amat([rows[0], rows[1][:783]]))
    with pytest.raises(DataError, match=r"short.amat, line 2: 783 values, expected 784"):
        read_amat(short)
    bad = tmp_path / "bad.amat"
    bad.write_text(_amat([[2] + rows[0][1:]]))
    with pytest.raises(DataError, match=r"bad.amat, line 1: value '2' is not 0 or 1"):
        read_amat(bad)


def test_missing_larochelle_files_are_named_with_the_folders_looked_in(tmp_path):
    (tmp_path / "binarized_mnist_train.amat").write_text(_amat([[0] * 784]))
    with pytest.raises(DataError) as err:
        vision.load_vision_dataset(root=str(tmp_path), binarize="fixed", fixed_source="larochelle")
    line = str(err.value)
    assert "\n" not in line and "binarized_mnist_valid.amat" in line
    assert line.startswith(
        "fixed_source=larochelle needs binarized_mnist_train.amat, binarized_mnist_valid.amat, "
        "binarized_mnist_test.amat"
    )
    assert f"{tmp_path}/binarized_mnist (lacks binarized_mnist_train.amat" in line
    assert f"{tmp_path} (lacks binarized_mnist_valid.amat, binarized_mnist_test.amat)" in line


# ----------------------------------------------------------------------------- dequantization


def test_dequantized_pixels_lie_in_their_bin(monkeypatch):
    """``(k + u) / 256`` lies in ``[k / 256, (k + 1) / 256)`` for every level k, also when
    ``k + u`` rounds up to ``k + 1`` in float32 (u the largest float below 1)."""
    k = torch.arange(256.0)
    x = (k / 255.0).reshape(1, 1, 16, 16).expand(500, 1, 16, 16).contiguous()
    torch.manual_seed(0)
    y = UniformDequantization()(x)
    lo, hi = k.reshape(1, 16, 16) / 256.0, (k.reshape(1, 16, 16) + 1) / 256.0
    assert ((y >= lo) & (y < hi)).all()
    assert float(y.std(0).mean()) == pytest.approx(1 / 256 / math.sqrt(12), rel=0.05)
    top = torch.nextafter(torch.tensor(1.0), torch.tensor(0.0))  # 1 - 2**-24
    monkeypatch.setattr(
        "dgm_runner.data.protocols.batch_draw", lambda n, draw: torch.full((n, 1, 16, 16), top)
    )
    y = UniformDequantization()(x[:1])
    assert (y < hi).all() and (y >= lo).all()
    assert float((k[-1] + top) / 256.0) == 1.0  # what the clamp prevents


@needs_mnist
def test_dequantize_keeps_the_stored_grey_levels_and_sets_the_transform():
    data = vision.load_vision_dataset("mnist", dequantize="uniform", subset=10, test_subset=10)
    grey = vision.load_vision_dataset("mnist", subset=10, test_subset=10)
    assert torch.equal(data.train_x, grey.train_x) and torch.equal(data.test_x, grey.test_x)
    assert isinstance(data.train_transform, UniformDequantization) and not data.binarized
    k = torch.round(data.train_x * 255)
    y = data.train_transform(data.train_x)
    assert torch.equal(torch.floor(y * 256), k)


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "options, match",
    [
        ({"binarize": True}, "binarize=true is the spelling before issue 28: write .*=threshold"),
        ({"binarize": "dynamic", "dequantize": "uniform"}, "dequantize=uniform needs grey images"),
        ({"binarize": "none", "dequantize": "uniform", "image_size": 14}, "image_size=14"),
        ({"binarize": "fixed", "threshold_uint8": 128}, "threshold_uint8=128 applies to"),
        ({"binarize": "threshold", "fixed_source": "larochelle"}, "applies to binarize=fixed"),
        ({"binarize": "fixed", "fixed_source": "larochelle", "per_class": 3}, "per_class=3"),
        ({"binarize": "fixed", "fixed_source": "larochelle", "name": "fashion_mnist"}, "name="),
    ],
)  # fmt: skip
def test_invalid_combinations_fail_in_one_line_before_any_file_is_read(options, match, tmp_path):
    with pytest.raises(ValueError, match=match) as err:
        vision.load_vision_dataset(root=str(tmp_path / "nothing here"), **options)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=match):
        check_protocol(**{"binarize": "none", **options})


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["dataset.binarize=true"], "dataset.binarize=true is the spelling before issue 28: "
         "write dataset.binarize=threshold"),
        (["dataset.binarize=false"], "write dataset.binarize=none"),
        (["dataset.binarize=dynamic", "+dataset.dequantize=uniform"], "dataset: dequantize="),
        (["dataset.binarize=maybe"], "allowed values are 'none', 'threshold', 'dynamic', 'fixed'"),
    ],
)  # fmt: skip
def test_the_config_validator_refuses_them_before_the_run(overrides, match):
    cfg = compose_train(["experiment=vae_bce", *overrides])
    with pytest.raises(ConfigError, match=match) as err:
        validate(cfg)
    assert "\n" not in str(err.value)


def test_binarization_is_refused_on_toy_data_in_one_line():
    with pytest.raises(ConfigError, match="dataset.binarize is not a valid key") as err:
        validate(compose_train(["experiment=dsm_toy2d", "+dataset.binarize=dynamic"]))
    assert "\n" not in str(err.value)


def test_old_run_configs_and_overrides_read_true_as_threshold():
    node = {"_target_": "dgm_runner.data.vision.load_vision_dataset", "binarize": True}
    old = {"dataset": node, "trainer": {"epochs": 1}, "optimizer": {"_target_": "x"}}
    assert upgrade_run_config(old)["dataset"]["binarize"] == "threshold"
    assert old["dataset"]["binarize"] is True  # the input is never modified
    grey = {**old, "dataset": {**node, "binarize": False}}
    assert upgrade_run_config(grey)["dataset"]["binarize"] == "none"
    assert upgrade_overrides(["dataset.binarize=true", "+dataset.binarize=False", "x=1"]) == [
        "dataset.binarize=threshold",
        "+dataset.binarize=none",
        "x=1",
    ]


def test_the_seeds_experiments_keep_their_protocols():
    for name in ("vae_bce", "cvae", "rbm_cdk", "vae_bernoulli_2d", "vae_kingma_14x14"):
        cfg = compose_train([f"experiment={name}"])
        assert cfg.dataset.binarize == "threshold", name
    for name in ("vae_mlp", "edm_mnist_cpu", "ddpm_mnist_cpu"):
        cfg = compose_train([f"experiment={name}"])
        assert cfg.dataset.binarize == "none" and cfg.dataset.dequantize == "none", name


# ----------------------------------------------------------------------------- training

DYNAMIC = [
    "experiment=vae_bce",
    "dataset.binarize=dynamic",
    *SMALL,
    "model.hidden_dim=32",
    "logger=none",
    "~sample_metrics.fid",
    "trainer.export_name=null",
    "trainer.epochs=2",
    "objective._target_=tests.components.SignallingELBO",
]


@needs_mnist
def test_dynamic_training_resumed_mid_epoch_is_bit_exact(tmp_path, monkeypatch):
    """SIGTERM before step 6 of 8 (epoch 2 of 2, 4 batches each); resumed, the run ends with
    the uninterrupted run's parameters and metrics to the last bit, and differs from the
    thresholded run (the transform is applied)."""
    straight, _ = assert_resume_is_bit_exact(tmp_path, monkeypatch, DYNAMIC)
    thresholded = [o for o in DYNAMIC if o != "dataset.binarize=dynamic"]
    other = train(compose_train(thresholded), tmp_path / "threshold")
    assert other["train/loss"] != straight["train/loss"]


@needs_mnist
@pytest.mark.serial
def test_two_processes_with_dynamic_binarization_follow_one(tmp_path):
    """2 processes (gloo, CPU) with a global batch split 6 / 5 in its last step: each shard
    binarizes its rows of the global batch's draw, so the run ends with the 1-process run's
    parameters (up to the all-reduce's float32 summation order, as tests/test_ddp.py)."""
    from tests.test_ddp import UNEVEN, _params, _spawn

    quiet = ["trainer.num_threads=1", "trainer.dist_timeout_s=120", "optimizer.lr=0.01"]
    overrides = [*DYNAMIC[:-2], *quiet, *UNEVEN]  # 1 epoch, the ELBO itself
    results = _spawn(tmp_path, [("dyn", overrides, tmp_path / "ddp", {})])
    assert all("error" not in r for r in results["dyn"]), results
    single = train(compose_train(overrides), tmp_path / "one")
    ddp, one = _params(tmp_path / "ddp"), _params(tmp_path / "one")
    for key, value in one.items():
        assert torch.allclose(ddp[key], value, rtol=1e-4, atol=1e-5), key
    final = results["dyn"][0]["final"]
    assert final["train/loss"] == pytest.approx(single["train/loss"], rel=1e-4)


# ----------------------------------------------------------------------------- units


def test_nats_to_bits_per_dim_on_closed_forms():
    d = 784
    # a uniform density on [0, 1)^D: 0 nats; as a density of data in [0, 256): 8 bits/dim
    assert nats_to_bits_per_dim(0.0, d, LN256) == pytest.approx(8.0, abs=1e-12)
    # Bernoulli(1/2) pixels: D ln 2 nats per image = 1 bit per dimension
    assert nats_to_bits_per_dim(d * math.log(2), d) == pytest.approx(1.0, abs=1e-12)
    # the numbers the bits/dim metrics recorded before the function existed, to the last bit
    nats = torch.tensor([1234.5, -87.25, 3.0e3], dtype=torch.float32)
    assert torch.equal(
        nats_to_bits_per_dim(nats, d, LN256), (nats / d + math.log(256.0)) / math.log(2.0)
    )
    assert torch.equal(nats_to_bits_per_dim(nats, d), nats / (d * math.log(2.0)))
    assert bits_per_dim_standard_error(d * math.log(2), d) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="n_dims"):
        nats_to_bits_per_dim(1.0, 0)
