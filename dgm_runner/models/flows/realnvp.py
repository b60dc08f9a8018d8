"""RealNVP (Dinh, Sohl-Dickstein & Bengio 2017, "Density estimation using Real NVP").

Multi-scale architecture (their Sec. 3.6): at each scale but the last, three affine coupling
layers with alternating checkerboard masks, a squeeze, three affine coupling layers with
alternating channel-wise masks, then half of the channels factored out; at the last scale,
four coupling layers with alternating checkerboard masks. The scale-and-translation
functions are convolutional ResNets with batch normalisation (their Sec. 4.1); batch
normalisation is also a flow layer after every coupling layer (their Sec. 3.7). Data are
logit-transformed first (Sec. 4.1, ``alpha = 0.05``), the log-determinant counted.

Differences from the paper, for a CPU budget and simplicity: the same ``channels`` at every
scale (the authors' code doubles them per scale); batch normalisation after each coupling
layer over all channels (theirs normalises the transformed half inside the layer); no weight
normalisation; no L2 penalty on the scale factors.
"""

from __future__ import annotations

from typing import Annotated, Literal

from dgm_runner.config import NonNegativeInt, PositiveInt, Range
from dgm_runner.models.checks import require_images
from dgm_runner.models.flows.actnorm import ActNorm
from dgm_runner.models.flows.base import FlowLayer, FlowSequence
from dgm_runner.models.flows.batchnorm import BatchNormFlow
from dgm_runner.models.flows.coupling import AffineCoupling
from dgm_runner.models.flows.multiscale import MultiScaleFlow, check_divisible
from dgm_runner.models.flows.networks import norm_layer
from dgm_runner.models.flows.preprocessing import preprocessing as make_preprocessing
from dgm_runner.models.flows.squeeze import Squeeze

Alpha = Annotated[float, Range(gt=0, lt=0.5)]


def flow_norm_layer(flow_norm: str, channels: int) -> list[FlowLayer]:
    """The normalisation flow layer after a coupling layer: ``[BatchNormFlow]``,
    ``[ActNorm]`` or ``[]`` (``none``).

    Raises:
        ValueError: another name.
    """
    if flow_norm == "batchnorm":
        return [BatchNormFlow(channels)]
    if flow_norm == "actnorm":
        return [ActNorm(channels)]
    if flow_norm == "none":
        return []
    raise ValueError(f"flow_norm={flow_norm!r}: allowed values are batchnorm, actnorm, none")


class RealNVP(MultiScaleFlow):
    """RealNVP on ``(C, H, W)`` images (module docstring): any ``C`` (colour included), ``H``
    and ``W`` divisible by ``2 ** (n_scales - 1)``.

    Args:
        image_shape: ``(C, H, W)`` of the data (set by the runner); ``H`` and ``W``
            divisible by ``2 ** (n_scales - 1)``.
        n_scales: scales; ``n_scales - 1`` squeezes (3 on 28x28: 28, 14, 7).
        channels: feature maps of every scale-and-translation network.
        n_blocks: residual blocks per network.
        norm: normalisation inside the networks (``batchnorm`` as the paper, ``actnorm``,
            ``none``).
        flow_norm: normalisation flow layer after each coupling layer (``batchnorm`` as
            the paper's Sec. 3.7, ``actnorm``, ``none``).
        preprocessing: ``logit`` (the paper) or ``center``.
        alpha: the logit transform's ``alpha``.

    Raises:
        ValueError: non-image data, or ``H``, ``W`` not divisible by the squeezes.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        n_scales: PositiveInt = 3,
        channels: PositiveInt = 32,
        n_blocks: NonNegativeInt = 1,
        norm: Literal["batchnorm", "actnorm", "none"] = "batchnorm",
        flow_norm: Literal["batchnorm", "actnorm", "none"] = "batchnorm",
        preprocessing: Literal["logit", "center"] = "logit",
        alpha: Alpha = 0.05,
    ) -> None:
        shape = require_images(image_shape, "model=realnvp")
        check_divisible(shape, n_scales - 1, "model=realnvp")
        norm_layer(norm, 1)  # ValueError for an unknown name, before building anything
        flow_norm_layer(flow_norm, 1)

        def coupling(c: int, mask: str, parity: int) -> list[FlowLayer]:
            return [
                AffineCoupling(c, mask, parity, channels, n_blocks, norm),
                *flow_norm_layer(flow_norm, c),
            ]

        c, h, w = shape
        levels, shapes = [], []
        for scale in range(n_scales):
            if scale == n_scales - 1:
                layers = [x for p in range(4) for x in coupling(c, "checkerboard", p)]
                levels.append(FlowSequence(layers))
                shapes.append((c, h, w))
                break
            layers = [x for p in range(3) for x in coupling(c, "checkerboard", p)]
            layers.append(Squeeze())
            c, h, w = 4 * c, h // 2, w // 2
            layers += [x for p in range(3) for x in coupling(c, "channel", p)]
            levels.append(FlowSequence(layers))
            shapes.append((c, h, w))
            c = c // 2
        super().__init__(
            shape,
            make_preprocessing(preprocessing, alpha),
            levels,
            [None] * (n_scales - 1),
            shapes,
        )
