"""The interface every flow layer follows, their composition, and the standard normal base
density.

A flow layer is a bijection ``f`` of ``(B, C, H, W)`` tensors (or ``(B, D)``) with a
tractable Jacobian determinant: ``forward(x)`` returns ``(y, log_det)`` with ``y = f(x)`` and
``log_det = log |det df/dx|`` in nats, one value per example ``(B,)``; ``inverse(y)``
returns ``f^{-1}(y)``. A composition ``f_K o ... o f_1`` has the summed log-determinant, so
the change of variables (Dinh et al. 2017, Eq. 3) gives

    log p_X(x) = log p_Z(f(x)) + sum_k log |det df_k / dh_{k-1}|.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LOG_2PI = math.log(2.0 * math.pi)


class FlowLayer(nn.Module):
    """Base class of the flow layers (module docstring). Subclasses implement
    :meth:`forward` and :meth:`inverse`; shapes are kept unless a layer says otherwise
    (:class:`~dgm_runner.models.flows.squeeze.Squeeze`)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, ...)`` -> ``(f(x), (B,) log |det df/dx|)`` in nats."""
        raise NotImplementedError

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` -> ``f^{-1}(y)``."""
        raise NotImplementedError


class FlowSequence(FlowLayer):
    """The composition ``f_K o ... o f_1`` of ``layers`` (applied in order): its
    log-determinant is the sum of theirs; the inverse applies their inverses in reverse.

    Args:
        layers: the flow layers, first applied first.
    """

    def __init__(self, layers: list[FlowLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, ...)`` -> ``(f_K(...f_1(x)), (B,) summed log-determinants)``."""
        log_det = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``f_1^{-1}(...f_K^{-1}(y))``."""
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``(B, ...)`` -> ``(B,)`` log-density of ``N(0, I)`` in nats, summed over every
    dimension but the first: ``-0.5 (|z|^2 + D log 2 pi)``."""
    flat = z.flatten(1)
    return -0.5 * (flat.pow(2).sum(1) + flat.shape[1] * LOG_2PI)
