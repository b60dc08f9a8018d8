"""The data layer: offline sources, the cache, binarization, subsets, clear errors."""

import gzip
import json
import os
import shutil
import struct
import threading
import time
from pathlib import Path

import pytest
import torch

from dgm_runner.data import DataError, load_vision_dataset, vision
from dgm_runner.data.cache import _copy_idx, _fill, _source_key
from dgm_runner.data.idx import _read_idx
from tests.helpers import needs_mnist
from tests.idx_files import idx_images, idx_labels, write_mnist

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
    assert (
        data.train_x.dtype == torch.float32
        and 0 <= float(data.train_x.min())
        and float(data.train_x.max()) == 1
    )
    assert data.train_y.dtype == torch.int64 and set(data.test_y.unique().tolist()) == set(
        range(10)
    )
    assert sorted(p.name for p in source.iterdir()) == before  # read-only source
    [keyed] = [
        d
        for d in (vision.cache_dir() / "MNIST" / "by-source").iterdir()
        if not d.name.startswith(".")
    ]
    assert (keyed / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    recorded = json.loads((keyed / "sources.json").read_text())["sources"]
    assert recorded["train-images-idx3-ubyte"]["path"] == str(
        (source / "train-images-idx3-ubyte.gz").resolve()
    )


@needs_mnist
def test_binarization_is_a_fixed_threshold_on_intensities():
    grey = load_vision_dataset("mnist", subset=100, test_subset=10)
    binary = load_vision_dataset(
        "mnist", binarize="threshold", threshold=0.5, subset=100, test_subset=10
    )
    assert set(binary.train_x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(binary.train_x, (grey.train_x > 0.5).float())
    strict = load_vision_dataset(
        "mnist", binarize="threshold", threshold=0.9, subset=100, test_subset=10
    )
    assert strict.train_x.sum() < binary.train_x.sum()


@needs_mnist
def test_subset_keeps_the_first_images_and_the_whole_test_split():
    full = load_vision_dataset("mnist")
    small = load_vision_dataset("mnist", subset=500)
    assert small.train_x.shape[0] == 500 and small.test_x.shape[0] == 10000
    assert torch.equal(small.train_x, full.train_x[:500]) and torch.equal(
        small.train_y, full.train_y[:500]
    )
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
    partial = _write_source(tmp_path / "env-dir")
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as err:
        load_vision_dataset("mnist", download=False)
    message = str(err.value)
    for place in ("env-dir", "cache", "lacks t10k-labels-idx1-ubyte", "dataset.download=false"):
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
    from dgm_runner.data import DataSplits

    x, y = torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)
    with pytest.raises(DataError, match="empty"):
        DataSplits("t", x[:0], y[:0], x, y, n_classes=10, binarized=False)
    with pytest.raises(DataError, match="labels outside"):
        DataSplits("t", x, torch.full((4,), 10), x, y, n_classes=10, binarized=False)
    with pytest.raises(DataError, match=r"\(N, C, H, W\)"):
        DataSplits("t", x[:, 0], y, x, y, n_classes=10, binarized=False)


@needs_mnist
def test_per_class_and_downsampling_as_in_seed_002():
    full = load_vision_dataset("mnist")
    data = load_vision_dataset(
        "mnist", per_class=30, image_size=14, binarize="threshold", threshold=128 / 255
    )
    assert data.train_x.shape == (300, 1, 14, 14) and data.test_x.shape == (10000, 1, 14, 14)
    assert torch.bincount(data.train_y, minlength=10).tolist() == [30] * 10
    first_sevens = torch.nonzero(full.train_y == 7).flatten()[:30]
    assert torch.equal(data.train_y[data.train_y == 7], full.train_y[first_sevens])
    # area downsampling = mean of each 2x2 block of the 28x28 image, then threshold
    block_mean = full.train_x[first_sevens[:1]].reshape(1, 1, 14, 2, 14, 2).mean(dim=(3, 5))
    torch.testing.assert_close(
        data.train_x[data.train_y == 7][:1], (block_mean > 128 / 255).float()
    )


# --------------------------------------------------------------------------- synthetic IDX files


def _write_source(
    root: Path, n: int = 20, n_test: int = 10, seed: int = 0, gz: bool = True
) -> Path:
    """Write ``root/MNIST/raw/`` with the four IDX files of ``n`` + ``n_test`` random
    28x28 images (labels ``i % 10``); return that raw directory."""
    write_mnist(
        root,
        idx_images(n, seed=seed),
        idx_labels([i % 10 for i in range(n)]),
        idx_images(n_test, seed=seed + 1),
        idx_labels([i % 10 for i in range(n_test)]),
        gz=gz,
    )
    return root / "MNIST" / "raw"


def _direct(raw: Path) -> tuple[torch.Tensor, ...]:
    """The four IDX files in ``raw`` read without the package: (images uint8 (N, H, W),
    labels int64)."""
    out = []
    for name in vision.IDX_FILES:
        path = raw / name if (raw / name).is_file() else raw / f"{name}.gz"
        blob = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
        ndim = blob[3]
        dims = struct.unpack(f">{ndim}I", blob[4 : 4 + 4 * ndim])
        t = torch.frombuffer(bytearray(blob[4 + 4 * ndim :]), dtype=torch.uint8).reshape(dims)
        out.append(t if ndim == 3 else t.long())
    return tuple(out)


def _as_uint8(data) -> tuple[torch.Tensor, ...]:
    to8 = lambda x: (x[:, 0] * 255).round().to(torch.uint8)  # noqa: E731
    return to8(data.train_x), data.train_y, to8(data.test_x), data.test_y


def _keyed_dirs(cache: Path) -> list[Path]:
    by_source = cache / "MNIST" / "by-source"
    return (
        sorted(d for d in by_source.iterdir() if not d.name.startswith("."))
        if by_source.is_dir()
        else []
    )


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ---------------------------------------------------------------------- provenance of the cache


@pytest.mark.parametrize("good_kind", ["synthetic", pytest.param("mnist", marks=needs_mnist)])
def test_a_failed_load_from_a_bad_root_never_poisons_the_next_good_one(cache, tmp_path, good_kind):
    """Issue 15.1: a load from a bad root used to leave its (valid but different) train
    files in the shared cache, under the good source's provenance; the next good run
    trained on them."""
    if good_kind == "mnist":
        good = Path(os.environ["DGM_DATA_DIR"]) / "MNIST" / "raw"
    else:
        good = _write_source(tmp_path / "good", n=30, seed=3)
    bad = _write_source(tmp_path / "bad", n=12, seed=99)  # valid train files, other pixels
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(b"not a gzip file")  # fails mid-way

    load_vision_dataset("mnist", root=str(good), download=False)
    vision._load_uint8.cache_clear()  # the next run
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        load_vision_dataset("mnist", root=str(bad), download=False)
    vision._load_uint8.cache_clear()
    got = _as_uint8(load_vision_dataset("mnist", root=str(good), download=False))
    for g, want in zip(got, _direct(good)):
        assert torch.equal(g, want)
    assert len(_keyed_dirs(cache)) == 1 and not list((cache / "MNIST" / "by-source").glob(".tmp-*"))


@pytest.mark.parametrize(
    "tamper", ["recorded stamps", "file content", "another source's copy", "no provenance"]
)
def test_a_cache_whose_provenance_does_not_match_is_not_read(cache, tmp_path, tamper):
    a = _write_source(tmp_path / "a", n=20, seed=1)
    b = _write_source(tmp_path / "b", n=20, seed=2)  # same sizes, other pixels
    want = _direct(a)
    load_vision_dataset("mnist", root=str(a), download=False)
    [keyed_a] = _keyed_dirs(cache)
    load_vision_dataset("mnist", root=str(b), download=False)
    [keyed_b] = [d for d in _keyed_dirs(cache) if d != keyed_a]
    prov = keyed_a / "sources.json"
    images = keyed_a / "MNIST" / "raw" / "train-images-idx3-ubyte"
    if tamper == "recorded stamps":  # a's key, b's pixels, provenance off by one nanosecond
        shutil.copy(keyed_b / "MNIST" / "raw" / images.name, images)
        recorded = json.loads(prov.read_text())
        recorded["sources"][images.name]["mtime_ns"] += 1
        prov.write_text(json.dumps(recorded))
    elif tamper == "file content":  # provenance intact, same size, other pixels
        shutil.copy(keyed_b / "MNIST" / "raw" / images.name, images)
    elif tamper == "another source's copy":
        shutil.rmtree(keyed_a)
        shutil.copytree(keyed_b, keyed_a)
    else:
        shutil.copy(keyed_b / "MNIST" / "raw" / images.name, images)
        prov.unlink()
    vision._load_uint8.cache_clear()
    got = _as_uint8(load_vision_dataset("mnist", root=str(a), download=False))
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    vision._load_uint8.cache_clear()  # and the cache was rebuilt from a
    assert torch.equal(
        _read_idx(images, json.loads(prov.read_text())["files"][images.name]), want[0]
    )


def test_a_killed_fill_leaves_nothing_that_is_read_and_stale_temp_dirs_are_cleaned(
    cache, tmp_path, monkeypatch
):
    src = _write_source(tmp_path / "src", n=20)
    by_source = cache / "MNIST" / "by-source"

    def interrupted(src_path, dst, name, downloaded):
        if name.startswith("t10k-images"):
            raise KeyboardInterrupt
        return _copy_idx(src_path, dst, name, downloaded)

    monkeypatch.setattr("dgm_runner.data.cache._copy_idx", interrupted)  # what _fill calls
    with pytest.raises(KeyboardInterrupt):
        load_vision_dataset("mnist", root=str(src), download=False)
    assert not _keyed_dirs(cache) and not list(by_source.glob(".tmp-*"))
    monkeypatch.undo()
    monkeypatch.setenv("DGM_CACHE_DIR", str(cache))
    # what a kill -9 mid-fill leaves: a temp dir holding other pixels and a plausible provenance
    key = _source_key(vision.source_stamps(vision._find_idx(src)))
    old, young = by_source / f".tmp-{key}-old", by_source / f".tmp-{key}-young"
    for d in (old, young):
        shutil.copytree(_write_source(tmp_path / "other", seed=7), d / "MNIST" / "raw")
        (d / "sources.json").write_text(json.dumps({"format": 1, "key": key}))
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))
    got = _as_uint8(load_vision_dataset("mnist", root=str(src), download=False))
    for g, w in zip(got, _direct(src)):
        assert torch.equal(g, w)
    assert not old.exists() and young.exists()  # a young one may belong to a run filling it now
    assert [d.name for d in _keyed_dirs(cache)] == [key]


