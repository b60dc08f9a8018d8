"""Binary restricted Boltzmann machine (seed 000, question 4)."""

from __future__ import annotations

import torch
from torch import nn

from dgm_runner.config import PositiveFloat, PositiveInt
from dgm_runner.distributions import sample_bernoulli, softplus
from dgm_runner.models.checks import require_images


class RBM(nn.Module):
    """Bernoulli-Bernoulli RBM with energy ``E(v, h) = -v^T W h - b^T v - c^T h``.

    ``v`` in {0,1}^D (D = C*H*W, the flattened image), ``h`` in {0,1}^H. Shapes: any
    ``(C, H, W)`` images (colour included: the ``C H W`` values are the visible units).

    Args:
        image_shape: ``(C, H, W)`` of the data (set by the runner).
        hidden_dim: number of hidden units (seed 000: 128).
        init_std: standard deviation of the N(0, init_std^2) weight initialisation
            (Hinton 2010, "A Practical Guide to Training RBMs", sec. 8: 0.01).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        hidden_dim: PositiveInt = 128,
        init_std: PositiveFloat = 0.01,
    ) -> None:
        super().__init__()
        self.image_shape = require_images(image_shape, "model=rbm")
        self.visible_dim = int(torch.tensor(image_shape).prod())
        self.hidden_dim = hidden_dim
        self.W = nn.Parameter(torch.randn(self.visible_dim, hidden_dim) * init_std)
        self.b = nn.Parameter(torch.zeros(self.visible_dim))  # visible bias
        self.c = nn.Parameter(torch.zeros(hidden_dim))  # hidden bias

    def flatten(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` or ``(B, D)`` -> ``(B, D)``."""
        return x.reshape(x.shape[0], self.visible_dim)

    def free_energy(
        self, v: torch.Tensor, hidden_logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Free energy ``F(v) = -b^T v - sum_j softplus(c_j + v^T W_:j)`` in nats.

        ``p(v) = exp(-F(v)) / Z``, so ``-log p(v) = F(v) + log Z``.

        Args:
            v: ``(B, D)`` or ``(B, C, H, W)`` visible states (binary, or in [0, 1]).
            hidden_logits: ``(B, H)`` ``c + v^T W`` if already computed (saves one
                ``(B, D) x (D, H)`` matmul; gradients flow through it as through the
                recomputed value).

        Returns:
            ``(B,)`` free energy per example (nats).
        """
        v = self.flatten(v)
        if hidden_logits is None:
            hidden_logits = self.hidden_logits(v)
        return -(v @ self.b) - softplus(hidden_logits).sum(dim=1)

    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        """``(B, D) -> (B, H)`` logits of ``p(h_j = 1 | v) = sigmoid(c_j + v^T W_:j)``."""
        return torch.addmm(self.c, v, self.W)  # = v @ W + c in one fused op

    def visible_logits(self, h: torch.Tensor) -> torch.Tensor:
        """``(B, H) -> (B, D)`` logits of ``p(v_i = 1 | h) = sigmoid(b_i + W_i: h)``."""
        return torch.addmm(self.b, h, self.W.t())

    def gibbs_step(
        self,
        v: torch.Tensor,
        generator: torch.Generator | None = None,
        hidden_logits: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One block-Gibbs sweep ``v -> h ~ p(h|v) -> v' ~ p(v|h)``.

        Bernoulli draws are ``1[u < p]`` (:func:`dgm_runner.distributions.sample_bernoulli`).

        Args:
            v: ``(B, D)`` binary visible states.
            generator: RNG for the Bernoulli draws (global RNG if None).
            hidden_logits: ``(B, H)`` ``c + v^T W`` if already computed (skips a matmul).

        Returns:
            ``(v', p(v'=1|h))``, both ``(B, D)``.
        """
        if hidden_logits is None:
            hidden_logits = self.hidden_logits(v)
        h = sample_bernoulli(torch.sigmoid(hidden_logits), generator)
        probs = torch.sigmoid(self.visible_logits(h))
        return sample_bernoulli(probs, generator), probs

    def gibbs_chain(
        self,
        v: torch.Tensor,
        steps: int,
        generator: torch.Generator | None = None,
        hidden_logits: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``steps`` block-Gibbs sweeps from ``v`` (:meth:`gibbs_step` repeated; 2 matmuls
        per sweep, or 2 * steps - 1 when ``hidden_logits`` of the start is given).

        Args:
            v: ``(B, D)`` binary start states; steps: number of sweeps (>= 1).
            generator: RNG for the Bernoulli draws (global RNG if None).
            hidden_logits: ``(B, H)`` ``c + v^T W`` of the start, if already computed.

        Returns:
            ``(v_steps, p(v_steps = 1 | h_{steps-1}))``, both ``(B, D)``.
        """
        probs = v
        for _ in range(steps):
            v, probs = self.gibbs_step(v, generator, hidden_logits)
            hidden_logits = None
        return v, probs
