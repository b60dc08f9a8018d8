"""PixelCNN prior over the code grid of a frozen VQ-VAE (stage 2 of van den Oord et al.
2017, Sec. 3.3; seed 003 programming question 1, "an autoregressive model for latent
distribution learning").

The prior is ``p(c) = prod_i p(c_i | c_<i)`` over the ``h x w`` grid of code indices in
raster order (row by row, left to right), modelled with masked convolutions (van den
Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel Recurrent Neural Networks", Sec. 3.4).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from dgm_runner.config import PositiveInt
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


class PixelCNNPrior(nn.Module):
    """Autoregressive prior over the VQ-VAE code grid, with the frozen VQ-VAE inside.

    Network: code embedding (K -> channels) -> MaskedConv A (``first_kernel``) ->
    ``n_layers`` residual blocks with MaskedConv B (``kernel``) -> ReLU -> 1x1 conv ->
    ReLU -> 1x1 conv (channels -> K): ``(B, h, w)`` codes -> ``(B, K, h, w)`` logits of
    ``p(c_i | c_<i)`` at each position (1x1 convolutions keep the causal structure).

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
        if first_kernel % 2 == 0 or kernel % 2 == 0:
            raise ValueError(
                f"kernel sizes must be odd, got first_kernel={first_kernel}, kernel={kernel}"
            )
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
        self.first = MaskedConv2d(channels, channels, first_kernel, "A")
        self.blocks = nn.Sequential(*[_Block(channels, kernel, gated) for _ in range(n_layers)])
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(),
            nn.Conv2d(channels, self.n_codes, 1),
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