def test_runs_filling_the_same_key_at_once_all_use_one_checked_copy(cache, tmp_path):
    src = _write_source(tmp_path / "src", n=20)
    spec, stamps = vision.SPECS["mnist"], vision.source_stamps(vision._find_idx(src))
    barrier, results = threading.Barrier(4), []

    def fill():
        barrier.wait()
        results.append(_fill(spec, stamps, False))

    threads = [threading.Thread(target=fill) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and len({d for d, _ in results}) == 1
    assert all(prov["sources"] == stamps for _, prov in results)
    assert len(_keyed_dirs(cache)) == 1 and not list((cache / "MNIST" / "by-source").glob(".tmp-*"))
    # a later run whose rename loses to an existing valid copy uses it too
    again, prov = _fill(spec, stamps, False)
    assert again == results[0][0] and prov == results[0][1]
    got = _as_uint8(load_vision_dataset("mnist", root=str(src), download=False))
    assert torch.equal(got[0], _direct(src)[0])


def test_changed_source_files_are_read_again_by_the_same_process(cache, tmp_path):
    src = _write_source(tmp_path / "src", n=20, seed=1)
    first = load_vision_dataset("mnist", root=str(src), download=False)
    _write_source(tmp_path / "src", n=30, seed=2)  # no cache_clear: the memo must notice
    second = load_vision_dataset("mnist", root=str(src), download=False)
    assert first.train_x.shape[0] == 20 and second.train_x.shape[0] == 30
    assert torch.equal(_as_uint8(second)[0], _direct(src)[0])
    assert len(_keyed_dirs(cache)) == 1  # the first copy's source changed: it was deleted


def test_torchvision_reads_the_checked_copy(cache, tmp_path):
    import torchvision

    src = _write_source(tmp_path / "src", n=20)
    root = vision.torchvision_root("mnist", root=str(src), download=False)
    test = torchvision.datasets.MNIST(str(root), train=False, download=False)
    _, _, test_x, test_y = _direct(src)
    assert torch.equal(test.data, test_x) and torch.equal(test.targets, test_y)


def test_a_download_is_a_source_like_any_other(cache, monkeypatch):
    import torchvision.datasets

    monkeypatch.delenv("DGM_DATA_DIR", raising=False)
    calls = []

    def offline(root, train, download):
        raise OSError("no network")

    def fake_download(root, train, download):  # what torchvision leaves: <root>/MNIST/raw/*
        calls.append((root, train, download))
        _write_source(Path(root), n=20, seed=4)

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataError, match=r"download failed: no network\); looked in: .*cache"):
        load_vision_dataset("mnist", download=True)
    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_download)
    got = _as_uint8(load_vision_dataset("mnist", download=True))
    assert calls == [(str(cache), True, True)]
    downloads = cache / "MNIST" / "raw"
    for g, w in zip(got, _direct(downloads)):
        assert torch.equal(g, w)
    [keyed] = _keyed_dirs(cache)
    recorded = json.loads((keyed / "sources.json").read_text())["sources"]
    assert {Path(s["path"]).parent for s in recorded.values()} == {downloads.resolve()}


