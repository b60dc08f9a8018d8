"""Colour / any-size image datasets (dgm_runner.data.images): CIFAR-10 python batches, a CelebA
layout and an image folder, each written here in the real formats with a few tiny images."""

from __future__ import annotations

import os
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dgm_runner.data.image_sources as sources
from dgm_runner.config import ConfigError, check_mandatory, validate
from dgm_runner.data.base import DataError
from dgm_runner.data.images import load_image_dataset
from tests.image_files import write_cifar

PER_BATCH = 4  # images per CIFAR training batch (5 batches); the test batch holds 3


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Each test its own cache and no $DGM_DATA_DIR (the offline MNIST copy has no colour sets)."""
    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DGM_DATA_DIR", raising=False)


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


# --------------------------------------------------------------------------- CIFAR-10


def _cifar(root: Path, per_batch: int = PER_BATCH, n_test: int = 3) -> dict[str, tuple]:
    """:func:`tests.image_files.write_cifar` with this file's sizes."""
    return write_cifar(root, per_batch, n_test)


def test_cifar_pixels_labels_and_splits_round_trip(tmp_path):
    written = _cifar(tmp_path / "data")
    data = load_image_dataset("cifar10", root=str(tmp_path / "data"))
    assert data.name == "cifar10" and data.n_classes == 10 and not data.binarized
    assert data.train_x.shape == (5 * PER_BATCH, 3, 32, 32) and data.test_x.shape == (3, 3, 32, 32)
    train = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    levels = (data.train_x * 255).round().to(torch.uint8).numpy()
    # pixel (c, y, x) of image i is byte c * 1024 + y * 32 + x of its row
    i, c, y, x = 5, 2, 7, 30
    assert levels[i, c, y, x] == train[i, c * 1024 + y * 32 + x]
    assert np.array_equal(levels.reshape(len(train), -1), train)
    expect = torch.from_numpy(train).float().div(255).reshape(-1, 3, 32, 32)
    assert torch.equal(data.train_x, expect)
    assert data.train_y.tolist() == labels and data.train_y.dtype == torch.int64
    assert data.test_y.tolist() == written["test_batch"][1]
    assert np.array_equal(
        (data.test_x * 255).round().to(torch.uint8).numpy().reshape(3, -1), written["test_batch"][0]
    )


def test_cifar_grey_is_the_luma_and_resizing_is_pils_bilinear(tmp_path):
    written = _cifar(tmp_path / "data")
    grey = load_image_dataset("cifar10", root=str(tmp_path / "data"), channels=1, image_size=16)
    assert grey.train_x.shape == (5 * PER_BATCH, 1, 16, 16)
    row = written["data_batch_1"][0][1].reshape(3, 32, 32).transpose(1, 2, 0)
    rgb = Image.fromarray(row)
    expect = np.asarray(rgb.convert("L").resize((16, 16), Image.Resampling.BILINEAR))
    assert np.array_equal((grey.train_x[1, 0] * 255).round().byte().numpy(), expect)
    r, g, b = (row[..., k].astype(np.int64) for k in range(3))  # ITU-R 601-2, as PIL "L"
    luma = load_image_dataset("cifar10", root=str(tmp_path / "data"), channels=1)
    got = (luma.train_x[1, 0] * 255).round().long().numpy()
    assert np.abs(got - (r * 299 + g * 587 + b * 114) / 1000).max() <= 0.5 + 1e-9


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_names_another_global_is_refused_unexecuted(tmp_path):
    _cifar(tmp_path / "data")
    evil = _Evil()
    evil.marker = tmp_path / "pwned"
    target = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_3"
    target.write_bytes(pickle.dumps({b"data": evil, b"labels": []}, protocol=2))
    with pytest.raises(DataError) as err:
        load_image_dataset("cifar10", root=str(tmp_path / "data"))
    assert str(target) in _one_line(err) and "system" in str(err.value)
    assert not evil.marker.exists()


