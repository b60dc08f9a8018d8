"""The in-memory dataset every model trains on."""

from __future__ import annotations

from dataclasses import dataclass

import torch


class DataError(RuntimeError):
    """A dataset cannot be found, read or is inconsistent; the message says what to do."""


@dataclass
class ImageData:
    """A train/test split held as tensors on the training device.

    Attributes:
        name: dataset name (``"mnist"``, ``"fashion_mnist"``, ...).
        train_x: float32 ``(N, C, H, W)`` images in [0, 1] (exactly {0, 1} if binarized).
        train_y: int64 ``(N,)`` class labels.
        test_x: float32 ``(M, C, H, W)``.
        test_y: int64 ``(M,)``.
        n_classes: number of label classes.
        binarized: whether pixel values are exactly 0 or 1.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    n_classes: int
    binarized: bool

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.train_x.shape[1:]
        return (int(c), int(h), int(w))

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.ndim != 4:
                raise DataError(f"{self.name}/{split}: images must be (N, C, H, W), got {tuple(x.shape)}")
            if x.shape[0] == 0:
                raise DataError(f"{self.name}/{split}: the split is empty (check dataset.subset)")
            if y.shape != (x.shape[0],):
                raise DataError(f"{self.name}/{split}: {x.shape[0]} images but labels of shape {tuple(y.shape)}")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.n_classes):
                raise DataError(f"{self.name}/{split}: labels outside [0, {self.n_classes})")
