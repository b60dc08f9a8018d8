"""Hostile data (issue 9): corrupt, truncated or inconsistent IDX files are one-line
DataErrors and never cached, the cache follows its source, and data too small for the
model is a ConfigError before training."""

from __future__ import annotations

import pytest
import torch

from dgm_runner.config import ConfigError
from dgm_runner.data import DataError, load_vision_dataset, vision
from dgm_runner.io.lock import LOCK_NAME
from dgm_runner.loop import train
from tests.idx_files import idx_images, idx_labels, write_mnist

_idx_images, _idx_labels, _write_mnist = idx_images, idx_labels, write_mnist


def _good(n: int = 20, size: int = 28, seed: int = 0) -> tuple[bytes, bytes, bytes, bytes]:
    return (
        _idx_images(n, size, size, seed),
        _idx_labels([i % 10 for i in range(n)]),
        _idx_images(10, size, size, seed + 1),
        _idx_labels(list(range(10))),
    )


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DGM_DATA_DIR", raising=False)
    vision._load_uint8.cache_clear()
    yield tmp_path / "cache"
    vision._load_uint8.cache_clear()


def _corrupt(kind: str) -> tuple[bytes, bytes, bytes, bytes]:
    train_x, train_y, test_x, test_y = _good()
    if kind == "bad magic":
        train_x = b"\x12\x34\x56\x78" + train_x[4:]
    elif kind == "truncated pixels":
        train_x = train_x[:-100]
    elif kind == "trailing bytes":
        train_x = train_x + b"\x00" * 7
    elif kind == "empty file":
        train_x = b""
    elif kind == "labels for images":
        train_x = train_y
    elif kind == "truncated header":
        train_x = train_x[:10]
    return train_x, train_y, test_x, test_y


@pytest.mark.parametrize(
    "kind, says",
    [
        ("bad magic", "not an IDX image file"),
        ("truncated pixels", "truncated"),
        ("trailing bytes", "trailing bytes"),
        ("empty file", "shorter than an IDX header"),
        ("labels for images", "not an IDX image file"),
        ("truncated header", "truncated IDX header"),
    ],
)
def test_corrupt_idx_files_are_one_line_data_errors_and_never_cached(
    fresh_cache, tmp_path, kind, says
):
    root = _write_mnist(tmp_path / "src", *_corrupt(kind), gz=kind != "empty file")
    with pytest.raises(DataError) as err:
        load_vision_dataset("mnist", root=str(root), download=False)
    message = str(err.value)
    assert says in message and "train-images-idx3-ubyte" in message and "\n" not in message
    assert not (fresh_cache / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()


def test_truncated_gzip_stream_is_a_data_error(fresh_cache, tmp_path):
    root = _write_mnist(tmp_path / "src", *_good())
    gz = root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:200])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz .*unreadable.*end-of-stream"):
        load_vision_dataset("mnist", root=str(root), download=False)


def test_corrupt_file_in_the_cache_names_it(fresh_cache):
    raw = fresh_cache / "MNIST" / "raw"
    _write_mnist(fresh_cache, *_good(), gz=False)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(_idx_labels(list(range(10)))[:-3])
    with pytest.raises(
        DataError, match=r"t10k-labels-idx1-ubyte is not a valid IDX file: truncated.*delete it"
    ):
        load_vision_dataset("mnist", download=False)


def test_labels_out_of_range_and_count_mismatch(fresh_cache, tmp_path):
    train_x, _, test_x, test_y = _good()
    bad_labels = _write_mnist(tmp_path / "a", train_x, _idx_labels([12] * 20), test_x, test_y)
    with pytest.raises(DataError, match=r"mnist/train: labels outside \[0, 10\)"):
        load_vision_dataset("mnist", root=str(bad_labels), download=False)
    vision._load_uint8.cache_clear()
    short = _write_mnist(tmp_path / "b", train_x, _idx_labels([1] * 15), test_x, test_y)
    with pytest.raises(
        DataError,
        match=r"train-images-idx3-ubyte.gz holds 20 images but \S+/train-labels-idx1-ubyte.gz "
        "holds 15 labels",
    ):
        load_vision_dataset("mnist", root=str(short), download=False, subset=10)


