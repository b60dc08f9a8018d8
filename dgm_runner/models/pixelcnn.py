"""PixelCNN (van den Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel Recurrent Neural
Networks", Sec. 3.4): masked convolutions over a grid in raster order (row by row, left to
right), one implementation (:class:`MaskedConv2d`, the residual block, :func:`pixelcnn_layers`)
for two models:

* :class:`PixelCNN`, an autoregressive model of the pixels of an image,
  ``p(x) = prod_i p(x_i | x_<i)``, with Bernoulli (binary images) or 256-way softmax (grey
  images) conditionals: an exact likelihood (:mod:`dgm_runner.models.autoregressive`);
* :class:`PixelCNNPrior`, the prior ``p(c) = prod_i p(c_i | c_<i)`` over the ``h x w`` code
  grid of a frozen VQ-VAE (stage 2 of van den Oord et al. 2017, Sec. 3.3; seed 003
  programming question 1, "an autoregressive model for latent distribution learning").
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from dgm_runner.config import PositiveInt
from dgm_runner.models.autoregressive import GREY_LEVELS, AutoregressiveImageModel
from dgm_runner.models.checks import require_images
from dgm_runner.models.vqvae import VQVAE


class MaskedConv2d(nn.Conv2d):
    """A 'same'-padded convolution whose kernel is masked so that the output at grid
    position ``i`` (raster order) sees only inputs at positions ``< i`` (``mask_type="A"``,
    the first layer) or ``<= i`` (``"B"``, later layers) (Oord et al. 2016, Sec. 3.4 and
    Fig. 2, with a single 'colour' group: a code is one categorical variable per position).

    Mask of a ``k x k`` kernel (centre ``c = k // 2``): rows below ``c`` are zero; in row
    ``c`` the columns right of ``c`` are zero, and the centre too for type A.

    Args:
        in_channels, out_channels: as ``nn.Conv2d``.
        kernel_size: odd ``k``.
        mask_type: ``"A"`` or ``"B"``.

    Raises:
        ValueError: even ``kernel_size`` or a mask type other than A/B.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, mask_type: Literal["A", "B"]
    ) -> None:
        if kernel_size % 2 == 0:
            raise ValueError(f"masked convolutions need an odd kernel size, got {kernel_size}")
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type={mask_type!r}: allowed values are 'A', 'B'")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        c = kernel_size // 2
        mask = torch.ones(kernel_size, kernel_size)
        mask[c, c + (mask_type == "B") :] = 0.0
        mask[c + 1 :, :] = 0.0
        self.mask_type = mask_type
        self.register_buffer("mask", mask[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, h, w) -> (B, out, h, w)`` with the masked kernel."""
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class _Block(nn.Module):
    """Residual type-B block: ``x + W_1x1 act(MaskedConvB(x))``, where ``act`` is ReLU or,
    with ``gated``, the gated unit ``tanh(a) * sigmoid(b)`` of Oord et al. 2016b
    ("Conditional Image Generation with PixelCNN Decoders", Eq. 2) without their
    vertical/horizontal stack split (so the blind spot of plain PixelCNN remains)."""

    def __init__(self, channels: int, kernel: int, gated: bool) -> None:
        super().__init__()
        self.gated = gated
        self.conv = MaskedConv2d(channels, 2 * channels if gated else channels, kernel, "B")
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(torch.relu(x))
        if self.gated:
            a, b = h.chunk(2, dim=1)
            h = torch.tanh(a) * torch.sigmoid(b)
        else:
            h = torch.relu(h)
        return x + self.out(h)


def check_kernels(first_kernel: int, kernel: int) -> None:
    """Raise ``ValueError`` unless both kernel sizes are odd (masked convolutions)."""
    if first_kernel % 2 == 0 or kernel % 2 == 0:
        raise ValueError(
            f"kernel sizes must be odd, got first_kernel={first_kernel}, kernel={kernel}"
        )


def pixelcnn_layers(
    in_channels: int,
    channels: int,
    out_channels: int,
    n_layers: int,
    first_kernel: int,
    kernel: int,
    gated: bool,
) -> tuple[MaskedConv2d, nn.Sequential, nn.Sequential]:
    """The PixelCNN network, built in this order (so the same seed gives the same weights):

    * ``first``: MaskedConv A (``first_kernel``), ``in_channels -> channels``;
    * ``blocks``: ``n_layers`` residual type-B blocks (``kernel``, optionally gated);
    * ``head``: ReLU -> 1x1 conv -> ReLU -> 1x1 conv (``channels -> out_channels``); with
      one colour group a 1x1 mask-B convolution is a plain 1x1 convolution.

    ``head(blocks(first(h)))`` maps ``(B, in, H, W) -> (B, out, H, W)`` and its output at
    position ``i`` depends only on the inputs at positions ``< i`` (raster order).
    """
    first = MaskedConv2d(in_channels, channels, first_kernel, "A")
    blocks = nn.Sequential(*[_Block(channels, kernel, gated) for _ in range(n_layers)])
    head = nn.Sequential(
        nn.ReLU(),
        nn.Conv2d(channels, channels, 1),
        nn.ReLU(),
        nn.Conv2d(channels, out_channels, 1),
    )
    return first, blocks, head


class PixelCNN(AutoregressiveImageModel):
    """PixelCNN over the pixels of an image (van den Oord et al. 2016, Sec. 3.4; their
    Table 4 row on binarized MNIST): MaskedConv A (``first_kernel``) -> ``n_layers``
    residual type-B blocks (``kernel``) -> ReLU -> 1x1 conv -> ReLU -> 1x1 conv, the
    network of :func:`pixelcnn_layers`, on the image itself (pixels in [0, 1]).

    Likelihood (exact, discrete: no dequantization, no bound):

    * ``likelihood="bernoulli"``: binary images; one logit per pixel,
      ``p(x_i = 1 | x_<i) = sigmoid(logit_i)``; ``test/nll`` in nats per image.
    * ``likelihood="categorical"``: grey images ``k / 255``; a 256-way softmax per pixel
      over ``k`` in {0..255}; ``test/nll`` in nats per image and ``test/bits_per_dim``
      ``= nll / (D ln 2)`` (a probability of discrete data: no offset; see
      :mod:`dgm_runner.metrics.units`).

    Ordering: raster order over positions. With ``C > 1`` channels the channels of one
    position are conditionally independent given the earlier positions (a single colour
    group; the paper's R -> G -> B split within a position is not implemented).

    Differences from the paper: the residual block is :class:`_Block`
    (``x + 1x1(act(MaskedConvB(relu(x))))``, no ``2h -> h`` 1x1 bottleneck before the
    masked convolution, the paper's Fig. 5); ``gated`` swaps its ReLU for the gated unit of
    van den Oord et al. 2016b without their vertical/horizontal stacks, so the blind spot of
    the plain PixelCNN remains.

    Args:
        image_shape: ``(C, H, W)`` of the data (set by the runner).
        channels: width ``h`` of the network.
        n_layers: residual type-B blocks.
        first_kernel: odd kernel size of the type-A layer (paper: 7).
        kernel: odd kernel size of the type-B layers (paper: 3).
        gated: gated activations in the blocks.
        likelihood: ``bernoulli`` or ``categorical`` (256 grey levels).

    Raises:
        ValueError: non-image data, even kernels or an unknown likelihood.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        channels: PositiveInt = 64,
        n_layers: PositiveInt = 6,
        first_kernel: PositiveInt = 7,
        kernel: PositiveInt = 3,
        gated: bool = False,
        likelihood: Literal["bernoulli", "categorical"] = "bernoulli",
    ) -> None:
        super().__init__()
        self.image_shape = require_images(image_shape, "model=pixelcnn")
        check_kernels(first_kernel, kernel)
        if likelihood not in ("bernoulli", "categorical"):
            raise ValueError(
                f"likelihood={likelihood!r}: allowed values are 'bernoulli', 'categorical'"
            )
        self.likelihood = likelihood
        self.n_levels = 2 if likelihood == "bernoulli" else GREY_LEVELS
        c = self.image_shape[0]
        out = c if self.n_levels == 2 else GREY_LEVELS * c
        self.first, self.blocks, self.head = pixelcnn_layers(
            c, channels, out, n_layers, first_kernel, kernel, gated
        )
        #: How far (rows up, columns either side) an output position sees into the input.
        self.reach = first_kernel // 2 + n_layers * (kernel // 2)

    def logits(self, x: torch.Tensor, order: int = 0) -> torch.Tensor:
        """``(B, C, H, W)`` images -> ``(B, C, H, W)`` Bernoulli logits or
        ``(B, 256, C, H, W)`` softmax logits; position ``i``'s depend only on the pixels at
        positions ``< i`` (raster order). ``order`` must be 0 (one ordering)."""
        h = self.head(self.blocks(self.first(x)))
        if self.n_levels == 2:
            return h
        b, _, height, width = h.shape
        return h.view(b, GREY_LEVELS, self.image_shape[0], height, width)

    def step_logits(self, x: torch.Tensor, order: int, dims: torch.Tensor) -> torch.Tensor:
        """The logits of the channels ``dims`` of one position ``(r, c)`` (a row of
        :meth:`generation_steps`), computed on the crop of ``x`` that position sees: rows
        ``r - reach .. r``, columns ``c - reach .. c + reach`` (clipped to the image). Every
        activation that output depends on lies in that window and sees only inputs in it, so
        the result equals :meth:`logits` there up to float rounding, at a fraction of its
        cost (8 x 15 of 28 x 28 positions with ``reach = 7``)."""
        _, h, w = self.image_shape
        pos = int(dims[0]) % (h * w)
        r, c = divmod(pos, w)
        r0, c0, c1 = max(0, r - self.reach), max(0, c - self.reach), min(w, c + self.reach + 1)
        crop = self.logits(x[:, :, r0 : r + 1, c0:c1])[..., r - r0, c - c0]  # (B, [256,] C)
        return crop[..., dims // (h * w)]

    def generation_steps(self, order: int = 0) -> torch.Tensor:
        """``(H W, C)``: the positions in raster order, the ``C`` channels of a position
        drawn together."""
        c, h, w = self.image_shape
        return torch.arange(c * h * w).view(c, h * w).t().contiguous()


class PixelCNNPrior(nn.Module):
    """Autoregressive prior over the VQ-VAE code grid, with the frozen VQ-VAE inside.

    Network: code embedding (K -> channels), then the network of :func:`pixelcnn_layers`
    (MaskedConv A (``first_kernel``) -> ``n_layers`` residual blocks with MaskedConv B
    (``kernel``) -> ReLU -> 1x1 conv -> ReLU -> 1x1 conv, channels -> K): ``(B, h, w)`` codes
    -> ``(B, K, h, w)`` logits of ``p(c_i | c_<i)`` at each position (1x1 convolutions keep
    the causal structure).

    The trained VQ-VAE is given (the runner rebuilds it from the finished stage-1 run
    named by ``model.vqvae.run_dir``, :func:`dgm_runner.build.load_run_model`); it is
    frozen (``requires_grad=False``, always in eval mode so an EMA codebook is never
    updated) and registered as the submodule ``vqvae``: its weights are part of this
    model's ``state_dict``, so a stage-2 checkpoint holds both networks (restoring one
    still needs the stage-1 run to exist, for its config).

    Args:
        image_shape: ``(C, H, W)`` of the data; must equal the VQ-VAE's (set by the runner).
        vqvae: the trained :class:`VQVAE` (built by the runner from ``model.vqvae``).
        channels: width of the PixelCNN.
        n_layers: number of residual type-B blocks.
        first_kernel: odd kernel size of the type-A layer (PixelCNN: 7).
        kernel: odd kernel size of the type-B layers (PixelCNN: 3).
        gated: gated activations in the blocks.

    Raises:
        ValueError: even kernels, ``vqvae`` is not a VQ-VAE, or its image shape differs
            from the data's.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        vqvae: nn.Module,
        channels: PositiveInt = 64,
        n_layers: PositiveInt = 6,
        first_kernel: PositiveInt = 7,
        kernel: PositiveInt = 3,
        gated: bool = False,
    ) -> None:
        super().__init__()
        check_kernels(first_kernel, kernel)
        if not isinstance(vqvae, VQVAE):
            raise ValueError(
                "model.vqvae must be a VQVAE (a finished experiment=vqvae_fashion run), "
                f"got {type(vqvae).__name__}"
            )
        if tuple(vqvae.image_shape) != tuple(image_shape):
            raise ValueError(
                f"the VQ-VAE is for {vqvae.image_shape} images, the data are {tuple(image_shape)}"
            )
        vqvae.requires_grad_(False)
        self.vqvae = vqvae.eval()
        self.image_shape = tuple(int(s) for s in image_shape)
        self.grid_shape = vqvae.grid_shape
        self.n_codes = vqvae.n_codes
        self.embedding = nn.Embedding(self.n_codes, channels)
        self.first, self.blocks, self.head = pixelcnn_layers(
            channels, channels, self.n_codes, n_layers, first_kernel, kernel, gated
        )

    def train(self, mode: bool = True) -> PixelCNNPrior:
        """Set the PixelCNN's mode; the frozen VQ-VAE stays in eval mode."""
        super().train(mode)
        self.vqvae.eval()
        return self

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """``(B, h, w)`` int64 codes -> ``(B, K, h, w)`` logits; the logits at position i
        depend only on the codes at positions ``< i`` in raster order."""
        h = self.embedding(codes).permute(0, 3, 1, 2)
        return self.head(self.blocks(self.first(h)))

    @torch.no_grad()
    def codes_of(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images -> ``(B, h, w)`` code indices from the frozen encoder."""
        return self.vqvae.encode_indices(x)

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """``(B, h, w)`` code indices -> ``(B, C, H, W)`` images in [0, 1] (frozen decoder)."""
        return self.vqvae.decode_indices(codes)
