"""Batch normalisation as a flow layer (Dinh et al. 2017, Sec. 3.7).

``y = (x - mu) / sqrt(sigma^2 + eps) * exp(log_gamma) + beta`` per channel, with
log-determinant ``H W sum_c (log_gamma_c - 0.5 log(sigma_c^2 + eps))`` per example. In
training ``mu, sigma^2`` are the statistics of the batch (over batch and positions; the
log-determinant treats them as constants, as Dinh et al. do) and update running averages;
in evaluation the running averages are used, so the layer is one fixed affine map and the
density exact. :meth:`BatchNormFlow.inverse` always uses the running averages: it inverts
the evaluation-mode forward.

In a data-parallel run each process normalises its own shard in training (as ``nn``
batch norm does on the CPU) and the running averages are process 0's.
"""

from __future__ import annotations

import torch
from torch import nn

from dgm_runner.models.flows.base import FlowLayer


class BatchNormFlow(FlowLayer):
    """Batch normalisation with its log-determinant (module docstring).

    Args:
        channels: ``C``.
        momentum: weight of the batch in the running averages' update.
        eps: added to the variance (Dinh et al.'s code: 1e-4).
    """

    def __init__(self, channels: int, momentum: float = 0.05, eps: float = 1e-4) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.log_gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("running_mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("running_var", torch.ones(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, H, W)`` -> ``(y, (B,) log-determinant)``; batch statistics in training
        mode (and a running-average update), running averages in evaluation mode."""
        if self.training:
            mean = x.mean((0, 2, 3), keepdim=True)
            var = (x - mean).pow(2).mean((0, 2, 3), keepdim=True)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach(), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        log_scale = self.log_gamma - 0.5 * torch.log(var + self.eps)
        y = (x - mean) * torch.exp(log_scale) + self.beta
        h, w = x.shape[2], x.shape[3]
        return y, ((h * w) * log_scale.sum()).expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """The inverse of the evaluation-mode forward (running averages)."""
        log_scale = self.log_gamma - 0.5 * torch.log(self.running_var + self.eps)
        return (y - self.beta) * torch.exp(-log_scale) + self.running_mean
