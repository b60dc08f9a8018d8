"""The raw time-conditional U-Net ``F(x, cond)`` for images, a network component of its own
(config group ``model/net``, ``configs/model/net/unet.yaml``): a diffusion model
(:class:`dgm_runner.models.score.ScoreUNet`) wraps it with a process and a
parameterisation, and any other model that needs an image-to-image network conditioned on
a scalar per example takes it the same way (``model.net``)."""

from __future__ import annotations

import math

import torch
from torch import nn

from dgm_runner.config import PositiveInt


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-style ``(B,) -> (B, dim)`` embedding of ``1000 t`` (Ho et al. 2020)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = 1000.0 * t[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv residual block with the embedding added after the first conv:
    ``(B, cin, H, W)``, ``(B, emb_dim)`` -> ``(B, cout, H, W)`` (Ho et al. 2020's block)."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(min(groups, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``(B, cin, H, W)`` features, ``(B, emb_dim)`` embedding -> ``(B, cout, H, W)``."""
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.act(self.norm2(h)))
        return h + self.skip(x)


class UNet(nn.Module):
    """Time-conditional U-Net ``F(x, cond)`` for ``(B, C, H, W)`` images, any ``C``, with H,
    W divisible by 4 (:attr:`size_multiple`: 2 ** (levels - 1) for its 3 levels).

    Two stride-2 downsamplings (MNIST: 28 -> 14 -> 7), GroupNorm + SiLU residual blocks, a
    sinusoidal embedding of ``1000 cond`` through a 2-layer MLP added in every block, and
    skip connections between the resolutions (the layout of Ho et al. 2020 at three
    resolutions, without attention). With ``in_channels=1`` and channels (32, 64, 128) it
    has 930 241 parameters (0.93 M); with (16, 32, 64), 272 737 (0.27 M).

    In a config it is the partial node ``model.net`` (``_partial_: true``): the model that
    takes it completes it with ``in_channels``, which only the model knows (the runner
    gives the model the example shape).

    Args:
        in_channels: ``C`` of the input images.
        channels: widths at the three resolutions (full, half, quarter).
        emb_dim: width of the conditioning embedding (even).
        groups: GroupNorm groups (at most the width of each normalised layer).
        out_channels: channels of the output; None: ``in_channels``.
        n_classes: 0 (default): unconditional. ``K > 0``: class-conditional, with a learned
            embedding of ``K + 1`` classes, the last (index ``K``) the "null" class of
            classifier-free guidance (Ho & Salimans 2022, Sec. 3.2), added to the time
            embedding after its MLP (as diffusers' ``class_embedding``); created after all
            other layers, so an unconditional U-Net's initialisation under a seed is
            unchanged.

    Raises:
        ValueError: not 3 widths; ``n_classes`` negative.
    """

    #: H and W must be multiples of this: two stride-2 down-samplings (3 resolutions).
    size_multiple = 4

    def __init__(
        self,
        in_channels: PositiveInt,
        channels: tuple[PositiveInt, PositiveInt, PositiveInt] = (32, 64, 128),
        emb_dim: PositiveInt = 128,
        groups: PositiveInt = 8,
        out_channels: PositiveInt | None = None,
        n_classes: int = 0,
    ) -> None:
        super().__init__()
        if len(channels) != 3:
            raise ValueError(f"UNet needs 3 channel widths, got {list(channels)}")
        if n_classes < 0:
            raise ValueError(f"UNet's n_classes must be >= 0, got {n_classes}")
        c0, c1, c2 = channels
        self.in_channels = in_channels
        self.out_channels = in_channels if out_channels is None else out_channels
        self.emb_dim = emb_dim
        # creation order = initialisation order under a seed (and the state_dict order)
        self.time_mlp = nn.Sequential(
            nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.conv_in = nn.Conv2d(in_channels, c0, 3, padding=1)
        self.down0 = _ResBlock(c0, c0, emb_dim, groups)
        self.pool0 = nn.Conv2d(c0, c0, 3, stride=2, padding=1)
        self.down1 = _ResBlock(c0, c1, emb_dim, groups)
        self.pool1 = nn.Conv2d(c1, c1, 3, stride=2, padding=1)
        self.mid1 = _ResBlock(c1, c2, emb_dim, groups)
        self.mid2 = _ResBlock(c2, c2, emb_dim, groups)
        self.up1 = nn.ConvTranspose2d(c2, c1, 2, stride=2)
        self.dec1 = _ResBlock(2 * c1, c1, emb_dim, groups)
        self.up0 = nn.ConvTranspose2d(c1, c0, 2, stride=2)
        self.dec0 = _ResBlock(2 * c0, c0, emb_dim, groups)
        self.conv_out = nn.Sequential(
            nn.GroupNorm(min(groups, c0), c0),
            nn.SiLU(),
            nn.Conv2d(c0, self.out_channels, 3, padding=1),
        )
        self.n_classes = n_classes
        if n_classes:  # K real classes and the null class K
            self.label_emb = nn.Embedding(n_classes + 1, emb_dim)

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(B, in_channels, H, W)`` input, ``(B,)`` conditioning (embedded as
        ``sinusoidal_embedding(cond)``, i.e. of ``1000 cond``), and for a class-conditional
        U-Net ``(B,)`` int64 labels in ``[0, n_classes]`` (``n_classes``: the null class;
        None: all null) -> ``(B, out_channels, H, W)``.

        Raises:
            ValueError: ``x`` is not ``(B, in_channels, H, W)`` with H, W divisible by 4;
                labels given to an unconditional U-Net.
        """
        m = self.size_multiple
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[2] % m or x.shape[3] % m:
            raise ValueError(
                f"UNet needs (B, {self.in_channels}, H, W) input with H, W divisible by {m} "
                f"(its 2 down-samplings), got {tuple(x.shape)}"
            )
        emb = self.time_mlp(sinusoidal_embedding(cond, self.emb_dim))
        if self.n_classes:
            if labels is None:
                labels = torch.full((x.shape[0],), self.n_classes, device=x.device)
            emb = emb + self.label_emb(labels)
        elif labels is not None:
            raise ValueError("labels given to an unconditional UNet (n_classes=0)")
        h0 = self.down0(self.conv_in(x), emb)
        h1 = self.down1(self.pool0(h0), emb)
        h = self.mid2(self.mid1(self.pool1(h1), emb), emb)
        h = self.dec1(torch.cat([self.up1(h), h1], dim=1), emb)
        h = self.dec0(torch.cat([self.up0(h), h0], dim=1), emb)
        return self.conv_out(h)
