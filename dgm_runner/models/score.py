"""Score networks: noise-conditional ``s(x, sigma)`` for 2-D data (Song & Ermon 2019) and a
time-conditional U-Net ``s(x, t)`` for images under a VE/VP SDE (Song et al. 2021)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from dgm_runner.config import PositiveFloat, PositiveInt
from dgm_runner.sdes import SDE, make_sde


def geometric_sigmas(sigma_max: float, sigma_min: float, n_levels: int) -> torch.Tensor:
    """``(n_levels,)`` noise levels from ``sigma_max`` down to ``sigma_min``, geometrically
    spaced. Index 0 is the largest: Song & Ermon (2019) write sigma_1 > ... > sigma_L,
    the convention of seed 001's Algorithm 1 (its sigma_L is the smallest level)."""
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), n_levels))


class NoiseConditionalScoreMLP(nn.Module):
    """``s_theta(x, sigma)`` for ``(B, D)`` points: an MLP on ``[x, log sigma]`` whose output
    is divided by sigma (the scaling of Song & Ermon 2020, "Improved techniques", sec. 3.3,
    which makes ``||s|| ~ 1/sigma`` as for the true score).

    Args:
        image_shape: ``(D,)`` (set by the runner).
        hidden_dim: width of the hidden layers.
        n_layers: number of hidden layers.
        sigma_min, sigma_max, n_levels: the geometric noise levels (buffer ``sigmas``,
            largest first), shared by the DSM objective and the annealed Langevin sampler.
        n_classes: unused.
    """

    def __init__(
        self,
        image_shape: tuple[int, ...],
        hidden_dim: PositiveInt = 128,
        n_layers: PositiveInt = 3,
        sigma_min: PositiveFloat = 0.01,
        sigma_max: PositiveFloat = 5.0,
        n_levels: PositiveInt = 10,
        n_classes: int = 1,
    ) -> None:
        super().__init__()
        if len(image_shape) != 1:
            raise ValueError(f"NoiseConditionalScoreMLP needs (N, D) data, got examples of shape {tuple(image_shape)}")
        self.image_shape = tuple(image_shape)
        d = image_shape[0]
        self.register_buffer("sigmas", geometric_sigmas(sigma_max, sigma_min, n_levels))
        layers: list[nn.Module] = [nn.Linear(d + 1, hidden_dim), nn.SiLU()]
        for _ in range(n_layers - 1):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.SiLU()]
        layers.append(nn.Linear(hidden_dim, d))
        self.net = nn.Sequential(*layers)

    def score(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` points, ``(B,)`` noise levels -> ``(B, D)`` estimate of
        ``grad_x log q_sigma(x)``."""
        h = torch.cat([x, torch.log(sigma)[:, None]], dim=1)
        return self.net(h) / sigma[:, None]


class _ResBlock(nn.Module):
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
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.act(self.norm2(h)))
        return h + self.skip(x)


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-style ``(B,) -> (B, dim)`` embedding of ``1000 t`` (Ho et al. 2020)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = 1000.0 * t[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class ScoreUNet(nn.Module):
    """Time-conditional U-Net ``s_theta(x, t)`` for ``(B, C, H, W)`` images with H, W
    divisible by 4 (MNIST: 28 -> 14 -> 7), GroupNorm + SiLU residual blocks, a sinusoidal
    time embedding, skip connections; the output is divided by the marginal std of the
    SDE at t (Song et al. 2021, their NCSN++ "scale_by_sigma" for VE; also used for VP).
    With channels (32, 64, 128) it has 0.93 M parameters.

    Args:
        image_shape: ``(C, H, W)`` (set by the runner).
        channels: widths at the three resolutions.
        emb_dim: time-embedding width.
        groups: GroupNorm groups.
        sde: ``ve`` or ``vp``; the SDE's parameters follow.
        n_classes: unused.
    """

    def __init__(
        self,
        image_shape: tuple[int, ...],
        channels: tuple[int, int, int] = (32, 64, 128),
        emb_dim: PositiveInt = 128,
        groups: PositiveInt = 8,
        sde: Literal["ve", "vp"] = "ve",
        sigma_min: PositiveFloat = 0.01,
        sigma_max: PositiveFloat = 50.0,
        beta_min: PositiveFloat = 0.1,
        beta_max: PositiveFloat = 20.0,
        n_classes: int = 10,
    ) -> None:
        super().__init__()
        if len(image_shape) != 3 or image_shape[1] % 4 or image_shape[2] % 4:
            raise ValueError(f"ScoreUNet needs (C, H, W) images with H, W divisible by 4, got {tuple(image_shape)}")
        if len(channels) != 3:
            raise ValueError(f"ScoreUNet needs 3 channel widths, got {list(channels)}")
        self.image_shape = tuple(image_shape)
        self.sde: SDE = make_sde(sde, sigma_min, sigma_max, beta_min, beta_max)
        c0, c1, c2 = channels
        cin = image_shape[0]
        self.emb_dim = emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(cin, c0, 3, padding=1)
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
        self.conv_out = nn.Sequential(nn.GroupNorm(min(groups, c0), c0), nn.SiLU(), nn.Conv2d(c0, cin, 3, padding=1))

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` noisy images at times ``(B,)`` -> ``(B, C, H, W)`` score estimate."""
        emb = self.time_mlp(sinusoidal_embedding(t, self.emb_dim))
        h0 = self.down0(self.conv_in(x), emb)
        h1 = self.down1(self.pool0(h0), emb)
        h = self.mid2(self.mid1(self.pool1(h1), emb), emb)
        h = self.dec1(torch.cat([self.up1(h), h1], dim=1), emb)
        h = self.dec0(torch.cat([self.up0(h), h0], dim=1), emb)
        _, std = self.sde.marginal(x, t)
        return self.conv_out(h) / std.reshape(-1, 1, 1, 1)
