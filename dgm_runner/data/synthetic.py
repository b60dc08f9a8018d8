"""A tiny synthetic image dataset generated from a seed (no files): smooth coloured blobs,
for tests and users' smoke runs of any model on colour images of any size
(``dataset=synthetic_images``)."""

from __future__ import annotations

import math
from typing import Optional

import torch

from dgm_runner.config import NonNegativeInt, PositiveInt, UnitInterval
from dgm_runner.data.base import DataError, DataSplits
from dgm_runner.data.protocols import (
    Binarize,
    Dequantize,
    DynamicBinarization,
    UniformDequantization,
    check_protocol,
    fixed_binarization,
    split_seed,
)

#: Gaussian blobs per image.
BLOBS = 3


def synthetic_images(
    n: int,
    shape: tuple[int, int, int],
    n_classes: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` smooth coloured images and their labels, drawn from ``generator``.

    Each image is a dim background plus :data:`BLOBS` isotropic Gaussian blobs (centre
    uniform on the image, width 10-30 % of its side, a random colour per blob); the first
    blob's colour is set by the label (channel ``c`` of class ``k`` has intensity
    ``0.5 + 0.5 cos(2 pi (k / K + c / C))``), so a class-conditional model has something to
    learn. Values are rounded to the 8-bit levels ``k / 255`` (the grey levels of the vision
    loaders, so ``dequantize=uniform`` and 256-level likelihoods apply). Labels cycle
    ``0, 1, ..., K - 1, 0, ...``.

    Args:
        n: number of images.
        shape: ``(C, H, W)``.
        n_classes: ``K``.
        generator: a CPU generator (all draws come from it, in a fixed order).

    Returns:
        ``(n, C, H, W)`` float32 in [0, 1] and ``(n,)`` int64 labels.
    """
    c, h, w = shape
    labels = torch.arange(n) % n_classes
    centres = torch.rand(n, BLOBS, 2, generator=generator)  # (row, column) in [0, 1]
    widths = 0.1 + 0.2 * torch.rand(n, BLOBS, generator=generator)
    colours = torch.rand(n, BLOBS, c, generator=generator)
    phase = labels[:, None].float() / n_classes + torch.arange(c)[None].float() / c
    colours[:, 0] = 0.5 + 0.5 * torch.cos(2 * math.pi * phase)
    background = 0.2 * torch.rand(n, c, generator=generator)
    rows = (torch.arange(h).float() + 0.5) / h
    cols = (torch.arange(w).float() + 0.5) / w
    # a Gaussian blob is separable: exp(-(dr^2 + dc^2) / 2s^2) = exp(-dr^2 / 2s^2) exp(-dc^2 / 2s^2)
    scale = 2 * widths[..., None] ** 2
    along_rows = torch.exp(-((rows - centres[..., 0, None]) ** 2) / scale)  # (n, BLOBS, H)
    along_cols = torch.exp(-((cols - centres[..., 1, None]) ** 2) / scale)  # (n, BLOBS, W)
    blobs = torch.einsum("nbc,nbh,nbw->nchw", colours, along_rows, along_cols)
    x = background[..., None, None] + blobs
    x = torch.round(x.clamp(0, 1) * 255) / 255
    return x.float(), labels


def load_synthetic_images(
    name: str = "synthetic_images",
    channels: PositiveInt = 3,
    image_size: PositiveInt = 32,
    n_train: PositiveInt = 1024,
    n_test: PositiveInt = 256,
    n_classes: PositiveInt = 10,
    seed: NonNegativeInt = 0,
    binarize: Binarize = "none",
    threshold: UnitInterval = 0.5,
    binarize_seed: NonNegativeInt = 0,
    dequantize: Dequantize = "none",
    subset: Optional[PositiveInt] = None,
    test_subset: Optional[PositiveInt] = None,
    device: str | torch.device = "cpu",
) -> DataSplits:
    """``(channels, image_size, image_size)`` images of :func:`synthetic_images`: a train
    split of ``n_train`` and a test split of ``n_test`` images (drawn in that order from one
    generator seeded ``seed``), on ``device``; built in milliseconds.

    The data protocols are those of the vision loaders (:mod:`dgm_runner.data.protocols`):
    ``binarize`` = ``none`` | ``threshold`` (``x > threshold``) | ``dynamic`` (training
    images redrawn ``Bernoulli(x)`` at every use, test images binarized once with
    ``binarize_seed``) | ``fixed`` (both binarized once, with ``binarize_seed``);
    ``dequantize=uniform``: training images ``(k + u) / 256`` at every use.

    Args:
        name: the dataset's name (``DataSplits.name``: run records and the FID feature
            classifier are keyed on it).
        channels: ``C`` (1: grey, 3: colour).
        image_size: ``H = W``.
        n_train, n_test: images per split.
        n_classes: label classes (labels cycled).
        seed: the generator's seed.
        binarize, threshold, binarize_seed, dequantize: the data protocol (above).
        subset, test_subset: keep the first images of a split (``+debug=smoke``).
        device: where the tensors go.

    Returns:
        :class:`DataSplits` named ``name``.

    Raises:
        ValueError: (one line; a ConfigError once the runner builds the data) a protocol
            that cannot be honoured (:func:`~dgm_runner.data.protocols.check_protocol`).
        DataError: ``subset`` / ``test_subset`` larger than the split.
    """
    check_protocol(binarize, dequantize, name=name)
    for key, asked, have in (("subset", subset, n_train), ("test_subset", test_subset, n_test)):
        if asked is not None and asked > have:
            raise DataError(
                f"dataset.{key}={asked} is larger than the {have} images of the split; "
                f"use at most {have} or null (or raise dataset.n_train / dataset.n_test)"
            )
    gen = torch.Generator().manual_seed(seed)
    shape = (channels, image_size, image_size)
    train_x, train_y = synthetic_images(n_train, shape, n_classes, gen)
    test_x, test_y = synthetic_images(n_test, shape, n_classes, gen)
    grey_test = test_x[:test_subset]
    if binarize == "threshold":
        train_x, test_x = (train_x > threshold).float(), (test_x > threshold).float()
    elif binarize == "fixed":
        train_x = fixed_binarization(train_x, split_seed(binarize_seed, "train"))
        test_x = fixed_binarization(test_x, split_seed(binarize_seed, "test"))
    elif binarize == "dynamic":
        test_x = fixed_binarization(test_x, split_seed(binarize_seed, "test"))
    transform = None
    if binarize == "dynamic":
        transform = DynamicBinarization()
    elif dequantize == "uniform":
        transform = UniformDequantization()
    binary = binarize != "none"
    return DataSplits(
        name=name,
        train_x=train_x[:subset].to(device),
        train_y=train_y[:subset].to(device),
        test_x=test_x[:test_subset].to(device),
        test_y=test_y[:test_subset].to(device),
        n_classes=n_classes,
        binarized=binary,
        grey_test_x=grey_test.to(device) if binary else None,
        train_transform=transform,
    )
