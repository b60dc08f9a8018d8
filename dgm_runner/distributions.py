"""Closed-form densities and divergences shared by the objectives, and their draws.

All functions work on the last dimension and sum over it (one value per example).

**Draws of a data-parallel run** (:mod:`dgm_runner.distributed`): inside
:func:`shard_rows`, a draw of per-example noise for the ``local`` rows of this process's
shard (:func:`batch_draw`, :func:`sample_normal_diag`, :func:`sample_bernoulli`) is made for
the whole global batch and cut to this process's rows, so every process consumes the global
RNG as a single process would and the run follows the single-process one. Outside it
(single-process training, evaluation, sampling) a draw is exactly the plain draw.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

#: ``(start, local, total)`` of the shard being trained, or None (see the module docstring).
_SHARD: contextvars.ContextVar[tuple[int, int, int] | None] = contextvars.ContextVar(
    "dgm_shard", default=None
)


@contextlib.contextmanager
def shard_rows(start: int, local: int, total: int) -> Iterator[None]:
    """Make per-example draws of ``local`` rows come from rows ``[start, start + local)``
    of a draw for ``total`` rows (a process's shard of a global batch); no-op when
    ``local == total``."""
    token = _SHARD.set(None if local == total else (start, local, total))
    try:
        yield
    finally:
        _SHARD.reset(token)


def batch_draw(n: int, draw: Callable[[int], torch.Tensor]) -> torch.Tensor:
    """``draw(n)``: ``n`` rows of per-example noise (``draw(m)`` returns ``(m, ...)``).

    Inside :func:`shard_rows` with ``n`` equal to the shard's ``local`` size, ``draw(total)``
    is made and this process's rows returned: the same rows a single process training on
    the whole global batch gets. Any other ``n`` is drawn as is.
    """
    shard = _SHARD.get()
    if shard is None or n != shard[1]:
        return draw(n)
    start, local, total = shard
    return draw(total)[start : start + local]


def sample_normal_diag(
    mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Reparameterized draw ``z = mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)``.

    Kingma & Welling (2014), "Auto-Encoding Variational Bayes", sec. 2.4. Gradients flow
    to ``mu`` and ``logvar``; ``eps`` is drawn from ``generator`` (global RNG if None).

    Args:
        mu, logvar: ``(..., d)`` mean and log-variance.

    Returns:
        ``(..., d)`` sample.
    """
    rest = mu.shape[1:]
    eps = batch_draw(
        mu.shape[0],
        lambda m: torch.randn((m, *rest), generator=generator, device=mu.device, dtype=mu.dtype),
    )
    return mu + torch.exp(0.5 * logvar) * eps


def kl_normal_diag(
    mu1: torch.Tensor, logvar1: torch.Tensor, mu2: torch.Tensor, logvar2: torch.Tensor
) -> torch.Tensor:
    """``KL(N(mu1, diag e^logvar1) || N(mu2, diag e^logvar2))`` in nats.

    ``0.5 * sum_i [logvar2 - logvar1 + (e^logvar1 + (mu1 - mu2)^2) / e^logvar2 - 1]``.

    Args:
        mu1, logvar1, mu2, logvar2: broadcastable ``(..., d)`` tensors.

    Returns:
        ``(...)`` KL per example (nats).
    """
    return 0.5 * (
        logvar2 - logvar1 + (torch.exp(logvar1) + (mu1 - mu2).pow(2)) * torch.exp(-logvar2) - 1.0
    ).sum(dim=-1)


def kl_normal_std(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, diag e^logvar) || N(0, I))`` in nats; Kingma & Welling (2014), Appendix B:
    ``-0.5 * sum_i (1 + logvar_i - mu_i^2 - e^logvar_i)``.

    Args:
        mu, logvar: ``(..., d)``.

    Returns:
        ``(...)`` KL per example (nats).
    """
    return -0.5 * (1.0 + logvar - mu.pow(2) - torch.exp(logvar)).sum(dim=-1)


def log_normal_diag(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``log N(z; mu, diag e^logvar)`` summed over the last dimension.

    Args:
        z, mu, logvar: broadcastable ``(..., d)``.

    Returns:
        ``(...)`` log-density (nats).
    """
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(
        dim=-1
    )


