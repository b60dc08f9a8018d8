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
    Fig. 2).

    Mask of a ``k x k`` kernel (centre ``c = k // 2``): rows below ``c`` are zero; in row
    ``c`` the columns right of ``c`` are zero, and the centre too for type A.

    With ``colours = C > 1`` (an image of C colour channels, Oord et al. 2016, Sec. 3.4,
    "Masked Convolution": R conditions on the earlier pixels, G also on R, B on R and G)
    every feature map belongs to one colour group, channel ``k`` to group ``k % C``
    (``out_colour`` overrides that for the outputs), and at the centre position an output
    of group ``j`` sees inputs of the groups ``i < j`` (type A) or ``i <= j`` (type B);
    positions before the centre are seen whole. A stack of one type-A and any type-B layers
    is then autoregressive in raster-then-channel order. ``colours = 1``: a single group
    (a code of the VQ prior is one categorical variable per position); the mask is
    ``(1, 1, k, k)``, as before colour groups existed.

    Args:
        in_channels, out_channels: as ``nn.Conv2d``.
        kernel_size: odd ``k`` (1: a masked 1x1 convolution, for ``colours > 1``).
        mask_type: ``"A"`` or ``"B"``.
        colours: ``C``, the colour groups.
        out_colour: ``(out_channels,)`` int64 group of each output channel; None:
            ``arange(out_channels) % colours``.

    Raises:
        ValueError: even ``kernel_size`` or a mask type other than A/B.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        mask_type: Literal["A", "B"],
        colours: int = 1,
        out_colour: torch.Tensor | None = None,
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
        self.mask_type, self.colours = mask_type, colours
        if colours == 1:
            self.register_buffer("mask", mask[None, None], persistent=False)
            return
        if out_colour is None:
            out_colour = torch.arange(out_channels) % colours
        in_colour = torch.arange(in_channels) % colours
        seen = out_colour[:, None] > in_colour[None, :]  # (out, in): type A at the centre
        if mask_type == "B":
            seen = seen | (out_colour[:, None] == in_colour[None, :])
        full = mask.expand(out_channels, in_channels, kernel_size, kernel_size).clone()
        full[:, :, c, c] = seen.float()
        self.register_buffer("mask", full, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, h, w) -> (B, out, h, w)`` with the masked kernel."""
        return self._conv_forward(x, self.weight * self.mask, self.bias)


def _pointwise(cin: int, cout: int, colours: int) -> nn.Conv2d:
    """A 1x1 convolution that keeps the colour groups' order: a plain ``nn.Conv2d`` for one
    group, a type-B :class:`MaskedConv2d` for ``colours > 1`` (same parameters, same
    initialisation)."""
    if colours == 1:
        return nn.Conv2d(cin, cout, 1)
    return MaskedConv2d(cin, cout, 1, "B", colours)


class _Block(nn.Module):
    """Residual type-B block: ``x + W_1x1 act(MaskedConvB(x))``, where ``act`` is ReLU or,
    with ``gated``, the gated unit ``tanh(a) * sigmoid(b)`` of Oord et al. 2016b
    ("Conditional Image Generation with PixelCNN Decoders", Eq. 2) without their
    vertical/horizontal stack split (so the blind spot of plain PixelCNN remains). With
    ``colours > 1`` the 1x1 convolution is masked too and the gate's two halves ``a_k``,
    ``b_k`` are of channel ``k``'s colour group."""

    def __init__(self, channels: int, kernel: int, gated: bool, colours: int = 1) -> None:
        super().__init__()
        self.gated = gated
        width = 2 * channels if gated else channels
        out_colour = torch.arange(width) % channels % colours if colours > 1 else None
        self.conv = MaskedConv2d(channels, width, kernel, "B", colours, out_colour)
        self.out = _pointwise(channels, channels, colours)

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
    colours: int = 1,
) -> tuple[MaskedConv2d, nn.Sequential, nn.Sequential]:
    """The PixelCNN network, built in this order (so the same seed gives the same weights):

    * ``first``: MaskedConv A (``first_kernel``), ``in_channels -> channels``;
    * ``blocks``: ``n_layers`` residual type-B blocks (``kernel``, optionally gated);
    * ``head``: ReLU -> 1x1 conv -> ReLU -> 1x1 conv (``channels -> out_channels``); with
      one colour group a 1x1 mask-B convolution is a plain 1x1 convolution.

    ``head(blocks(first(h)))`` maps ``(B, in, H, W) -> (B, out, H, W)`` and its output at
    position ``i`` depends only on the inputs at positions ``< i`` (raster order). With
    ``colours = C > 1`` every layer is masked by colour group too (:class:`MaskedConv2d`;
    channel ``k`` of any layer is of group ``k % C``): an output of group ``j`` at position
    ``i`` depends on the inputs before ``i`` and on those of groups ``< j`` at ``i``.
    """
    first = MaskedConv2d(in_channels, channels, first_kernel, "A", colours)
    blocks = nn.Sequential(*[_Block(channels, kernel, gated, colours) for _ in range(n_layers)])
    head = nn.Sequential(
        nn.ReLU(),
        _pointwise(channels, channels, colours),
        nn.ReLU(),
        _pointwise(channels, out_channels, colours),
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

    Ordering: raster order over positions, then channel order within a position (van den
    Oord et al. 2016, Sec. 3.4: R, then G given R, then B given R and G): with ``C > 1``
    channels the masks of every layer also order the colour groups (:class:`MaskedConv2d`)
    and sampling draws one channel of one position per step. ``C = 1``: the network and its
    initialisation are those of a single colour group (as before colour groups existed).

    Shapes: any ``(C, H, W)`` images (``H``, ``W`` >= 1; any ``C``).

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
            c, channels, out, n_layers, first_kernel, kernel, gated, colours=c
        )
        #: How far (rows up, columns either side) an output position sees into the input.
        self.reach = first_kernel // 2 + n_layers * (kernel // 2)

    def logits(self, x: torch.Tensor, order: int = 0) -> torch.Tensor:
        """``(B, C, H, W)`` images -> ``(B, C, H, W)`` Bernoulli logits or
        ``(B, 256, C, H, W)`` softmax logits; pixel ``(c, i)``'s depend only on the pixels
        at positions ``< i`` (raster order) and on the channels ``< c`` at ``i``. ``order``
        must be 0 (one ordering)."""
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
        """``(C H W, 1)``: one pixel value per step, the positions in raster order and the
        ``C`` channels of a position one after the other (``C = 1``: ``(H W, 1)``)."""
        c, h, w = self.image_shape
        return torch.arange(c * h * w).view(c, h * w).t().reshape(-1, 1)


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
