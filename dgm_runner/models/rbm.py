"""Binary restricted Boltzmann machine (seed 000, question 4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dgm_runner.config import PositiveFloat, PositiveInt


class RBM(nn.Module):
    """Bernoulli-Bernoulli RBM with energy ``E(v, h) = -v^T W h - b^T v - c^T h``.

    ``v`` in {0,1}^D (D = C*H*W, the flattened image), ``h`` in {0,1}^H.

    Args:
        image_shape: ``(C, H, W)`` of the data (set by the runner).
        hidden_dim: number of hidden units (seed 000: 128).
        init_std: standard deviation of the N(0, init_std^2) weight initialisation
            (Hinton 2010, "A Practical Guide to Training RBMs", sec. 8: 0.01).
        n_classes: unused (accepted so every model has the same build signature).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        hidden_dim: PositiveInt = 128,
        init_std: PositiveFloat = 0.01,
        n_classes: int = 10,
    ) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.visible_dim = int(torch.tensor(image_shape).prod())
        self.hidden_dim = hidden_dim
        self.W = nn.Parameter(torch.randn(self.visible_dim, hidden_dim) * init_std)
        self.b = nn.Parameter(torch.zeros(self.visible_dim))  # visible bias
        self.c = nn.Parameter(torch.zeros(hidden_dim))  # hidden bias

    def flatten(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` or ``(B, D)`` -> ``(B, D)``."""
        return x.reshape(x.shape[0], self.visible_dim)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """Free energy ``F(v) = -b^T v - sum_j softplus(c_j + v^T W_:j)`` in nats.

        ``p(v) = exp(-F(v)) / Z``, so ``-log p(v) = F(v) + log Z``.

        Args:
            v: ``(B, D)`` or ``(B, C, H, W)`` visible states (binary, or in [0, 1]).

        Returns:
            ``(B,)`` free energy per example (nats).
        """
        v = self.flatten(v)
        return -(v @ self.b) - F.softplus(v @ self.W + self.c).sum(dim=1)

    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        """``(B, D) -> (B, H)`` logits of ``p(h_j = 1 | v) = sigmoid(c_j + v^T W_:j)``."""
        return v @ self.W + self.c

    def visible_logits(self, h: torch.Tensor) -> torch.Tensor:
        """``(B, H) -> (B, D)`` logits of ``p(v_i = 1 | h) = sigmoid(b_i + W_i: h)``."""
        return h @ self.W.t() + self.b

    @staticmethod
    def _bernoulli(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        probs = torch.sigmoid(logits)
        return torch.bernoulli(probs, generator=generator)

    def gibbs_step(
        self, v: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One block-Gibbs sweep ``v -> h ~ p(h|v) -> v' ~ p(v|h)``.

        Args:
            v: ``(B, D)`` binary visible states.
            generator: RNG for the Bernoulli draws (global RNG if None).

        Returns:
            ``(v', p(v'=1|h))``, both ``(B, D)``.
        """
        h = self._bernoulli(self.hidden_logits(v), generator)
        logits = self.visible_logits(h)
        return self._bernoulli(logits, generator), torch.sigmoid(logits)