def test_no_cifar_anywhere_names_the_files_and_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(DataError) as err:
        load_image_dataset("cifar10", download=False)
    text = _one_line(err)
    for part in ("cifar-10-batches-py/", "data_batch_1", "test_batch", "cifar-10-python.tar.gz"):
        assert part in text, text
    assert "DGM_DATA_DIR" in text and str(tmp_path / "empty") in text

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.CIFAR10", offline)
    with pytest.raises(DataError, match="download failed.*name resolution") as err:
        load_image_dataset("cifar10")
    assert "cifar-10-batches-py/" in _one_line(err)
    with pytest.raises(DataError, match="lacks data_batch_1") as err:
        load_image_dataset("cifar10", root=str(tmp_path))
    _one_line(err)


def test_memmap_storage_gives_uint8_rows_as_the_same_floats(tmp_path):
    _cifar(tmp_path / "data")
    root = str(tmp_path / "data")
    memory = load_image_dataset("cifar10", root=root, storage="memory")
    mapped = load_image_dataset("cifar10", root=root, storage="memmap")
    assert memory.train_x.dtype == torch.float32 and mapped.train_x.dtype == torch.uint8
    assert mapped.train_x.shape == memory.train_x.shape and mapped.image_shape == (3, 32, 32)
    idx = torch.tensor([7, 0, 19, 7])
    assert torch.equal(mapped.train_rows(idx), memory.train_rows(idx))
    assert torch.equal(memory.train_rows(idx), memory.train_x.index_select(0, idx))
    assert memory.train_float() is memory.train_x  # float storage: no copy
    assert torch.equal(mapped.train_float(), memory.train_x)
    assert torch.equal(mapped.test_x, memory.test_x) and mapped.test_x.dtype == torch.float32
    # auto: memmap once the float32 training split exceeds the budget (1 MiB < 120 x 12 KiB)
    auto = load_image_dataset("cifar10", root=root, memory_budget_mb=1)
    small = load_image_dataset("cifar10", root=root, memory_budget_mb=1, subset=20)
    assert auto.train_x.dtype == torch.float32 and small.train_x.dtype == torch.float32
    _cifar(tmp_path / "big", per_batch=20)
    big = load_image_dataset("cifar10", root=str(tmp_path / "big"), memory_budget_mb=1)
    assert big.train_x.dtype == torch.uint8 and big.train_x.shape[0] == 100
    assert mapped.train_x[:4].sum() >= 0  # a copy-on-write map reads without a warning


def test_subsets_and_uniform_dequantization(tmp_path):
    _cifar(tmp_path / "data")
    root = str(tmp_path / "data")
    data = load_image_dataset(
        "cifar10", root=root, subset=6, test_subset=2, dequantize="uniform", storage="memmap"
    )
    assert data.train_x.shape[0] == 6 and data.test_x.shape[0] == 2
    x = data.train_rows(torch.arange(6))
    k = torch.round(x * 255)
    torch.manual_seed(0)
    z = data.train_transform(x)
    assert bool(((z >= k / 256) & (z < (k + 1) / 256)).all())
    with pytest.raises(DataError, match=r"dataset.subset=21 is larger than the 20") as err:
        load_image_dataset("cifar10", root=root, subset=21)
    _one_line(err)
    with pytest.raises(DataError, match=r"dataset.test_subset=4 is larger than the 3"):
        load_image_dataset("cifar10", root=root, test_subset=4)


def test_hflip_flips_training_batches_before_the_dequantization(tmp_path):
    """dataset.hflip: the flip's coins, then the dequantization's noise, per example; every
    dequantized value sits in the bin of the pixel mirrored or not; test images untouched."""
    _cifar(tmp_path / "data")
    root = str(tmp_path / "data")
    plain = load_image_dataset("cifar10", root=root, subset=6)
    assert plain.train_transform is None
    data = load_image_dataset("cifar10", root=root, subset=6, hflip=True, dequantize="uniform")
    assert torch.equal(data.test_x, plain.test_x)
    x = data.train_rows(torch.arange(6))
    torch.manual_seed(0)
    z = data.train_transform(x)
    torch.manual_seed(0)
    coins = torch.rand(6) < 0.5
    assert 0 < int(coins.sum()) < 6  # the seed gives both cases
    levels = torch.floor(z * 256)
    want = torch.where(coins[:, None, None, None], x.flip(-1), x)
    assert torch.equal(levels, torch.round(want * 255))


