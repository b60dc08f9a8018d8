"""Contrastive divergence (CD-k) and persistent CD (PCD) for RBMs."""

from __future__ import annotations

from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from dgm_runner.config import PositiveInt
from dgm_runner.distributions import sample_bernoulli, softplus
from dgm_runner.models.checks import require
from dgm_runner.models.rbm import RBM
from dgm_runner.objectives.base import Batch, Objective


class _FreeEnergyGap(torch.autograd.Function):
    """``mean_i F(v0_i) - mean_j F(vk_j)`` of an RBM (nats) with the gradient written out.

    ``F(v) = -b^T v - sum softplus(c + v^T W)``, so the gradient of the gap is
    ``dW = -v0^T s(pre0) / B0 + vk^T s(prek) / Bk``, ``db = -mean v0 + mean vk``,
    ``dc = -mean s(pre0) + mean s(prek)`` (``s`` the sigmoid): two matmuls and a few
    reductions, where autograd through two free energies would record about twenty
    nodes. Inputs ``pre0 = c + v0 W`` and ``prek = c + vk W`` come without gradient.
    """

    @staticmethod
    def forward(ctx, W, b, c, v0, vk, pre0, prek):  # noqa: D102 (see the class docstring)
        f0 = -(v0 @ b) - softplus(pre0).sum(dim=1)
        fk = -(vk @ b) - softplus(prek).sum(dim=1)
        ctx.save_for_backward(v0, vk, pre0, prek)
        return f0.mean() - fk.mean()

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return (*free_energy_gap_grad(*ctx.saved_tensors, grad), None, None, None, None)


