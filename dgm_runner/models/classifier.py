"""A small CNN classifier whose penultimate layer is the feature space of the
classifier-feature FID / KID / precision-recall (``dgm_runner.metrics.fid``).

Inception-v3 features are a poor fit for 28x28 grey digits (the pytorch-fid and TTUR
maintainers advise against them on MNIST), so, as is common for MNIST-family
evaluations, the features come from a classifier trained on the dataset itself
(``dgm-train experiment=classifier_mnist`` / ``classifier_fashion``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dgm_runner.config import PositiveInt, UnitInterval

#: Images are resized to this side length before the classifier (14x14 runs included).
INPUT_SIZE = 28


class FeatureCNN(nn.Module):
    """Two conv blocks and a hidden layer: ``Conv3x3(C->c1)-ReLU-MaxPool2 ->
    Conv3x3(c1->c2)-ReLU-MaxPool2 -> Dropout -> Linear(c2*7*7 -> hidden)-ReLU -> Dropout
    -> Linear(hidden -> n_classes)``.

    ``features(x)`` is the ``(B, hidden)`` post-ReLU hidden layer (the FID feature space);
    ``forward(x)`` the ``(B, n_classes)`` logits. Inputs are ``(B, C, H, W)`` images in
    [0, 1]; other sizes than 28x28 are resized bilinearly first, so a 14x14 model's
    samples are scored in the same space as the 28x28 test images.

    Args:
        image_shape: ``(C, H, W)`` of the data (set by the runner).
        n_classes: number of labels (set by the runner).
        channels1, channels2: conv widths; hidden: feature dimension; dropout: rate.

    Raises:
        ValueError: ``image_shape`` is not a 3-tuple (the classifier needs images).
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
        self.image_shape = tuple(image_shape)
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
        side = INPUT_SIZE // 4
        self.hidden = nn.Sequential(nn.Linear(channels2 * side * side, hidden), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(
                x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False
            )
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` in [0, 1] -> ``(B, hidden)`` penultimate-layer features."""
        return self.hidden(self.conv(self._resize(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` in [0, 1] -> ``(B, n_classes)`` logits."""
        return self.head(self.features(x))
