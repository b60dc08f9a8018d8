"""The invertible 1x1 convolution of Glow with its LU parameterisation (Kingma & Dhariwal
2018, Sec. 3.2).

A ``C x C`` matrix ``W`` applied at every position, ``y_{:, i, j} = W x_{:, i, j}``, so
``log |det dy/dx| = H W log |det W|`` (their Eq. 9). Parameterised as

    W = P L (U + diag(sign(s) exp(log|s|)))                               (their Eq. 10)

with ``P`` a fixed permutation, ``L`` lower triangular with ones on the diagonal, ``U``
strictly upper triangular and ``s`` a vector: ``log |det W| = sum log|s|``, ``O(C)``
instead of ``O(C^3)``. Initialised, as theirs, from the LU decomposition of a random
rotation matrix (``log |det W| = 0``); ``P`` and ``sign(s)`` stay fixed (buffers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dgm_runner.models.flows.base import FlowLayer


class InvertibleConv1x1(FlowLayer):
    """Invertible 1x1 convolution, LU-parameterised (module docstring).

    Args:
        channels: ``C``.

    The random rotation is drawn from the global torch RNG (seeded by the run).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        rotation = torch.linalg.qr(torch.randn(channels, channels))[0]
        p, lower, upper = torch.linalg.lu(rotation)
        s = torch.diagonal(upper)
        self.register_buffer("permutation", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.register_buffer("eye", torch.eye(channels), persistent=False)
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(torch.abs(s)))

    def weight(self) -> torch.Tensor:
        """``(C, C)`` ``W = P L (U + diag(sign(s) exp(log|s|)))``."""
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.permutation @ lower @ upper

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, H, W)`` -> ``(W x per position, (B,) H W sum log|s|)``."""
        c, h, w = x.shape[1:]
        y = F.conv2d(x, self.weight().view(c, c, 1, 1))
        return y, ((h * w) * self.log_s.sum()).expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``W^{-1} y`` per position."""
        c = y.shape[1]
        return F.conv2d(y, torch.linalg.inv(self.weight()).view(c, c, 1, 1))
