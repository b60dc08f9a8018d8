"""Data augmentation of training batches: random horizontal flips, and the chaining of
training-batch transforms (``DataSplits.train_transform``).

``dataset.hflip=true`` (natural images: CIFAR-10, CelebA, a user's folder; never digits)
mirrors each training image left-right with probability 1/2 at every use, the augmentation
of the CIFAR-10 diffusion literature (Ho et al. 2020, Appendix B: "random horizontal flips";
Karras et al. 2022 train their CIFAR-10 models with x-flips in their augmentation pipeline).
As every transform here, the coin of each example is drawn through
:func:`dgm_runner.distributions.batch_draw` from the global RNG: a data-parallel shard
flips the rows a single process would, and a resumed run is exact. Test images are never
flipped.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from dgm_runner.distributions import batch_draw

__all__ = ["Chain", "RandomHorizontalFlip", "chain"]

Transform = Callable[[torch.Tensor], torch.Tensor]


class RandomHorizontalFlip:
    """Each ``(C, H, W)`` image of a batch mirrored along its width with probability ``p``.

    Args:
        p: the flip probability, in [0, 1] (0.5: the literature's).

    Raises:
        ValueError: ``p`` outside [0, 1] (one line, at construction).
    """

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"the flip probability must lie in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H, W)``, each row flipped or kept by its own coin.

        Raises:
            ValueError: ``x`` is not a batch of images (4 dimensions).
        """
        if x.ndim != 4:
            raise ValueError(f"horizontal flips need (B, C, H, W) images, got {tuple(x.shape)}")
        u = batch_draw(x.shape[0], lambda m: torch.rand(m, device=x.device))
        return torch.where((u < self.p)[:, None, None, None], x.flip(-1), x)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Chain:
    """Transforms applied one after the other (``chain(f, g)(x) = g(f(x))``), each drawing
    its own noise in turn from the global RNG."""

    def __init__(self, *transforms: Transform) -> None:
        self.transforms = transforms

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` -> ``(B, ...)`` through every transform in order."""
        for transform in self.transforms:
            x = transform(x)
        return x

    def __repr__(self) -> str:
        return "Chain(" + ", ".join(map(repr, self.transforms)) + ")"


def chain(*transforms: Optional[Transform]) -> Optional[Transform]:
    """The non-None ``transforms`` applied in order: None when there are none, the
    transform itself when there is one (so a single transform is unchanged), else a
    :class:`Chain`."""
    kept = [t for t in transforms if t is not None]
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else Chain(*kept)
