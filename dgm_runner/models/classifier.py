"""A small CNN classifier whose penultimate layer is the feature space of the
classifier-feature FID / KID / precision-recall (``dgm_runner.metrics.fid``).

Inception-v3 features are a poor fit for 28x28 grey digits (the pytorch-fid and TTUR
maintainers advise against them on MNIST), so, as is common for MNIST-family
evaluations, the features come from a classifier trained on the dataset itself
(``dgm-train experiment=classifier_mnist`` / ``classifier_fashion`` / ``classifier_cifar10``).
The network takes images of the shape of its training data (1x28x28 for MNIST, 3x32x32 for
CIFAR-10); the Inception-v3 FID of colour data is :mod:`dgm_runner.metrics.inception`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dgm_runner.config import PositiveInt, UnitInterval

#: The smallest image side: two 2x2 max-pools must leave at least one pixel.
MIN_SIDE = 4


class FeatureCNN(nn.Module):
    """Two conv blocks and a hidden layer: ``Conv3x3(C->c1)-ReLU-MaxPool2 ->
    Conv3x3(c1->c2)-ReLU-MaxPool2 -> Dropout -> Linear(c2*(H//4)*(W//4) -> hidden)-ReLU ->
    Dropout -> Linear(hidden -> n_classes)`` (``c2*7*7`` for 28x28 MNIST, ``c2*8*8`` for
    32x32 CIFAR-10).

    ``features(x)`` is the ``(B, hidden)`` post-ReLU hidden layer (the FID feature space);
    ``forward(x)`` the ``(B, n_classes)`` logits. Inputs are ``(B, C, H', W')`` images in
    [0, 1] with the ``C`` of ``image_shape``; other sizes than the training data's ``(H, W)``
    are resized bilinearly first, so a 14x14 model's samples are scored in the same space as
    the 28x28 test images.

    Args:
        image_shape: ``(C, H, W)`` of the data (set by the runner): any channel count, sides
            of at least :data:`MIN_SIDE`.
        n_classes: number of labels (set by the runner).
        channels1, channels2: conv widths; hidden: feature dimension; dropout: rate.

    Raises:
        ValueError: ``image_shape`` is not a 3-tuple (the classifier needs images) or a side
            is below :data:`MIN_SIDE`.
    """

    def __init__(
        self,
        image_shape: tuple[int, ...],
        n_classes: int,
        channels1: PositiveInt = 32,
        channels2: PositiveInt = 64,
        hidden: PositiveInt = 128,
        dropout: UnitInterval = 0.25,
    ) -> None:
        super().__init__()
        if len(image_shape) != 3:
            raise ValueError(
                f"the classifier needs (C, H, W) images, got examples of shape {tuple(image_shape)}"
            )
        if min(image_shape[1:]) < MIN_SIDE:
            raise ValueError(
                f"the classifier needs images of at least {MIN_SIDE}x{MIN_SIDE} (two 2x2 "
                f"max-pools), got {tuple(image_shape)}"
            )
        self.image_shape = tuple(image_shape)
        #: ``(H, W)`` the network sees: inputs of another size are resized to it
        self.input_size = (int(image_shape[1]), int(image_shape[2]))
        self.n_classes = n_classes
        self.num_features = hidden  # read by torchmetrics' FID/KID for a custom extractor
        #: constructor arguments, stored with the exported classifier to rebuild it
        self.arch = {
            "channels1": channels1,
            "channels2": channels2,
            "hidden": hidden,
            "dropout": dropout,
        }
        self.conv = nn.Sequential(
            nn.Conv2d(image_shape[0], channels1, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels1, channels2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(dropout),
        )
        height, width = self.input_size[0] // 4, self.input_size[1] // 4
        self.hidden = nn.Sequential(nn.Linear(channels2 * height * width, hidden), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` in [0, 1] -> ``(B, hidden)`` penultimate-layer features."""
        return self.hidden(self.conv(self._resize(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` in [0, 1] -> ``(B, n_classes)`` logits."""
        return self.head(self.features(x))