def test_the_cache_is_reused_and_invalidated_when_a_source_file_changes(tmp_path, monkeypatch):
    _cifar(tmp_path / "data")
    root = str(tmp_path / "data")
    first = load_image_dataset("cifar10", root=root)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(sources, "read_cifar_batch", no_decoding)
    again = load_image_dataset("cifar10", root=root)  # a cache hit: nothing decoded
    assert torch.equal(again.train_x, first.train_x)
    batch = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_2"
    st = batch.stat()
    os.utime(batch, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="decoded again"):
        load_image_dataset("cifar10", root=root)
    monkeypatch.undo()
    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path / "cache"))
    load_image_dataset("cifar10", root=root)
    keyed = [p for p in (tmp_path / "cache" / "cifar10" / "decoded").iterdir()]
    assert len(keyed) == 1  # the stale key of the old file was deleted


# --------------------------------------------------------------------------- CelebA


def test_celeba_partitions_crop_and_resize(tmp_path):
    folder = tmp_path / "data" / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(1)
    faces = {}
    for i, part in enumerate([0, 1, 2, 0], start=1):
        name = f"{i:06d}.jpg"
        img = Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8))
        img.save(folder / "img_align_celeba" / name, quality=95)
        faces[name] = part
    (folder / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in faces.items()))
    data = load_image_dataset("celeba", root=str(tmp_path / "data"), image_size=16)
    assert data.name == "celeba" and data.n_classes == 1
    assert data.train_x.shape == (2, 3, 16, 16) and data.test_x.shape == (1, 3, 16, 16)
    assert data.train_y.tolist() == [0, 0] and data.test_y.tolist() == [0]
    with Image.open(folder / "img_align_celeba" / "000004.jpg") as img:  # train row 1
        crop = img.convert("RGB").crop((19, 39, 159, 179))  # centred 140x140 of 178x218
        expect = np.asarray(crop.resize((16, 16), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    assert np.array_equal((data.train_x[1] * 255).round().byte().numpy(), expect)
    default = load_image_dataset("celeba", root=str(tmp_path / "data"))
    assert default.image_shape == (3, 64, 64)


def test_no_celeba_names_the_files(tmp_path):
    with pytest.raises(DataError) as err:
        load_image_dataset("celeba", download=False)
    text = _one_line(err)
    assert "celeba/img_align_celeba/" in text and "celeba/list_eval_partition.txt" in text


# --------------------------------------------------------------------------- image folders


def _save(path: Path, img: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _modes_folder(root: Path) -> None:
    """Two classes of 4x4 images in the modes a folder may hold (RGBA, P, I;16, L, RGB, JPEG)."""
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[:2, :, 3] = 255  # top half opaque, bottom half transparent
    _save(root / "cats" / "a_rgba.png", Image.fromarray(rgba, "RGBA"))
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    _save(root / "cats" / "b_pal.png", pal)
    wide = np.full((4, 4), 65535, np.uint16)
    wide[0, 0], wide[0, 1], wide[0, 2] = 0, 32768, 257
    _save(root / "dogs" / "c_i16.png", Image.fromarray(wide))
    _save(root / "dogs" / "d_grey.png", Image.fromarray(np.full((4, 4), 77, np.uint8)))
    _save(root / "dogs" / "e_rgb.bmp", Image.new("RGB", (4, 4), (1, 2, 3)))
    _save(root / "dogs" / "f.jpg", Image.new("RGB", (4, 4), (250, 250, 250)))


def _all_rows(data) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.cat([data.train_x, data.test_x])
    return (x * 255).round().long(), torch.cat([data.train_y, data.test_y])


def test_image_folder_modes_classes_and_split(tmp_path):
    _modes_folder(tmp_path / "imgs")
    data = load_image_dataset("image_folder", root=str(tmp_path / "imgs"), test_fraction=0.34)
    assert data.name == "image_folder" and data.n_classes == 2
    assert data.train_x.shape == (4, 3, 4, 4) and data.test_x.shape == (2, 3, 4, 4)
    again = load_image_dataset(
        "image_folder", root=str(tmp_path / "imgs"), test_fraction=0.34, split_seed=0
    )
    assert torch.equal(again.test_x, data.test_x)  # the seeded split
    other = load_image_dataset(
        "image_folder", root=str(tmp_path / "imgs"), test_fraction=0.34, split_seed=3
    )
    assert other.train_x.shape[0] == 4
    # every image once, with its class (cats 0, dogs 1) and its colours
    x, y = _all_rows(data)
    by_colour = {tuple(int(v) for v in img[:, 0, 3]): int(c) for img, c in zip(x, y)}
    assert by_colour[(10, 20, 30)] == 0  # RGBA, opaque half as is
    assert by_colour[(200, 100, 50)] == 0  # palette entry 1
    assert by_colour[(1, 2, 3)] == 1 and by_colour[(77, 77, 77)] == 1
    rgba = next(img for img in x if tuple(img[:, 0, 3].tolist()) == (10, 20, 30))
    assert (rgba[:, 2:] == 255).all()  # transparent half composited on white
    wide = next(img for img in x if img[0, 0, 0] == 0 and img[0, 3, 3] == 255)
    assert wide[0, 0, :3].tolist() == [0, 128, 1]  # 16-bit scaled: 32768 -> 128, 257 -> 1
    grey = load_image_dataset("image_folder", root=str(tmp_path / "imgs"), channels=1)
    assert grey.image_shape == (1, 4, 4)


def test_a_folder_of_grey_images_defaults_to_one_channel_and_resizes(tmp_path):
    for i in range(4):
        img = Image.fromarray(np.full((6, 8), 40 * i, np.uint8))  # 8 wide, 6 high
        _save(tmp_path / "imgs" / f"{i}.png", img)
    data = load_image_dataset("image_folder", root=str(tmp_path / "imgs"), test_fraction=0.25)
    assert data.image_shape == (1, 6, 6) and data.n_classes == 1  # the centred 6x6 square
    assert data.train_y.tolist() == [0, 0, 0]
    small = load_image_dataset("image_folder", root=str(tmp_path / "imgs"), image_size=3)
    assert small.image_shape == (1, 3, 3)


def test_mixed_sizes_need_an_image_size(tmp_path):
    _save(tmp_path / "imgs" / "a.png", Image.new("RGB", (4, 4)))
    _save(tmp_path / "imgs" / "b.png", Image.new("RGB", (5, 5)))
    with pytest.raises(DataError, match="image_size") as err:
        load_image_dataset("image_folder", root=str(tmp_path / "imgs"), test_fraction=0.5)
    text = _one_line(err)
    assert "a.png is 4x4" in text and "b.png is 5x5" in text
    data = load_image_dataset(
        "image_folder", root=str(tmp_path / "imgs"), test_fraction=0.5, image_size=4
    )
    assert data.image_shape == (3, 4, 4)


def test_a_truncated_image_is_named_and_leaves_no_cache(tmp_path):
    for i in range(3):
        _save(tmp_path / "imgs" / f"{i}.png", Image.fromarray(np.full((16, 16), i, np.uint8)))
    bad = _save(tmp_path / "imgs" / "1.png", Image.effect_noise((64, 64), 50))
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with pytest.raises(DataError) as err:
        load_image_dataset("image_folder", root=str(tmp_path / "imgs"), image_size=16)
    assert str(bad) in _one_line(err)
    decoded = tmp_path / "cache" / "image_folder" / "decoded"
    assert not decoded.exists() or list(decoded.iterdir()) == []


def test_a_failure_mid_decode_leaves_no_keyed_directory(tmp_path, monkeypatch):
    _cifar(tmp_path / "data")
    calls = []

    def fails_on_the_third(path, downloaded):
        calls.append(path)
        if len(calls) == 3:
            raise DataError(f"{path} broke")
        return real(path, downloaded)

    real = sources.read_cifar_batch
    monkeypatch.setattr(sources, "read_cifar_batch", fails_on_the_third)
    with pytest.raises(DataError, match="data_batch_3 broke"):
        load_image_dataset("cifar10", root=str(tmp_path / "data"))
    assert list((tmp_path / "cache" / "cifar10" / "decoded").iterdir()) == []


def test_empty_folders_and_missing_roots_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="holds no image file") as err:
        load_image_dataset("image_folder", root=str(tmp_path / "empty"))
    _one_line(err)
    with pytest.raises(DataError, match="does not exist") as err:
        load_image_dataset("image_folder", root=str(tmp_path / "nowhere"))
    _one_line(err)
    _save(tmp_path / "one" / "a.png", Image.new("L", (2, 2)))
    with pytest.raises(DataError, match="holds 1 image; a training and a test split") as err:
        load_image_dataset("image_folder", root=str(tmp_path / "one"))
    _one_line(err)


# --------------------------------------------------------------------------- configs


def test_image_folder_without_root_is_one_line_before_any_work(compose_cfg, tmp_path):
    from dgm_runner.loop import train

    cfg = compose_cfg("experiment=vae_mlp", "dataset=image_folder")
    validate(cfg)  # composes and validates as shipped; the root is the user's
    with pytest.raises(ConfigError, match="dataset.root is required") as err:
        check_mandatory(cfg)
    _one_line(err)
    with pytest.raises(ConfigError, match="dataset.root is required"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists() or [p.name for p in (tmp_path / "run").iterdir()] == []
    assert not (tmp_path / "cache").exists()
    null_root = compose_cfg("experiment=vae_mlp", "dataset=image_folder", "dataset.root=null")
    with pytest.raises(ConfigError, match="dataset: name=image_folder needs root") as err:
        validate(null_root)
    _one_line(err)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dataset.channels=2", "dataset.channels=2 is invalid"),
        ("dataset.storage=disk", "dataset.storage='disk' is invalid"),
        ("+dataset.test_fraction=0.2", "test_fraction=0.2 applies to name=image_folder only"),
        ("dataset.image_size=0", "dataset.image_size=0 is invalid"),
    ],
)
def test_colour_dataset_options_are_checked_before_any_work(compose_cfg, override, message):
    cfg = compose_cfg("experiment=vae_mlp", "dataset=cifar10", override)
    with pytest.raises(ConfigError, match=message) as err:
        validate(cfg)
    _one_line(err)


def test_shipped_colour_configs_compose_and_validate(compose_cfg):
    for name in ("cifar10", "celeba"):
        cfg = compose_cfg("experiment=vae_mlp", f"dataset={name}")
        validate(cfg)
        check_mandatory(cfg)
        assert cfg.dataset.name == name


def test_training_on_a_memmapped_split_equals_training_in_memory(compose_cfg, tmp_path):
    """The loop's batches come from train_rows: a uint8 memory-mapped split trains exactly as
    the float32 split in memory."""
    from dgm_runner.loop import train

    _cifar(tmp_path / "data", per_batch=16, n_test=8)
    metrics = {}
    for storage in ("memmap", "memory"):
        cfg = compose_cfg(
            "experiment=vae_mlp",
            "+debug=smoke",
            "dataset=cifar10",
            f"dataset.root={tmp_path / 'data'}",
            f"dataset.storage={storage}",
            "dataset.subset=64",
            "dataset.test_subset=8",
            "logger=none",
            "~sample_metrics.fid",
            "trainer.export_name=null",
            "trainer.num_threads=1",
        )
        metrics[storage] = train(cfg, tmp_path / storage)
    assert metrics["memmap"]["test/elbo_loss"] == metrics["memory"]["test/elbo_loss"]
    assert metrics["memmap"]["train/elbo_loss"] == metrics["memory"]["train/elbo_loss"]
