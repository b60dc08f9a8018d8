"""Actnorm (Kingma & Dhariwal 2018, Sec. 3.1): a per-channel affine map with data-dependent
initialisation, and the pass that initialises it.

``y = (x + b) * exp(s)`` per channel, ``b, s`` of shape ``(C,)``; on ``(B, C, H, W)``
inputs the log-determinant is ``H W sum_c s_c`` per example (Table 1 of the paper).

Data-dependent initialisation: on the first training batch, ``b = -mean`` and
``exp(s) = 1 / (std + eps)`` per channel (over batch and positions), so the layer's output
has zero mean and unit variance per channel on that batch; then ``b`` and ``s`` are ordinary
parameters. Whether a layer is initialised is the persistent buffer ``initialized`` (a
checkpoint and a resumed run carry it: a resumed run never initialises again).

The statistics are sums over the batch and the positions, handed to ``reduce`` before use:
in a data-parallel run ``reduce`` sums them over the processes (all-reduce), so every
process computes the statistics of the global batch, and the same parameters, as one
process on the whole batch does (up to the float summation order).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn

from dgm_runner.models.flows.base import FlowLayer

#: Sums a list of tensors over the processes of a data-parallel run, in place (identity in
#: a single process).
Reduce = Callable[[list[torch.Tensor]], None]


def _no_reduce(tensors: list[torch.Tensor]) -> None:
    """The :data:`Reduce` of a single process: the sums are already the batch's."""


class ActNorm(FlowLayer):
    """Actnorm on ``(B, C, H, W)`` (module docstring).

    Args:
        channels: ``C``.
        eps: added to the standard deviation at initialisation (Glow's code: 1e-6).

    Parameters ``bias`` and ``log_scale`` ``(1, C, 1, 1)`` start at 0 (the identity) until
    :func:`data_dependent_init`.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))
        self._init_reduce: Optional[Reduce] = None  # set during a data_dependent_init pass

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, H, W)`` -> ``((x + b) exp(s), (B,) H W sum(s))``; inside a
        :func:`data_dependent_init` pass an uninitialised layer first sets ``b`` and ``s``
        from ``x``."""
        if self._init_reduce is not None and not bool(self.initialized):
            self._initialize(x, self._init_reduce)
        h, w = x.shape[2], x.shape[3]
        y = (x + self.bias) * torch.exp(self.log_scale)
        log_det = (h * w) * self.log_scale.sum()
        return y, log_det.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``y exp(-s) - b``."""
        return y * torch.exp(-self.log_scale) - self.bias

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor, reduce: Reduce) -> None:
        """``b = -mean``, ``s = -log(std + eps)`` per channel of ``x`` over batch and
        positions, from sums passed through ``reduce`` (two passes: the mean, then the
        squared deviations from it)."""
        dims = (0, 2, 3)
        count = x.new_tensor([float(x.shape[0] * x.shape[2] * x.shape[3])])
        total = x.sum(dims)
        reduce([total, count])
        mean = total / count
        squares = (x - mean.view(1, -1, 1, 1)).pow(2).sum(dims)
        reduce([squares])
        std = (squares / count).sqrt()
        self.bias.copy_(-mean.view_as(self.bias))
        self.log_scale.copy_(-torch.log(std + self.eps).view_as(self.log_scale))
        self.initialized.fill_(True)


class NetworkActNorm(nn.Module):
    """Actnorm as a normalisation layer inside a coupling layer's network (Glow's NN,
    Kingma & Dhariwal 2018, Sec. 3.3): the same layer, data-initialised by the same pass, its
    log-determinant unused.

    Args:
        channels: ``C``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.actnorm = ActNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(x + b) exp(s)``."""
        return self.actnorm(x)[0]


def uninitialized_actnorms(model: nn.Module) -> list[ActNorm]:
    """The :class:`ActNorm` layers of ``model`` (in the flow or in its networks) whose
    ``initialized`` buffer is false."""
    return [m for m in model.modules() if isinstance(m, ActNorm) and not bool(m.initialized)]


def data_dependent_init(
    model: nn.Module, forward: Callable[[], Any], reduce: Optional[Reduce] = None
) -> int:
    """Initialise every uninitialised actnorm of ``model`` from the activations it sees in
    ``forward()`` (one pass over the init batch, without gradients): each layer is set from
    its own input when the pass reaches it, so later layers see the normalised outputs of
    earlier ones (Kingma & Dhariwal 2018, Sec. 3.1). Layers already initialised (a
    checkpoint's) are left alone.

    Args:
        model: the module whose actnorms are initialised.
        forward: runs ``model`` on the init batch (in the model's current train/eval mode:
            a batch-norm layer's running statistics get one update from it).
        reduce: sums the statistics over the processes of a data-parallel run (module
            docstring); ``None``: a single process.

    Returns:
        The number of layers initialised (0: nothing to do, ``forward`` is not called).
    """
    layers = uninitialized_actnorms(model)
    if not layers:
        return 0
    for layer in layers:
        layer._init_reduce = reduce or _no_reduce
    try:
        with torch.no_grad():
            forward()
    finally:
        for layer in layers:
            layer._init_reduce = None
    return len(layers)
