"""The squeeze operation of the multi-scale architecture (Dinh et al. 2017, Sec. 3.6, Fig. 3):
each ``2 x 2`` block of pixels becomes 4 channels of one pixel."""

from __future__ import annotations

import torch

from dgm_runner.models.flows.base import FlowLayer


class Squeeze(FlowLayer):
    """``(B, C, H, W) -> (B, 4C, H/2, W/2)``: channel ``4c + 2i + j`` of output pixel
    ``(r, s)`` is channel ``c`` of input pixel ``(2r + i, 2s + j)``. A permutation of the
    values: log-determinant 0.

    Raises:
        ValueError: (forward) ``H`` or ``W`` is odd.
    """

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, H, W)`` -> ``((B, 4C, H/2, W/2), (B,) zeros)``."""
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"squeeze needs an even height and width, got {h}x{w}")
        y = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return y.reshape(b, 4 * c, h // 2, w // 2), x.new_zeros(b)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, 4C, H, W)`` -> ``(B, C, 2H, 2W)``."""
        b, c4, h, w = y.shape
        x = y.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c4 // 4, 2 * h, 2 * w)
