"""Glow (Kingma & Dhariwal 2018, "Glow: Generative flow with invertible 1x1 convolutions").

``n_levels`` levels (their Fig. 2): a squeeze, then ``depth`` (their ``K``) steps of flow,
each actnorm -> invertible 1x1 convolution (LU) -> affine coupling layer (channel-wise split,
network 3x3 -> actnorm -> ReLU -> 1x1 -> actnorm -> ReLU -> zero-initialised 3x3); after each
level but the last, half of the channels are factored out with a learned prior conditioned
on the other half (their code's ``split2d``). Data are centred (``x - 0.5``, their code).

Differences from the paper: the coupling's scale is ``exp(scale * tanh(raw))`` (their code:
``sigmoid(raw + 2)``); the top level's prior is ``N(0, I)`` (their code can learn it); the
zero-initialised convolutions have no extra log-scale factor.
"""

from __future__ import annotations

from typing import Literal

from dgm_runner.config import NonNegativeInt, PositiveInt
from dgm_runner.models.checks import require_images
from dgm_runner.models.flows.actnorm import ActNorm
from dgm_runner.models.flows.base import FlowLayer, FlowSequence
from dgm_runner.models.flows.conv1x1 import InvertibleConv1x1
from dgm_runner.models.flows.coupling import AffineCoupling
from dgm_runner.models.flows.multiscale import (
    ConditionalSplitPrior,
    MultiScaleFlow,
    check_divisible,
)
from dgm_runner.models.flows.networks import norm_layer
from dgm_runner.models.flows.preprocessing import preprocessing as make_preprocessing
from dgm_runner.models.flows.realnvp import Alpha
from dgm_runner.models.flows.squeeze import Squeeze


class Glow(MultiScaleFlow):
    """Glow on ``(C, H, W)`` images (module docstring): any ``C`` (colour included), ``H`` and
    ``W`` divisible by ``2 ** n_levels``.

    Args:
        image_shape: ``(C, H, W)`` of the data (set by the runner); ``H`` and ``W``
            divisible by ``2 ** n_levels``.
        n_levels: ``L``, levels (2 on 28x28: 14x14, 7x7).
        depth: ``K``, steps of flow per level.
        channels: feature maps of each coupling layer's network.
        n_blocks: residual blocks added to that network (0: Glow's 3x3, 1x1, 3x3).
        norm: normalisation inside the networks (``actnorm`` as the paper, ``batchnorm``,
            ``none``).
        split_prior: ``conditional`` (the learned prior of the factored-out half) or
            ``standard`` (``N(0, I)``, as RealNVP).
        preprocessing: ``center`` (their code) or ``logit``.
        alpha: the logit transform's ``alpha`` (``preprocessing=logit`` only).

    Raises:
        ValueError: non-image data, or ``H``, ``W`` not divisible by the squeezes.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        n_levels: PositiveInt = 2,
        depth: PositiveInt = 8,
        channels: PositiveInt = 64,
        n_blocks: NonNegativeInt = 0,
        norm: Literal["batchnorm", "actnorm", "none"] = "actnorm",
        split_prior: Literal["conditional", "standard"] = "conditional",
        preprocessing: Literal["logit", "center"] = "center",
        alpha: Alpha = 0.05,
    ) -> None:
        shape = require_images(image_shape, "model=glow")
        check_divisible(shape, n_levels, "model=glow")
        norm_layer(norm, 1)
        if split_prior not in ("conditional", "standard"):
            raise ValueError(f"split_prior={split_prior!r}: allowed 'conditional', 'standard'")
        c, h, w = shape
        levels, splits, shapes = [], [], []
        for level in range(n_levels):
            c, h, w = 4 * c, h // 2, w // 2
            layers: list[FlowLayer] = [Squeeze()]
            for _ in range(depth):
                layers += [
                    ActNorm(c),
                    InvertibleConv1x1(c),
                    AffineCoupling(c, "channel", 0, channels, n_blocks, norm),
                ]
            levels.append(FlowSequence(layers))
            shapes.append((c, h, w))
            if level < n_levels - 1:
                splits.append(ConditionalSplitPrior(c) if split_prior == "conditional" else None)
                c = c // 2
        super().__init__(shape, make_preprocessing(preprocessing, alpha), levels, splits, shapes)
