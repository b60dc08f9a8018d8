"""What a flow applies to the data before its first layer, with the log-determinant counted
in the likelihood: the logit transform of RealNVP, or Glow's centring.

**Logit** (Dinh et al. 2017, Sec. 4.1): ``y = logit(alpha + (1 - 2 alpha) x)`` for
dequantized pixels ``x`` in [0, 1], which maps the bounded data to the real line and keeps
it away from the boundary. ``alpha = 0.05`` as the authors' released code
(tensorflow/models, research/real_nvp, ``data_constraint = 0.9``:
``logit((1 + 0.9 (2 x - 1)) / 2) = logit(0.05 + 0.9 x)``; the paper gives ``alpha = .05``).
Per dimension ``dy/dx = (1 - 2 alpha) / (p (1 - p))`` with ``p = alpha + (1 - 2 alpha) x``,
so

    log |det dy/dx| = sum_d [log(1 - 2 alpha) - log p_d - log(1 - p_d)].

**Center** (Kingma & Dhariwal 2018, their code: ``x - 0.5``): a translation,
log-determinant 0.

Either way the model's ``log_prob`` is the density of ``x`` in [0, 1]^D: the offset ``ln 256``
that reports it for 8-bit data is added by the caller
(:func:`dgm_runner.metrics.units.nats_to_bits_per_dim`).
"""

from __future__ import annotations

import math

import torch

from dgm_runner.models.flows.base import FlowLayer


class LogitTransform(FlowLayer):
    """``y = logit(alpha + (1 - 2 alpha) x)`` (module docstring).

    Args:
        alpha: in (0, 0.5).

    Raises:
        ValueError: ``alpha`` outside (0, 0.5).
    """

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__()
        if not 0.0 < alpha < 0.5:
            raise ValueError(f"alpha={alpha} must lie in (0, 0.5)")
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, ...)`` in [0, 1] -> ``(y, (B,) log-determinant)``."""
        p = self.alpha + (1.0 - 2.0 * self.alpha) * x
        y = torch.log(p) - torch.log1p(-p)
        log_det = math.log(1.0 - 2.0 * self.alpha) - torch.log(p) - torch.log1p(-p)
        return y, log_det.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``(sigmoid(y) - alpha) / (1 - 2 alpha)``."""
        return (torch.sigmoid(y) - self.alpha) / (1.0 - 2.0 * self.alpha)


class CenterTransform(FlowLayer):
    """``y = x - 0.5`` (module docstring); log-determinant 0."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, ...)`` -> ``(x - 0.5, (B,) zeros)``."""
        return x - 0.5, x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``y + 0.5``."""
        return y + 0.5


def preprocessing(name: str, alpha: float) -> FlowLayer:
    """``logit`` -> :class:`LogitTransform` ``(alpha)``; ``center`` -> :class:`CenterTransform`.

    Raises:
        ValueError: another name.
    """
    if name == "logit":
        return LogitTransform(alpha)
    if name == "center":
        return CenterTransform()
    raise ValueError(f"preprocessing={name!r}: allowed values are 'logit', 'center'")
