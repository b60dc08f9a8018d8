"""Contrastive divergence (CD-k) and persistent CD (PCD) for RBMs."""

from __future__ import annotations

from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from dgm_runner.config import PositiveInt
from dgm_runner.distributions import sample_bernoulli
from dgm_runner.models.rbm import RBM
from dgm_runner.models.checks import require
from dgm_runner.objectives.base import Batch, Objective


def _softplus(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + e^x)`` as ``max(x, 0) + log(1 + e^-|x|)``: 2.5x faster than ``F.softplus``
    on CPU (whose ``log1p`` is not vectorised), absolute error < 1e-6."""
    return torch.exp(-x.abs()).add_(1.0).log_().add_(x.clamp(min=0.0))


class _FreeEnergyGap(torch.autograd.Function):
    """``mean_i F(v0_i) - mean_j F(vk_j)`` of an RBM (nats) with the gradient written out.

    ``F(v) = -b^T v - sum softplus(c + v^T W)``, so the gradient of the gap is
    ``dW = -v0^T s(pre0) / B0 + vk^T s(prek) / Bk``, ``db = -mean v0 + mean vk``,
    ``dc = -mean s(pre0) + mean s(prek)`` (``s`` the sigmoid): two matmuls and a few
    reductions, where autograd through two free energies would record about twenty
    nodes. Inputs ``pre0 = c + v0 W`` and ``prek = c + vk W`` come without gradient; the
    second output (mean ``F(v0)``, for logging) is not differentiable.
    """

    @staticmethod
    def forward(ctx, W, b, c, v0, vk, pre0, prek):  # noqa: D102 (see the class docstring)
        f0 = -(v0 @ b) - _softplus(pre0).sum(dim=1)
        fk = -(vk @ b) - _softplus(prek).sum(dim=1)
        f_data = f0.mean()
        ctx.save_for_backward(v0, vk, pre0, prek)
        ctx.mark_non_differentiable(f_data)
        return f_data - fk.mean(), f_data

    @staticmethod
    def backward(ctx, grad, _unused):  # noqa: D102
        v0, vk, pre0, prek = ctx.saved_tensors
        s0 = torch.sigmoid(pre0).mul_(-grad / v0.shape[0])
        sk = torch.sigmoid(prek).mul_(grad / vk.shape[0])
        grad_w = (v0.t() @ s0).addmm_(vk.t(), sk)  # in place: no copy of the (D, H) product
        grad_b = vk.mean(0).sub_(v0.mean(0)).mul_(grad)
        grad_c = s0.sum(0).add_(sk.sum(0))
        return grad_w, grad_b, grad_c, None, None, None, None


class ContrastiveDivergence(Objective):
    """CD-k (Hinton 2002) and, with ``persistent=True``, PCD (Tieleman 2008).

    The log-likelihood gradient of an RBM is
    ``-d/dθ F(v_data) + E_model[d/dθ F(v)]``. CD-k replaces the model expectation by
    ``k`` block-Gibbs sweeps started at the data (PCD: at persistent chains carried
    across updates). We minimise the surrogate
    ``mean_batch F(v_0) - mean_chains F(v_k)`` with ``v_k`` detached, whose gradient is
    exactly the negative CD-k estimate, so the loop stays a plain ``loss.backward()``.

    Logged terms: ``loss`` (the free-energy gap, nats), ``free_energy`` (mean data free
    energy, nats) and ``recon_error`` (mean squared error per pixel between v_0 and the
    mean-field reconstruction p(v | p(h|v_0)), a standard CD health check; Hinton 2010,
    sec. 5). The reconstruction costs a matmul the update does not need, so the loop's
    updates log it every ``recon_every`` steps only (the loop averages each term over the
    steps that logged it); :meth:`loss` called directly always computes it.

    Args:
        k: number of Gibbs sweeps (seed 000: 1, 5, 25).
        persistent: PCD instead of CD.
        n_chains: number of persistent chains (default: the first batch size).
        recon_every: log ``recon_error`` on every ``recon_every``-th update (1: all; the
            default 10 makes a CD-1 step about 10% cheaper, ``scripts/bench.py``).
    """

    monitor = "free_energy"

    def __init__(
        self,
        k: PositiveInt = 1,
        persistent: bool = False,
        n_chains: Optional[PositiveInt] = None,
        recon_every: PositiveInt = 10,
    ) -> None:
        self.k = k
        self.persistent = persistent
        self.n_chains = n_chains
        self.recon_every = recon_every
        self.chains: torch.Tensor | None = None

    def check_model(self, model: nn.Module) -> None:
        require(model, RBM, f"objective {'pcd' if self.persistent else 'cd'!r}")

    def steps(self, model: RBM, batch: Batch, step: int) -> Iterator[tuple[str, torch.Tensor, dict[str, torch.Tensor]]]:
        """One update of :meth:`loss`; ``recon_error`` on every ``recon_every``-th step."""
        loss, terms = self.loss(model, batch, recon=step % self.recon_every == 0)
        yield "model", loss, terms

    def loss(
        self, model: RBM, batch: Batch, recon: bool = True
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The CD-k surrogate (a scalar whose gradient is minus the CD-k estimate) and the
        logged terms (``recon_error`` only if ``recon``).

        Cost: 2k + 3 matmuls of (B, D) x (D, H) size (+1 with ``recon``): ``c + v0^T W``
        once (for F(v0) and the first sweep), 2k - 1 in the chain, ``c + v_k^T W`` for
        F(v_k) and two for the weight gradient.
        """
        v0 = model.flatten(batch.x)
        with torch.no_grad():
            pre0 = model.hidden_logits(v0)
            if self.persistent:
                if self.chains is None:
                    n = self.n_chains or v0.shape[0]
                    self.chains = sample_bernoulli(torch.full((n, v0.shape[1]), 0.5, device=v0.device))
                v, start = self.chains, None
            else:
                v, start = v0, pre0
            v, _ = model.gibbs_chain(v, self.k, hidden_logits=start)
            if self.persistent:
                self.chains = v
            pre_k = model.hidden_logits(v)
        loss, f_data = _FreeEnergyGap.apply(model.W, model.b, model.c, v0, v, pre0, pre_k)
        terms = {"loss": loss.detach(), "free_energy": f_data}
        if recon:
            with torch.no_grad():
                mean_field = torch.sigmoid(model.visible_logits(torch.sigmoid(pre0)))
                terms["recon_error"] = F.mse_loss(mean_field, v0)
        return loss, terms

    def evaluate(
        self, model: RBM, batch: Batch, generator: torch.Generator | None = None, final: bool = False
    ) -> dict[str, torch.Tensor]:
        """``free_energy``: ``(B,)`` free energy of each test image (nats; the seed's
        auto-graded metric); ``recon_error``: per-pixel MSE of a mean-field reconstruction."""
        v0 = model.flatten(batch.x)
        pre = model.hidden_logits(v0)
        recon = torch.sigmoid(model.visible_logits(torch.sigmoid(pre)))
        return {"free_energy": model.free_energy(v0, hidden_logits=pre), "recon_error": (recon - v0).pow(2).mean(dim=1)}

    def state_dict(self) -> dict[str, Any]:
        return {"chains": self.chains} if self.chains is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.chains = state.get("chains")
