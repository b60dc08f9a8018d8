"""Summary statistics of per-example metric values (one number per test image)."""

from __future__ import annotations

import math

import torch


def standard_error(values: torch.Tensor) -> float:
    """The standard error of the mean of ``values``: ``s / sqrt(N)`` with ``s`` the sample
    standard deviation (Bessel's correction, ``N - 1``), computed in ``values``' dtype.

    It is the Monte-Carlo error of a test-set average of per-image estimates, e.g. of the
    IWAE NLL (``test/nll_iwae_k5000_se``): the spread over images, not the (smaller)
    sampling error of each image's own estimate.

    Args:
        values: ``(N,)`` per-example values.

    Returns:
        The standard error (``values``' units); NaN when ``N < 2``.
    """
    n = values.numel()
    return float(values.std() / math.sqrt(n)) if n > 1 else float("nan")