def log_bernoulli(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``log Bernoulli(x; sigmoid(logits))`` summed over the last dimension.

    Computed from logits as ``x * logits - softplus(logits)`` (= minus binary cross
    entropy), which stays finite for saturated pixels where ``log(sigmoid(l))`` would
    underflow to ``log 0`` (seed 001 Q2 b-ii; seed 004 Q2 "cross entropy").
    ``x`` may be binary or in [0, 1] (then it is the cross entropy with grey targets).

    Args:
        x: ``(..., D)`` targets in [0, 1]; logits: broadcastable ``(..., D)``.

    Returns:
        ``(...)`` log-likelihood (nats).
    """
    return (x * logits - F.softplus(logits)).sum(dim=-1)


def softplus(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + e^x)`` elementwise as ``max(x, 0) + log(1 + e^-|x|)``: faster than
    ``F.softplus`` on CPU (whose ``log1p`` is not vectorised; ``scripts/bench.py``), absolute
    error < 1e-6 in float32 (the ``log1p`` rounding). For free energies (sums of O(100) terms
    of O(100) nats); differences of nearby softpluses (AIS weights) keep ``F.softplus``.

    Args:
        x: ``(...)`` float tensor. Returns: ``(...)``, same dtype.
    """
    if x.requires_grad and torch.is_grad_enabled():  # the fast form works in place
        return F.softplus(x)
    return torch.exp(-x.abs()).add_(1.0).log_().add_(x.clamp(min=0.0))


# Below this many elements the 24-bit integer path of sample_bernoulli costs more kernel
# launches than it saves (measured by scripts/bench.py).
_INT_UNIFORM_MIN = 16384


def sample_bernoulli(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``x ~ Bernoulli(probs)`` elementwise (seed 001 Q2 b-iv).

    Computed as ``1[u < probs]`` with ``u ~ U[0, 1)`` drawn from ``generator`` (global RNG
    if None): ``P(u < p) = p`` up to the 2^-24 grid of float32 uniforms, ``p = 0`` never
    fires and ``p = 1`` always does. On CPU this is faster than ``torch.bernoulli`` (one
    vectorised uniform fill and a compare instead of a per-element Bernoulli draw; the
    ratio is in ``scripts/bench.py``'s output), and as fast on CUDA. The same generator state
    gives the same draws; the stream differs from ``torch.bernoulli``'s.

    On CPU, float32 ``probs`` of at least 16 384 elements take the uniforms' 24 bits straight
    from 64-bit integer draws (two per draw: ``m = bits & (2^24 - 1)``, ``u = m 2^-24``,
    the same grid as ``torch.rand``) and compare ``m < p 2^24`` (exact: scaling by a power
    of two): the Mersenne twister's float path costs more per uniform than the integer one
    (the measured ratio is in docs/speed.md).

    Args:
        probs: ``(...)`` probabilities in [0, 1] (float tensor, any device).
        generator: RNG on ``probs.device``, or None.

    Returns:
        ``(...)`` tensor of 0.0 / 1.0 with ``probs``' dtype and device.
    """
    shard = _SHARD.get()
    if shard is not None and probs.ndim > 0 and probs.shape[0] == shard[1]:
        start, local, total = shard  # the global batch's draw, this shard's rows
        full = probs.new_zeros((total, *probs.shape[1:]))
        full[start : start + local] = probs
        with shard_rows(0, total, total):
            return sample_bernoulli(full, generator)[start : start + local]
    n = probs.numel()
    if probs.device.type == "cpu" and probs.dtype == torch.float32 and n >= _INT_UNIFORM_MIN:
        # random_() on int64 fills the low 63 bits uniformly; each int64 holds two int32
        # words whose low 24 bits are independent uniform integers on [0, 2^24).
        words = (
            torch.empty((n + 1) // 2, dtype=torch.int64)
            .random_(generator=generator)
            .view(torch.int32)
        )
        m = words[:n].view(probs.shape).bitwise_and_(0xFFFFFF)
        return m.to(torch.float32).lt_(probs * 16777216.0)
    # Half-precision uniforms have a coarse grid (2^-8 for bfloat16): draw them in float32.
    udtype = probs.dtype if probs.dtype in (torch.float32, torch.float64) else torch.float32
    u = torch.rand(probs.shape, generator=generator, device=probs.device, dtype=udtype)
    # in place: the uniforms' buffer becomes the 0/1 sample (no bool tensor, no cast)
    return u.lt_(probs).to(probs.dtype)