# ---------------------------------------------------------------------- no silent substitutions


def test_an_explicit_root_is_the_only_source(cache, tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setenv(
        "DGM_DATA_DIR", str(_write_source(tmp_path / "env").parents[1])
    )  # complete: never used
    monkeypatch.setattr(torchvision.datasets, "MNIST", lambda *a, **k: pytest.fail("downloaded"))
    missing = tmp_path / "no-such-dir"
    with pytest.raises(DataError) as err:
        load_vision_dataset("mnist", root=str(missing), download=True)
    assert f"dataset.root={missing} does not exist" in str(err.value) and "\n" not in str(err.value)
    partial = _write_source(tmp_path / "partial")
    (partial / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as err:
        load_vision_dataset("mnist", root=str(tmp_path / "partial"), download=True)
    message = str(err.value)
    assert (
        f"dataset.root={tmp_path / 'partial'}" in message
        and f"{partial} lacks train-labels-idx1-ubyte" in message
    )
    assert (
        "t10k" not in message.split(" lacks ")[1].split("(")[0]
        and "put the four IDX files" in message
    )
    assert not _keyed_dirs(cache)


@pytest.mark.parametrize(
    "kwargs, says",
    [
        (
            {"subset": 21},
            "dataset.subset=21 is larger than the 20 training images of mnist; "
            "use at most 20 or null",
        ),
        (
            {"test_subset": 11},
            "dataset.test_subset=11 is larger than the 10 test images of mnist; "
            "use at most 10 or null",
        ),
        (
            {"per_class": 3},
            "dataset.per_class=3 is larger than the 2 training images of class 0 in mnist; "
            "use at most 2",
        ),
        (
            {"per_class": 2, "subset": 21},
            "dataset.subset=21 is larger than the 20 training images of mnist left by "
            "dataset.per_class=2; use at most 20",
        ),
    ],
)
def test_subsets_larger_than_the_split_are_errors(cache, tmp_path, kwargs, says):
    src = _write_source(tmp_path / "src", n=20, n_test=10)
    with pytest.raises(DataError) as err:
        load_vision_dataset("mnist", root=str(src), download=False, **kwargs)
    assert says in str(err.value)
    exact = load_vision_dataset(
        "mnist", root=str(src), download=False, subset=20, test_subset=10, per_class=2
    )
    assert exact.train_x.shape[0] == 20 and exact.test_x.shape[0] == 10


def test_seed_002_binarizes_pixels_greater_than_128_exactly(tmp_path):
    """Seed 002: "if a pixel is greater than 128 set it to 1": 128 -> 0 and 129 -> 1 on the
    files' 0..255 scale (the former threshold=0.50196078 turned 128 into 1), also after the
    14x14 area averaging (mean of four pixels exactly 128 -> 0, 128.25 -> 1)."""
    import numpy as np

    flat = np.zeros((2, 28, 28), dtype=np.uint8)
    flat[0, 0, 0], flat[0, 0, 1] = 128, 129  # 28x28: the boundary itself
    flat[1, 0:2, 0:2] = [[128, 128], [128, 128]]  # 14x14 pixel (0, 0): mean 128
    flat[1, 0:2, 2:4] = [[128, 128], [128, 129]]  # 14x14 pixel (0, 1): mean 128.25
    images = struct.pack(">IIII", 0x803, 2, 28, 28) + flat.tobytes()
    root = write_mnist(tmp_path, images, idx_labels([0, 1]), images, idx_labels([0, 1]))
    full = vision.load_vision_dataset(root=str(root), binarize="threshold", threshold_uint8=128)
    assert full.train_x[0, 0, 0, 0] == 0.0 and full.train_x[0, 0, 0, 1] == 1.0
    assert torch.equal(full.test_x, full.train_x)
    # the config's former threshold: 0.50196078 < 128/255, so pixels equal to 128 became 1
    old = vision.load_vision_dataset(root=str(root), binarize="threshold", threshold=0.50196078)
    assert old.train_x[0, 0, 0, 0] == 1.0
    small = vision.load_vision_dataset(
        root=str(root), binarize="threshold", threshold_uint8=128, image_size=14
    )
    assert small.train_x[1, 0, 0, 0] == 0.0 and small.train_x[1, 0, 0, 1] == 1.0
    assert small.grey_test_x[1, 0, 0, 1] == pytest.approx(128.25 / 255)
