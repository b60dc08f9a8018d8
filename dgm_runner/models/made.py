"""MADE: Masked Autoencoder for Distribution Estimation (Germain, Gregor, Murray &
Larochelle 2015), for binary images.

An MLP ``x -> h^1 -> ... -> h^L -> logits`` over the ``D = C * H * W`` flattened pixels whose
weight matrices are multiplied by binary masks so that the output of pixel ``d`` depends
only on the pixels before ``d`` in an ordering: ``p(x) = prod_d p(x_d | x_<d)`` with
``p(x_d = 1 | x_<d) = sigmoid(logit_d)``, an exact, normalised likelihood.

Masks (Germain et al. 2015, Sec. 4): every input ``d`` gets the degree ``m^0(d)`` in
{1..D}, its position in the ordering; every hidden unit ``k`` of layer ``l`` a degree
``m^l(k)`` drawn uniformly from {min_k' m^(l-1)(k'), ..., D - 1}; a hidden weight
``k' -> k`` is kept iff ``m^l(k) >= m^(l-1)(k')``, an output weight ``k -> d`` iff
``m^0(d) > m^L(k)``. Unit ``k`` then sees only inputs of degree ``<= m^l(k)``, and output
``d`` only inputs of degree ``< m^0(d)``.

Several masks (``n_masks = K``, Sec. 4-5): mask ``k`` is drawn from the seed
``mask_seed + k`` (its hidden degrees: connectivity-agnostic training; and, with
``order="random"``, its own ordering: order-agnostic training). Training draws one of the
``K`` masks for every update (:meth:`AutoregressiveImageModel.draw_order`, the objective
does it); evaluation and sampling use the ensemble ``p(x) = (1/K) sum_k p_k(x)``
(Sec. 5). ``n_masks = 1`` with ``order="natural"`` is the plain MADE.

Direct connections (``direct_connections=True``): a masked ``D x D`` matrix from the inputs
straight to the output logits, weight ``d' -> d`` kept iff ``m^0(d) > m^0(d')``, so
``logit_d = (hidden path) + sum_{d' <_order d} A_{d d'} x_{d'}``: a fully visible sigmoid
belief net added to the hidden path (the option ``direct_input_connect="Output"`` of the
authors' released code, github.com/mgermain/MADE, which its experiment grid sets). Without
it, the pixel just before ``d`` in the ordering reaches output ``d`` only through hidden
units of degree exactly ``m^0(d) - 1``: about ``hidden_dim / (D - 1)`` of them (0.6 for 500
units on MNIST), which is why a 1-mask MADE in raster order learns little local structure.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dgm_runner.config import NonNegativeInt, PositiveInt
from dgm_runner.models.autoregressive import AutoregressiveImageModel
from dgm_runner.models.checks import require_images


def made_degrees(
    n_dims: int, hidden_dim: int, n_layers: int, natural_order: bool, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The degrees of one MADE mask (Germain et al. 2015, Sec. 4), drawn from ``seed``.

    Args:
        n_dims: ``D`` inputs (>= 2).
        hidden_dim, n_layers: units per hidden layer and hidden layers.
        natural_order: inputs in storage order (``m^0(d) = d + 1``); else a random
            permutation drawn from ``seed``.
        seed: the mask's seed (a generator of its own: the global RNG is not touched).

    Returns:
        ``(D,)`` int64 input degrees in {1..D} (a permutation) and ``(n_layers, hidden_dim)``
        int64 hidden degrees, layer ``l`` in {min m^(l-1), ..., D - 1}.
    """
    gen = torch.Generator().manual_seed(seed)
    if natural_order:
        inputs = torch.arange(1, n_dims + 1)
    else:
        inputs = torch.randperm(n_dims, generator=gen) + 1
    hidden, low = [], 1
    for _ in range(n_layers):
        layer = torch.randint(low, n_dims, (hidden_dim,), generator=gen)
        hidden.append(layer)
        low = int(layer.min())
    return inputs, torch.stack(hidden)


