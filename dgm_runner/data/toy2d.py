"""2-D toy distributions, generated from a seed (no files): seed 001 Q4's score-matching data."""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch

from dgm_runner.config import NonNegativeFloat, NonNegativeInt, PositiveInt
from dgm_runner.data.base import DataError, DataSplits

Toy = Literal["checkerboard", "two_moons", "rings", "spiral", "gaussians8"]


def sample_toy2d(
    name: Toy, n: int, generator: torch.Generator, noise: float = 0.05
) -> torch.Tensor:
    """Draw ``n`` points of a 2-D toy distribution, ``(n, 2)`` float32, roughly in [-4, 4]^2.

    * ``checkerboard``: uniform on the 8 black squares of a 4x4 board on [-4, 4]^2
      (disconnected, sharp-edged: hard for a Gaussian, the default).
    * ``two_moons``: two interleaved half circles (radius 2).
    * ``rings``: two concentric circles (radii 1.5 and 3).
    * ``spiral``: an Archimedean spiral arm.
    * ``gaussians8``: 8 Gaussians (std 0.2) on a circle of radius 3.

    ``noise`` is the std of Gaussian jitter added to the curve-shaped ones.
    """
    u = torch.rand(n, generator=generator)
    eps = torch.randn(n, 2, generator=generator) * noise
    if name == "checkerboard":
        cell = torch.randint(0, 8, (n,), generator=generator)
        row = cell // 2
        col = 2 * (cell % 2) + (row % 2)  # black squares: (row + col) even
        xy = torch.stack([col, row], dim=1).float() + torch.rand(n, 2, generator=generator)
        return xy * 2.0 - 4.0
    if name == "two_moons":
        upper = u < 0.5
        angle = torch.rand(n, generator=generator) * math.pi
        x = torch.where(upper, 2 * torch.cos(angle) - 1, 1 - 2 * torch.cos(angle))
        y = torch.where(upper, 2 * torch.sin(angle) - 0.5, 0.5 - 2 * torch.sin(angle))
        return torch.stack([x, y], dim=1) + eps
    if name == "rings":
        radius = torch.where(u < 0.5, 1.5, 3.0)
        angle = torch.rand(n, generator=generator) * 2 * math.pi
        return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1) + eps
    if name == "spiral":
        t = torch.sqrt(u) * 3 * math.pi
        r = t / (3 * math.pi) * 3.5
        return torch.stack([r * torch.cos(t), r * torch.sin(t)], dim=1) + eps
    if name == "gaussians8":
        k = torch.randint(0, 8, (n,), generator=generator).float()
        centers = 3 * torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], dim=1)
        return centers + torch.randn(n, 2, generator=generator) * 0.2
    raise ValueError(f"unknown toy distribution {name!r}")


def load_toy2d(
    name: Toy = "checkerboard",
    n_train: PositiveInt = 2000,
    n_test: PositiveInt = 4000,
    noise: NonNegativeFloat = 0.05,
    seed: NonNegativeInt = 0,
    subset: Optional[PositiveInt] = None,
    test_subset: Optional[PositiveInt] = None,
    device: str | torch.device = "cpu",
) -> DataSplits:
    """A train split of ``n_train`` points and an independent test split of ``n_test``
    points (seed 001 Q4 trains on 2000); ``(N, 2)`` tensors on ``device``, labels zero.

    Sample-based metrics compare model samples with the first half of the test split and
    use the second half as the floor (two fresh draws of the data). ``subset`` /
    ``test_subset`` keep the first points of a split, as for the image datasets (so
    ``+debug=smoke`` shrinks every experiment).

    Raises:
        DataError: ``subset`` / ``test_subset`` larger than the split.
    """
    for key, asked, have in (("subset", subset, n_train), ("test_subset", test_subset, n_test)):
        if asked is not None and asked > have:
            raise DataError(
                f"dataset.{key}={asked} is larger than the {have} points of the split; "
                f"use at most {have} or null"
            )
    gen = torch.Generator().manual_seed(seed)
    train = sample_toy2d(name, n_train, gen, noise)[:subset]
    test = sample_toy2d(name, n_test, gen, noise)[:test_subset]
    n_train, n_test = train.shape[0], test.shape[0]
    zeros = torch.zeros
    return DataSplits(
        name=f"toy2d/{name}",
        train_x=train.to(device),
        train_y=zeros(n_train, dtype=torch.long, device=device),
        test_x=test.to(device),
        test_y=zeros(n_test, dtype=torch.long, device=device),
        n_classes=1,
        binarized=False,
    )
