"""Units of a likelihood: nats per example -> bits per dimension, the one conversion.

Every negative log-likelihood the runner records is in **nats per example** (natural log,
summed over the ``D`` dimensions of one example; lower is better). Bits per dimension is

    bpd = (nll_nats / D + offset) / ln 2

with ``offset`` in nats per dimension, zero unless the likelihood is a density of data on
another scale than the one reported:

* **data in [0, 1] vs in [0, 256)** (``offset = ln 256``): a density on uniformly
  dequantized pixels ``y = (k + u) / 256`` in [0, 1]^D (``k`` in {0..255}, ``u ~ U[0,1)^D``;
  Theis, van den Oord & Bethge 2016) is reported, as in the literature, as a density of
  ``256 y`` in [0, 256)^D: ``-log p_{256y} = -log p_y + D ln 256``, i.e. ``+ ln 256``
  nats (8 bits) per dimension. A uniform density on [0, 1)^D (0 nats) is therefore 8
  bits/dim, the cost of storing raw bytes (Dinh et al. 2017, Sec. 4.1; Song et al. 2021,
  App. D.2, whose ``offset = 7`` is this 8 less the 1 bit of the encoding below for data in
  [-1, 1]).
* **the model's encoding** (``model.log_det_encode``, nats per dimension): a model that sees
  ``z = encode(y)`` (``2 y - 1`` for ``centered`` diffusion models) gives ``log p_z(z)``;
  ``log p_y(y) = log p_z(z) + D log|dz/dy|``. The callers here add ``D * log_det_encode``
  to the log-likelihood before converting (``dgm_runner.metrics.likelihood``), so it is
  part of ``nll_nats``, not of ``offset``.
* **probabilities of discrete data** (Bernoulli pixels, a discretised decoder, an
  autoregressive softmax over 256 levels): no offset; ``bpd = nll_nats / (D ln 2)``.

Which callers use which offset is in ``docs/evaluation.md`` ("Data protocols and units").
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch

__all__ = ["LN2", "LN256", "bits_per_dim_standard_error", "nats_to_bits_per_dim"]

LN2 = math.log(2.0)  # nats per bit
LN256 = math.log(256.0)  # nats per dimension from [0, 1] to [0, 256): 8 bits

T = TypeVar("T", float, torch.Tensor)


def nats_to_bits_per_dim(nats_per_example: T, n_dims: int, offset_nats_per_dim: float = 0.0) -> T:
    """Bits per dimension ``(nats_per_example / n_dims + offset_nats_per_dim) / ln 2``.

    Args:
        nats_per_example: negative log-likelihood of one example in nats (a float, or a
            tensor of per-example values of any shape).
        n_dims: ``D``, dimensions of one example (784 for 28x28 MNIST).
        offset_nats_per_dim: nats per dimension added before the conversion (module
            docstring): ``LN256`` for a density of data in [0, 1] reported for data in
            [0, 256); 0 for probabilities of discrete data.

    Returns:
        Bits per dimension, same type and shape as ``nats_per_example``. With no offset it
        is computed as ``nats / (D ln 2)`` (the same number; these float operations keep the
        last bit of the values recorded before this function existed).

    Raises:
        ValueError: ``n_dims`` is not a positive integer.
    """
    if isinstance(n_dims, bool) or not isinstance(n_dims, int) or n_dims < 1:
        raise ValueError(f"n_dims must be a positive integer, got {n_dims!r}")
    if offset_nats_per_dim == 0.0:
        return nats_per_example / (n_dims * LN2)
    return (nats_per_example / n_dims + offset_nats_per_dim) / LN2


def bits_per_dim_standard_error(nats_standard_error: T, n_dims: int) -> T:
    """Standard error of a mean bits/dim, from the standard error (over examples) of the
    mean NLL in nats: ``se_nats / (D ln 2)`` (the offset is a constant, it adds none).

    Args:
        nats_standard_error: standard error of the mean NLL in nats per example,
            ``std(nll) / sqrt(n)``.
        n_dims: ``D``, dimensions of one example.

    Returns:
        The standard error in bits per dimension, same type as the input.

    Raises:
        ValueError: ``n_dims`` is not a positive integer.
    """
    return nats_to_bits_per_dim(nats_standard_error, n_dims)