class MADE(AutoregressiveImageModel):
    """MADE over binary images (module docstring): ReLU hidden layers, Bernoulli outputs.
    Shapes: any ``(C, H, W)`` with ``D = C H W >= 2`` (colour included: the natural order is
    ``x.flatten()``'s, channel-major).

    Args:
        image_shape: ``(C, H, W)`` of the data (set by the runner); ``D = C H W >= 2``.
        hidden_dim: units per hidden layer (Germain et al. 2015 on MNIST: 500).
        n_layers: hidden layers (1 or 2 in the paper's MNIST experiments).
        n_masks: ``K``, the fixed set of masks training cycles through at random and
            evaluation averages over (1: plain MADE).
        order: ``natural`` (every mask keeps the pixels' raster order) or ``random`` (each
            mask its own ordering, drawn from its seed: order-agnostic training).
        mask_seed: mask ``k`` is drawn from the seed ``mask_seed + k``.
        direct_connections: add the masked input-to-output matrix (module docstring),
            initialised to zero; ``D^2`` more parameters.

    Raises:
        ValueError: non-image data, or images of fewer than 2 pixels.

    The degrees are persistent buffers (``input_degrees`` ``(K, D)``, ``hidden_degrees``
    ``(K, L, hidden_dim)``): a checkpoint carries its masks.
    """

    n_levels = 2

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        hidden_dim: PositiveInt = 500,
        n_layers: PositiveInt = 1,
        n_masks: PositiveInt = 1,
        order: Literal["natural", "random"] = "natural",
        mask_seed: NonNegativeInt = 0,
        direct_connections: bool = False,
    ) -> None:
        super().__init__()
        self.image_shape = require_images(image_shape, "model=made")
        d = self.n_dims
        if d < 2:
            raise ValueError(f"MADE needs images of at least 2 pixels, got {tuple(image_shape)}")
        if order not in ("natural", "random"):
            raise ValueError(f"order={order!r}: allowed values are 'natural', 'random'")
        self.n_orders = n_masks
        self.ordering = order
        dims = [d, *[hidden_dim] * n_layers]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(hidden_dim, d)
        self.direct = nn.Parameter(torch.zeros(d, d)) if direct_connections else None
        masks = [
            made_degrees(d, hidden_dim, n_layers, order == "natural", mask_seed + k)
            for k in range(n_masks)
        ]
        self.register_buffer("input_degrees", torch.stack([m[0] for m in masks]))
        self.register_buffer("hidden_degrees", torch.stack([m[1] for m in masks]))
        # the last mask's matrices, (order, device, masks): one network pass costs about as
        # much as building them; dropped when the degrees are loaded
        self._cached: tuple[int, torch.device, list[torch.Tensor]] | None = None
        self.register_load_state_dict_post_hook(_drop_cached_masks)

    def masks(self, order: int = 0) -> list[torch.Tensor]:
        """The float 0/1 masks of mask ``order``, one per weight matrix, shaped like it:
        ``(hidden_dim, D)``, ``(hidden_dim, hidden_dim)`` ..., then ``(D, hidden_dim)``
        (Germain et al. 2015, Sec. 4), then with direct connections the ``(D, D)`` mask of
        the input-to-output matrix."""
        device = self.input_degrees.device
        if self._cached is not None and self._cached[:2] == (order, device):
            return self._cached[2]
        # ordinary tensors even when built under inference mode (a cached inference tensor
        # could not be saved for the backward pass of a later training step)
        with torch.inference_mode(False), torch.no_grad():
            prev = self.input_degrees[order]
            out = []
            for degrees in self.hidden_degrees[order]:
                out.append((degrees[:, None] >= prev[None, :]).float())
                prev = degrees
            inputs = self.input_degrees[order]
            out.append((inputs[:, None] > prev[None, :]).float())
            if self.direct is not None:
                out.append((inputs[:, None] > inputs[None, :]).float())
        self._cached = (order, device, out)
        return out

    def logits(self, x: torch.Tensor, order: int = 0) -> torch.Tensor:
        """``(B, C, H, W)`` binary images -> ``(B, C, H, W)`` logits of ``p(x_d = 1 | x_<d)``
        under mask ``order``."""
        return self.step_logits(x, order, slice(None)).view(x.shape)

    def _hidden(self, x: torch.Tensor, order: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The last hidden layer's ``(B, hidden_dim)`` activations under mask ``order``, and
        that mask's matrices."""
        masks = self.masks(order)
        h = x.flatten(1)
        for layer, mask in zip(self.hidden, masks):
            h = torch.relu(F.linear(h, layer.weight * mask, layer.bias))
        return h, masks

    def step_logits(self, x: torch.Tensor, order: int, dims: torch.Tensor | slice) -> torch.Tensor:
        """``(B, G)`` logits of the pixels ``dims`` only: the hidden layers, then just those
        rows of the output layer (and of the direct connections)."""
        h, masks = self._hidden(x, order)
        out_mask = masks[len(self.hidden)]
        logits = F.linear(h, self.out.weight[dims] * out_mask[dims], self.out.bias[dims])
        if self.direct is not None:
            logits = logits + F.linear(x.flatten(1), self.direct[dims] * masks[-1][dims])
        return logits

    def generation_steps(self, order: int = 0) -> torch.Tensor:
        """``(D, 1)``: the pixels one at a time, by increasing input degree of mask ``order``."""
        return torch.argsort(self.input_degrees[order]).unsqueeze(1)


def _drop_cached_masks(module: nn.Module, incompatible_keys: object) -> None:
    """Load-state-dict post-hook of :class:`MADE`: the loaded degrees may differ from the
    ones the cached masks were built from."""
    module._cached = None