def test_images_of_another_size_than_the_dataset_are_refused_and_never_cached(
    fresh_cache, tmp_path
):
    """27x28 images in an MNIST folder: one DataError naming the file and both shapes at
    load time (a model would fail on them mid-training, or train on them unnoticed), and
    nothing in the cache; the same for a test split of another size than the training one."""
    train_x, train_y, test_x, test_y = _good()
    for split, files in (
        ("train", (_idx_images(20, 27, 28), train_y, test_x, test_y)),
        ("t10k", (train_x, train_y, _idx_images(10, 28, 27), test_y)),
    ):
        vision._load_uint8.cache_clear()
        root = _write_mnist(tmp_path / split, *files)
        with pytest.raises(DataError) as err:
            load_vision_dataset("mnist", root=str(root), download=False)
        message = str(err.value)
        assert (
            f"MNIST/raw/{split}-images-idx3-ubyte.gz holds" in message
            and "MNIST images are 28x28" in message
        )
        assert "\n" not in message
        assert not list((fresh_cache / "MNIST" / "by-source").glob("[!.]*"))


def test_a_cache_filled_before_the_size_check_is_refused_too(fresh_cache, tmp_path, monkeypatch):
    """A cache of 27x28 images filled by a version without the check is not served: it is
    filled again, and refused."""
    train_x, train_y, test_x, test_y = _good()
    root = _write_mnist(tmp_path / "src", _idx_images(20, 27, 28), train_y, test_x, test_y)
    with monkeypatch.context() as old_version:
        old_version.setattr("dgm_runner.data.cache._check_set", lambda *args: None)
        load_vision_dataset("mnist", root=str(root), download=False)
    vision._load_uint8.cache_clear()
    with pytest.raises(DataError, match="holds 20 images of 27x28 pixels"):
        load_vision_dataset("mnist", root=str(root), download=False)


def test_the_cache_follows_the_source(fresh_cache, tmp_path):
    """Two sources with different data through one cache: each load gets its own source
    (the cache used to keep the first source's files and serve them for any root)."""
    first = _write_mnist(tmp_path / "first", *_good(n=20, seed=0))
    second = _write_mnist(tmp_path / "second", *_good(n=30, seed=5))
    a = load_vision_dataset("mnist", root=str(first), download=False)
    vision._load_uint8.cache_clear()
    b = load_vision_dataset("mnist", root=str(second), download=False)
    assert a.train_x.shape[0] == 20 and b.train_x.shape[0] == 30
    vision._load_uint8.cache_clear()
    assert torch.equal(
        load_vision_dataset("mnist", root=str(first), download=False).train_x, a.train_x
    )


def test_data_too_small_for_the_model_is_a_config_error(fresh_cache, tmp_path, compose_cfg):
    """14x14 digits (``dataset.image_size=14``) given to models that need 28x28 (or sizes
    divisible by 4): one line naming the model before any training; nothing written but
    the empty folders."""
    root = _write_mnist(tmp_path / "small", *_good(n=64))
    for experiment, says in (
        ("vae_cnn", "needs 1x28x28 images"),
        ("gan_mnist", "DCGAN needs (C, 28, 28)"),
    ):
        run_dir = tmp_path / experiment
        cfg = compose_cfg(
            f"experiment={experiment}",
            f"dataset.root={root}",
            "dataset.download=false",
            "+dataset.image_size=14",
            "logger=none",
            "trainer.progress=false",
        )
        with pytest.raises(ConfigError) as err:
            train(cfg, run_dir)
        assert (
            says in str(err.value)
            and "(1, 14, 14)" in str(err.value)
            and "\n" not in str(err.value)
        )
        assert not [p for p in run_dir.rglob("*") if p.is_file() and p.name != LOCK_NAME]
