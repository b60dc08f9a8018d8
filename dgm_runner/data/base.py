"""The in-memory dataset every model trains on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


class DataError(RuntimeError):
    """A dataset cannot be found, read or is inconsistent; the message says what to do."""


@dataclass
class DataSplits:
    """The train and test splits of a dataset, held as tensors on the training device:
    images, or points of a low-dimensional toy distribution.

    Attributes:
        name: dataset name (``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``, ``"celeba"``,
            ``"image_folder"``, ``"toy2d/..."``).
        train_x: float32 ``(N, C, H, W)`` images in [0, 1] (exactly {0, 1} if binarized,
            except under dynamic binarization: the intensities, which ``train_transform``
            binarizes at every use), or ``(N, D)`` points; or, for a memory-mapped colour
            dataset (``dataset.storage=memmap``, :mod:`dgm_runner.data.images`), uint8
            ``(N, C, H, W)`` levels ``k`` on the CPU standing for ``k / 255``. Read rows
            with :meth:`train_rows`, which returns float32 on :attr:`device` either way.
        train_y: int64 ``(N,)`` class labels (zeros for unlabeled toy data).
        test_x: float32 ``(M, ...)`` as train_x.
        test_y: int64 ``(M,)``.
        n_classes: number of label classes.
        binarized: whether the model sees binary pixels: ``test_x`` exactly 0 or 1, and
            ``train_x`` too or binarized by ``train_transform`` (``dataset.binarize`` =
            ``threshold``, ``fixed`` or ``dynamic``, :mod:`dgm_runner.data.protocols`).
        grey_test_x: for binarized images, the test images in grey levels before the
            binarization (same shape as test_x; the reference set of FID/KID, see
            ``dgm_runner.metrics.fid``); None when test_x is not binarized or has no grey
            levels (Larochelle & Murray's files).
        train_transform: what the loop applies to each training batch ``(B, ...)`` before
            the update (dynamic binarization, uniform dequantization), drawing its noise per
            example (:func:`dgm_runner.distributions.batch_draw`, global RNG: exact on resume
            and in data-parallel shards); None: the batch as stored. Test data is never
            transformed.
        train_noise: float32 ``(N, ...)`` noise paired row by row with ``train_x``, in the
            model space of the flow that made the pairs (the reflow data of
            :mod:`dgm_runner.data.reflow`: ``noise[i]`` is the prior draw whose ODE endpoint
            is ``train_x[i]``); the loop gathers it with the same rows as ``train_x``
            (``Batch.noise``). None for every other dataset. The test split has no pairs.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    n_classes: int
    binarized: bool
    grey_test_x: torch.Tensor | None = None
    train_transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    train_noise: torch.Tensor | None = None

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one example: ``(C, H, W)`` for images, ``(D,)`` for points."""
        return tuple(int(s) for s in self.train_x.shape[1:])

    @property
    def device(self) -> torch.device:
        """Where batches are made: the device of the labels and the test split (and of
        ``train_x``, unless it is a memory-mapped uint8 file on the CPU)."""
        return self.train_y.device

    def train_rows(self, idx: torch.Tensor) -> torch.Tensor:
        """The training examples ``idx`` as float32 on :attr:`device`.

        Args:
            idx: int64 ``(B,)`` row indices (on any device).

        Returns:
            ``(B, ...)`` float32: ``train_x.index_select(0, idx)`` for float storage
            (the very rows), ``levels / 255`` for uint8 storage (gathered on ``train_x``'s
            device, then moved to :attr:`device` and converted there).
        """
        if self.train_x.dtype != torch.uint8:
            return self.train_x.index_select(0, idx)
        rows = self.train_x.index_select(0, idx.to(self.train_x.device))
        return rows.to(self.device).float().div_(255.0)

    def train_float(self) -> torch.Tensor:
        """The whole training split as float32 on :attr:`device`: ``train_x`` itself for
        float storage (no copy), ``levels / 255`` for a memory-mapped uint8 split (a copy:
        4 bytes a pixel)."""
        if self.train_x.dtype != torch.uint8:
            return self.train_x
        return self.train_x.to(self.device).float().div_(255.0)

    @property
    def grey_test(self) -> torch.Tensor:
        """The test images in grey levels: ``grey_test_x`` if binarized, else ``test_x``."""
        return self.test_x if self.grey_test_x is None else self.grey_test_x

    @property
    def is_image(self) -> bool:
        """Whether examples are ``(C, H, W)`` images (else ``(D,)`` points)."""
        return self.train_x.ndim == 4

    def __post_init__(self) -> None:
        for split, x, y in (
            ("train", self.train_x, self.train_y),
            ("test", self.test_x, self.test_y),
        ):
            if x.ndim not in (2, 4):
                raise DataError(
                    f"{self.name}/{split}: data must be (N, C, H, W) or (N, D), "
                    f"got {tuple(x.shape)}"
                )
            if x.shape[0] == 0:
                raise DataError(f"{self.name}/{split}: the split is empty (check dataset.subset)")
            if y.shape != (x.shape[0],):
                raise DataError(
                    f"{self.name}/{split}: {x.shape[0]} images but labels of shape {tuple(y.shape)}"
                )
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.n_classes):
                raise DataError(f"{self.name}/{split}: labels outside [0, {self.n_classes})")
        if self.train_noise is not None and self.train_noise.shape != self.train_x.shape:
            raise DataError(
                f"{self.name}/train: noise of shape {tuple(self.train_noise.shape)} is not "
                f"paired row by row with the data of shape {tuple(self.train_x.shape)}"
            )