def free_energy_gap_grad(
    v0: torch.Tensor,
    vk: torch.Tensor,
    pre0: torch.Tensor,
    prek: torch.Tensor,
    scale: torch.Tensor | float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``scale`` times the gradient of ``mean_i F(v0_i) - mean_j F(vk_j)`` in ``(W, b, c)``
    (see :class:`_FreeEnergyGap`): minus the CD-k estimate of the log-likelihood gradient.

    Args:
        v0: ``(B0, D)`` data; vk: ``(Bk, D)`` chain ends; pre0, prek: their ``(., H)``
            hidden logits ``c + v W``.

    Returns:
        ``(dW (D, H), db (D,), dc (H,))``.
    """
    s0 = torch.sigmoid(pre0).mul_(-scale / v0.shape[0])
    sk = torch.sigmoid(prek).mul_(scale / vk.shape[0])
    grad_w = (v0.t() @ s0).addmm_(vk.t(), sk)  # in place: no copy of the (D, H) product
    grad_b = vk.mean(0).sub_(v0.mean(0)).mul_(scale)
    grad_c = s0.sum(0).add_(sk.sum(0))
    return grad_w, grad_b, grad_c


class ContrastiveDivergence(Objective):
    """CD-k (Hinton 2002) and, with ``persistent=True``, PCD (Tieleman 2008).

    The log-likelihood gradient of an RBM is
    ``-d/dθ F(v_data) + E_model[d/dθ F(v)]``. CD-k replaces the model expectation by
    ``k`` block-Gibbs sweeps started at the data (PCD: at persistent chains carried
    across updates). We minimise the surrogate
    ``mean_batch F(v_0) - mean_chains F(v_k)`` with ``v_k`` detached, whose gradient is
    exactly the negative CD-k estimate (:meth:`loss`).

    The loop's updates (:meth:`steps`) skip autograd: they write the closed-form gradient
    (:func:`free_energy_gap_grad`) into ``.grad`` and yield no loss, so an update costs the
    chain, one hidden-logit matmul and the two gradient matmuls, nothing else.
    :meth:`loss` is the same surrogate through autograd (``trainer.compile``, tests).

    Logged terms: ``loss`` (the free-energy gap, nats), ``free_energy`` (mean data free
    energy, nats) and ``recon_error`` (mean squared error per pixel between v_0 and the
    mean-field reconstruction p(v | p(h|v_0)), a standard CD health check; Hinton 2010,
    sec. 5). They cost work the update does not need (two softplus passes, a matmul), so
    the loop's updates compute them on every ``log_every``-th update only: the epoch's
    ``train/*`` values are means over those updates (an unbiased subsample of the epoch;
    the loop averages each term over the steps that logged it, and a non-finite value
    still stops the run within ``log_every`` updates). :meth:`loss` always computes them.

    Args:
        k: number of Gibbs sweeps (seed 000: 1, 5, 25).
        persistent: PCD instead of CD.
        n_chains: number of persistent chains (default: the first batch size).
        log_every: compute the logged terms on every ``log_every``-th update (1: all; at
            the default 10 their cost, about 40% of a CD-1 update's, is paid once in ten).
    """

    updates_through_loss = False  # CD-k writes its closed-form gradient itself

    monitor = "free_energy"

    def __init__(
        self,
        k: PositiveInt = 1,
        persistent: bool = False,
        n_chains: Optional[PositiveInt] = None,
        log_every: PositiveInt = 10,
    ) -> None:
        self.k = k
        self.persistent = persistent
        self.data_parallel = not persistent  # PCD's chains persist per example: one process
        self.serial_reason = "PCD's persistent chains follow examples across batches"
        self.n_chains = n_chains
        self.log_every = log_every
        self.chains: torch.Tensor | None = None

    def check_model(self, model: nn.Module) -> None:
        require(model, RBM, f"objective {'pcd' if self.persistent else 'cd'!r}")

    def steps(
        self, model: RBM, batch: Batch, step: int
    ) -> Iterator[tuple[str, None, dict[str, torch.Tensor]]]:
        """One CD-k update: the gradient goes straight into ``W.grad``, ``b.grad``,
        ``c.grad`` and the loss yielded is None (the loop then skips ``backward``); the
        logged terms only on every ``log_every``-th update (``{}`` otherwise)."""
        with torch.no_grad():
            v0, vk, pre0, pre_k = self._negative_phase(model, batch)
            grads = free_energy_gap_grad(v0, vk, pre0, pre_k)
            for param, grad in zip((model.W, model.b, model.c), grads):
                param.grad = grad.to(param.dtype)  # bf16 under trainer.precision=bf16
            terms = self._terms(model, v0, vk, pre0, pre_k) if step % self.log_every == 0 else {}
        yield "model", None, terms

    def _negative_phase(self, model: RBM, batch: Batch) -> tuple[torch.Tensor, ...]:
        """``(v0, vk, c + v0 W, c + vk W)`` without gradient: the data, the end of the
        k-step chain (from the data, or from the persistent chains for PCD) and their
        hidden logits. Cost: 2k + 1 matmuls (2k with the data's logits reused)."""
        v0 = model.flatten(batch.x)
        with torch.no_grad():
            pre0 = model.hidden_logits(v0)
            if self.persistent:
                if self.chains is None:
                    n = self.n_chains or v0.shape[0]
                    self.chains = sample_bernoulli(
                        torch.full((n, v0.shape[1]), 0.5, device=v0.device)
                    )
                v, start = self.chains, None
            else:
                v, start = v0, pre0
            v, _ = model.gibbs_chain(v, self.k, hidden_logits=start)
            if self.persistent:
                self.chains = v.to(model.W.dtype)  # binary: exact; float32 whatever the autocast
            return v0, v, pre0, model.hidden_logits(v)

    @staticmethod
    def _terms(
        model: RBM, v0: torch.Tensor, vk: torch.Tensor, pre0: torch.Tensor, pre_k: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The logged terms (scalars, nats / per-pixel MSE) from the negative phase."""
        f_data = model.free_energy(v0, hidden_logits=pre0).mean()
        mean_field = torch.sigmoid(model.visible_logits(torch.sigmoid(pre0)))
        return {
            "loss": f_data - model.free_energy(vk, hidden_logits=pre_k).mean(),
            "free_energy": f_data,
            "recon_error": F.mse_loss(mean_field, v0),
        }

    def loss(self, model: RBM, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The CD-k surrogate through autograd (a scalar whose gradient is minus the CD-k
        estimate; the same update as :meth:`steps`) and the logged terms.

        Cost: 2k + 3 matmuls of (B, D) x (D, H) size (+1 for ``recon_error``): ``c + v0^T W``
        once (for F(v0) and the first sweep), 2k - 1 in the chain, ``c + v_k^T W`` for
        F(v_k) and two for the weight gradient.
        """
        v0, v, pre0, pre_k = self._negative_phase(model, batch)
        loss = _FreeEnergyGap.apply(model.W, model.b, model.c, v0, v, pre0, pre_k)
        with torch.no_grad():
            terms = self._terms(model, v0, v, pre0, pre_k)
        return loss, {**terms, "loss": loss.detach()}

    def evaluate(
        self,
        model: RBM,
        batch: Batch,
        generator: torch.Generator | None = None,
        final: bool = False,
    ) -> dict[str, torch.Tensor]:
        """``free_energy``: ``(B,)`` free energy of each test image (nats; the seed's
        auto-graded metric); ``recon_error``: per-pixel MSE of a mean-field reconstruction."""
        v0 = model.flatten(batch.x)
        pre = model.hidden_logits(v0)
        recon = torch.sigmoid(model.visible_logits(torch.sigmoid(pre)))
        return {
            "free_energy": model.free_energy(v0, hidden_logits=pre),
            "recon_error": (recon - v0).pow(2).mean(dim=1),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"chains": self.chains} if self.chains is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.chains = state.get("chains")
