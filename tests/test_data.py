"""The data layer: offline sources, the cache, binarization, subsets, clear errors."""

import gzip
import os
import shutil
from pathlib import Path

import pytest
import torch

from dgm_runner.data import DataError, load_vision_dataset
from dgm_runner.data import vision
from tests.conftest import needs_mnist

FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _fresh_memo():
    vision._load_uint8.cache_clear()
    yield
    vision._load_uint8.cache_clear()


@needs_mnist
def test_mnist_loads_from_dgm_data_dir_into_the_cache_without_touching_the_source():
    source = Path(os.environ["DGM_DATA_DIR"]) / "MNIST" / "raw"
    before = sorted(p.name for p in source.iterdir())
    data = load_vision_dataset("mnist")
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert data.train_x.dtype == torch.float32 and 0 <= float(data.train_x.min()) and float(data.train_x.max()) == 1
    assert data.train_y.dtype == torch.int64 and set(data.test_y.unique().tolist()) == set(range(10))
    assert sorted(p.name for p in source.iterdir()) == before  # read-only source
    assert (vision.cache_dir() / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()


@needs_mnist
def test_binarization_is_a_fixed_threshold_on_intensities():
    grey = load_vision_dataset("mnist", subset=100, test_subset=10)
    binary = load_vision_dataset("mnist", binarize=True, threshold=0.5, subset=100, test_subset=10)
    assert set(binary.train_x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(binary.train_x, (grey.train_x > 0.5).float())
    strict = load_vision_dataset("mnist", binarize=True, threshold=0.9, subset=100, test_subset=10)
    assert strict.train_x.sum() < binary.train_x.sum()


@needs_mnist
def test_subset_keeps_the_first_images_and_the_whole_test_split():
    full = load_vision_dataset("mnist")
    small = load_vision_dataset("mnist", subset=500)
    assert small.train_x.shape[0] == 500 and small.test_x.shape[0] == 10000
    assert torch.equal(small.train_x, full.train_x[:500]) and torch.equal(small.train_y, full.train_y[:500])
    assert load_vision_dataset("mnist", test_subset=7).test_x.shape[0] == 7


@needs_mnist
def test_dataset_root_takes_precedence_and_flat_layouts_work(tmp_path, monkeypatch):
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in (Path(os.environ["DGM_DATA_DIR"]) / "MNIST" / "raw").glob("*.gz"):
        shutil.copy(f, flat / f.name)
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path / "cache"))
    data = load_vision_dataset("mnist", root=str(flat), download=False, subset=10)
    assert data.train_x.shape == (10, 1, 28, 28)


def test_missing_data_names_every_place_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path / "env-dir"))
    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataError) as err:
        load_vision_dataset("mnist", root=str(tmp_path / "root-dir"), download=False)
    message = str(err.value)
    for place in ("root-dir", "env-dir", "cache"):
        assert place in message
    assert "DGM_DATA_DIR" in message and "\n" not in message


def test_corrupt_gzip_is_a_data_error(tmp_path, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in vision.IDX_FILES:
        (raw / f"{name}.gz").write_bytes(b"not a gzip file")
    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="cannot read"):
        load_vision_dataset("mnist", root=str(tmp_path), download=False)


def test_truncated_idx_is_a_data_error(tmp_path, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in vision.IDX_FILES:
        with gzip.open(raw / f"{name}.gz", "wb") as f:
            f.write(b"\x00\x00\x08\x03\x00\x00\x00\x05")  # header of 5 images, no pixels
    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="unreadable"):
        load_vision_dataset("mnist", root=str(tmp_path), download=False)


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.delenv("DGM_DATA_DIR", raising=False)
    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path / "cache"))
    data = load_vision_dataset("fashion_mnist", download=False)
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert data.n_classes == 10 and set(data.train_y.unique().tolist()) == set(range(10))


def test_image_data_rejects_empty_splits_and_bad_labels():
    from dgm_runner.data import ImageData

    x, y = torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)
    with pytest.raises(DataError, match="empty"):
        ImageData("t", x[:0], y[:0], x, y, n_classes=10, binarized=False)
    with pytest.raises(DataError, match="labels outside"):
        ImageData("t", x, torch.full((4,), 10), x, y, n_classes=10, binarized=False)
    with pytest.raises(DataError, match=r"\(N, C, H, W\)"):
        ImageData("t", x[:, 0], y, x, y, n_classes=10, binarized=False)


@needs_mnist
def test_per_class_and_downsampling_as_in_seed_002():
    full = load_vision_dataset("mnist")
    data = load_vision_dataset("mnist", per_class=30, image_size=14, binarize=True, threshold=128 / 255)
    assert data.train_x.shape == (300, 1, 14, 14) and data.test_x.shape == (10000, 1, 14, 14)
    assert torch.bincount(data.train_y, minlength=10).tolist() == [30] * 10
    first_sevens = torch.nonzero(full.train_y == 7).flatten()[:30]
    assert torch.equal(data.train_y[data.train_y == 7], full.train_y[first_sevens])
    # area downsampling = mean of each 2x2 block of the 28x28 image, then threshold
    block_mean = full.train_x[first_sevens[:1]].reshape(1, 1, 14, 2, 14, 2).mean(dim=(3, 5))
    torch.testing.assert_close(data.train_x[data.train_y == 7][:1], (block_mean > 128 / 255).float())
