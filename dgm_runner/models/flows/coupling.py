"""Affine coupling layers with checkerboard and channel-wise masks (Dinh et al. 2017,
Sec. 3.3-3.5).

With a binary mask ``b`` (1: the conditioning half),

    y = b * x + (1 - b) * (x * exp(s(b * x)) + t(b * x))               (their Eq. 9)

whose Jacobian is triangular: ``log |det dy/dx| = sum_j ((1 - b) * s(b * x))_j``. The
inverse is ``x = b * y + (1 - b) * (y - t(b * y)) * exp(-s(b * y))`` (``b * y = b * x``).

* ``mask="checkerboard"``: ``b`` is 1 where ``(row + column + parity)`` is even; the network
  sees ``b * x`` (all channels) and its outputs are masked by ``1 - b``.
* ``mask="channel"``: ``b`` selects half of the channels (the first ``C // 2`` when
  ``parity = 0``, the others when ``parity = 1``); the network sees those channels and
  outputs ``s``, ``t`` for the rest.

The log-scale is bounded: ``s = scale * tanh(raw)``, ``scale`` a learned per-channel factor
(started at 1), as in the authors' code (``rescaling_scale * tanh``), so that an early large
``raw`` cannot make ``exp(s)`` overflow.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from dgm_runner.models.flows.base import FlowLayer
from dgm_runner.models.flows.networks import CouplingNetwork

Mask = Literal["checkerboard", "channel"]


def checkerboard_mask(height: int, width: int, parity: int, like: torch.Tensor) -> torch.Tensor:
    """``(1, 1, H, W)`` float mask, 1 where ``(row + column + parity)`` is even, with the
    dtype and device of ``like``."""
    rows = torch.arange(height, device=like.device).view(-1, 1)
    cols = torch.arange(width, device=like.device).view(1, -1)
    return ((rows + cols + parity) % 2 == 0).to(like.dtype).view(1, 1, height, width)


class AffineCoupling(FlowLayer):
    """Affine coupling layer (module docstring) on ``(B, C, H, W)``.

    Args:
        channels: ``C``.
        mask: ``checkerboard`` or ``channel``.
        parity: 0 or 1: which half conditions (alternated between consecutive layers).
        hidden: feature maps of the scale-and-translation network
            (:class:`~dgm_runner.models.flows.networks.CouplingNetwork`).
        n_blocks: its residual blocks.
        norm: its normalisation (``batchnorm``, ``actnorm``, ``none``).

    Raises:
        ValueError: ``mask="channel"`` with fewer than 2 channels, or an unknown mask.
    """

    def __init__(
        self,
        channels: int,
        mask: Mask,
        parity: int,
        hidden: int,
        n_blocks: int,
        norm: str,
    ) -> None:
        super().__init__()
        if mask not in ("checkerboard", "channel"):
            raise ValueError(f"mask={mask!r}: allowed values are 'checkerboard', 'channel'")
        self.mask, self.parity = mask, parity % 2
        if mask == "channel":
            if channels < 2:
                raise ValueError(f"a channel-wise coupling needs >= 2 channels, got {channels}")
            first = channels // 2
            cond, changed = (
                (first, channels - first)
                if self.parity == 0
                else (
                    channels - first,
                    first,
                )
            )
            self.split = first
        else:
            cond, changed = channels, channels
        self.net = CouplingNetwork(cond, 2 * changed, hidden, n_blocks, norm)
        self.scale = nn.Parameter(torch.ones(1, changed, 1, 1))

    def _log_scale_shift(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s, t)`` from the conditioning input, ``s = scale * tanh(raw)``."""
        raw, shift = self.net(cond).chunk(2, dim=1)
        return self.scale * torch.tanh(raw), shift

    def _halves(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Channel mask: ``(conditioning, transformed)`` channels of ``x``."""
        a, b = x[:, : self.split], x[:, self.split :]
        return (a, b) if self.parity == 0 else (b, a)

    def _join(self, cond: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`_halves`."""
        parts = (cond, changed) if self.parity == 0 else (changed, cond)
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, H, W)`` -> ``(y, (B,) sum of the log-scales of the transformed part)``."""
        if self.mask == "channel":
            cond, changed = self._halves(x)
            s, t = self._log_scale_shift(cond)
            y = self._join(cond, changed * torch.exp(s) + t)
            return y, s.flatten(1).sum(1)
        b = checkerboard_mask(x.shape[2], x.shape[3], self.parity, x)
        s, t = self._log_scale_shift(x * b)
        s, t = s * (1 - b), t * (1 - b)
        return x * torch.exp(s) + t, s.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``x``."""
        if self.mask == "channel":
            cond, changed = self._halves(y)
            s, t = self._log_scale_shift(cond)
            return self._join(cond, (changed - t) * torch.exp(-s))
        b = checkerboard_mask(y.shape[2], y.shape[3], self.parity, y)
        s, t = self._log_scale_shift(y * b)
        s, t = s * (1 - b), t * (1 - b)
        return (y - t) * torch.exp(-s)
