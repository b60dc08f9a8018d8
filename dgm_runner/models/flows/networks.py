"""The scale-and-translation networks of the affine coupling layers: small convolutional
ResNets (Dinh et al. 2017, Sec. 3.4 and 4.1: ``s`` and ``t`` are "deep convolutional residual
networks"; Kingma & Dhariwal 2018, Sec. 3.3: a 3x3, 1x1, zero-initialised 3x3 convolutional
network)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from dgm_runner.models.flows.actnorm import NetworkActNorm

Norm = Literal["batchnorm", "actnorm", "none"]
NORMS: tuple[str, ...] = ("batchnorm", "actnorm", "none")


def norm_layer(norm: str, channels: int) -> nn.Module:
    """The normalisation of a network's hidden layers: ``batchnorm`` (``nn.BatchNorm2d``, as
    RealNVP), ``actnorm`` (data-initialised, as Glow) or ``none``.

    Raises:
        ValueError: another name.
    """
    if norm == "batchnorm":
        return nn.BatchNorm2d(channels)
    if norm == "actnorm":
        return NetworkActNorm(channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm={norm!r}: allowed values are {', '.join(NORMS)}")


class ResidualBlock(nn.Module):
    """Pre-activation residual block ``h + conv3x3(relu(norm(conv3x3(relu(norm(h))))))``.

    Args:
        channels: feature maps.
        norm: see :func:`norm_layer`.
    """

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            norm_layer(norm, channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            norm_layer(norm, channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``(B, channels, H, W)`` -> same shape."""
        return h + self.body(h)


class CouplingNetwork(nn.Module):
    """``conv3x3 -> norm -> ReLU -> n_blocks x ResidualBlock -> conv1x1 -> norm -> ReLU ->
    conv3x3``, the last convolution zero-initialised so that every coupling layer starts as
    the identity (Kingma & Dhariwal 2018, Sec. 3.3). ``n_blocks = 0`` is Glow's network
    (3x3, 1x1, zero 3x3).

    Args:
        in_channels: channels of the conditioning input.
        out_channels: channels of the output (``2 x`` the transformed channels: log-scale
            and translation).
        channels: hidden feature maps.
        n_blocks: residual blocks.
        norm: see :func:`norm_layer`.
    """

    def __init__(
        self, in_channels: int, out_channels: int, channels: int, n_blocks: int, norm: str
    ) -> None:
        super().__init__()
        last = nn.Conv2d(channels, out_channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1),
            norm_layer(norm, channels),
            nn.ReLU(),
            *[ResidualBlock(channels, norm) for _ in range(n_blocks)],
            nn.Conv2d(channels, channels, 1),
            norm_layer(norm, channels),
            nn.ReLU(),
            last,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` -> ``(B, out_channels, H, W)``."""
        return self.net(x)
