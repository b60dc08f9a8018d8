"""Training-batch augmentation (dgm_runner/data/augment.py, issue 32): horizontal flips drawn
per example (exact under data-parallel shards and on resume) and the chaining of transforms."""

from __future__ import annotations

import math

import pytest
import torch

from dgm_runner.data.augment import Chain, RandomHorizontalFlip, chain
from dgm_runner.data.protocols import UniformDequantization
from dgm_runner.distributions import shard_rows


def _images(n: int = 11) -> torch.Tensor:
    return torch.arange(n * 3 * 2 * 4, dtype=torch.float32).reshape(n, 3, 2, 4) / 255.0


def test_each_image_is_kept_or_mirrored_whole():
    x = _images()
    torch.manual_seed(0)
    y = RandomHorizontalFlip()(x)
    flipped = [bool(torch.equal(y[i], x[i].flip(-1))) for i in range(len(x))]
    kept = [bool(torch.equal(y[i], x[i])) for i in range(len(x))]
    assert all(f != k for f, k in zip(flipped, kept))  # every row one or the other, never mixed
    assert any(flipped) and any(kept)
    assert torch.equal(RandomHorizontalFlip(1.0)(x), x.flip(-1))
    assert torch.equal(RandomHorizontalFlip(0.0)(x), x)


def test_the_flip_rate_is_p():
    """20 000 coins at p = 0.3: the rate within 5 binomial standard errors (fails by chance
    with probability below 1e-6)."""
    x = torch.zeros(20_000, 1, 1, 2)
    x[..., 0] = 1.0  # a flipped row has its 1 on the right
    torch.manual_seed(1)
    rate = RandomHorizontalFlip(0.3)(x)[..., 1].mean().item()
    assert abs(rate - 0.3) < 5 * math.sqrt(0.3 * 0.7 / 20_000)


def test_a_shard_flips_the_rows_one_process_flips():
    x = _images()
    torch.manual_seed(2)
    whole = RandomHorizontalFlip()(x)
    torch.manual_seed(2)
    with shard_rows(6, 5, 11):  # process 1 of 2: rows 6..10
        part = RandomHorizontalFlip()(x[6:])
    assert torch.equal(part, whole[6:])


def test_chain_applies_in_order_and_single_transforms_pass_through():
    flip, deq = RandomHorizontalFlip(1.0), UniformDequantization()
    assert chain(None, None) is None and chain(None, deq) is deq
    both = chain(flip, None, deq)
    assert isinstance(both, Chain) and "RandomHorizontalFlip" in repr(both)
    x = _images()
    torch.manual_seed(3)
    got = both(x)
    torch.manual_seed(3)
    assert torch.equal(got, deq(flip(x)))  # the flip's coins first, then the dequantization
    assert torch.equal(torch.floor(got * 256), torch.round(x.flip(-1) * 255))


def test_bad_flip_input_is_one_line():
    with pytest.raises(ValueError, match=r"flip probability must lie in \[0, 1\], got 1.5"):
        RandomHorizontalFlip(1.5)
    with pytest.raises(ValueError, match=r"need \(B, C, H, W\) images, got \(4, 2\)"):
        RandomHorizontalFlip()(torch.zeros(4, 2))
