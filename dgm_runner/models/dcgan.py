"""DCGAN-style generator/discriminator pair for 28x28 images (Radford et al. 2016)."""

from __future__ import annotations

import torch
from torch import nn

from dgm_runner.config import PositiveInt


class DCGAN(nn.Module):
    """A generator ``G: (B, latent_dim) -> (B, C, 28, 28)`` in [0, 1] and a discriminator
    (critic) ``D: (B, C, 28, 28) -> (B,)`` logits / critic values.

    G: Linear -> (4c, 7, 7) -> BN, ReLU -> ConvT 4/2/1 -> (2c, 14, 14) -> BN, ReLU ->
    ConvT 4/2/1 -> (C, 28, 28) -> Sigmoid. D: Conv 4/2/1 -> (c, 14, 14), LeakyReLU(0.2)
    -> Conv 4/2/1 -> (2c, 7, 7), LeakyReLU(0.2) -> Linear -> 1. D has no batch norm, so
    the same critic serves WGAN-GP, whose per-example gradient penalty batch norm would
    break (Gulrajani et al. 2017, sec. 4).

    Args:
        image_shape: ``(C, 28, 28)`` (set by the runner).
        latent_dim: size of z.
        g_channels: c for the generator.
        d_channels: c for the discriminator.
        g_batchnorm: batch norm after the generator's first two layers (DCGAN, Radford et
            al. 2016); False: none (a data-parallel run on CPU then follows the
            single-process run exactly: batch norm there normalises each process's shard).

    Raises:
        ValueError: images are not 28x28.
    """

    def __init__(
        self,
        image_shape: tuple[int, ...],
        latent_dim: PositiveInt = 64,
        g_channels: PositiveInt = 64,
        d_channels: PositiveInt = 64,
        g_batchnorm: bool = True,
    ) -> None:
        super().__init__()
        if len(image_shape) != 3 or tuple(image_shape[1:]) != (28, 28):
            raise ValueError(f"DCGAN needs (C, 28, 28) images, got {tuple(image_shape)}")
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        c, g = image_shape[0], g_channels

        def norm(channels: int) -> nn.Module:
            return nn.BatchNorm2d(channels) if g_batchnorm else nn.Identity()

        self.generator = nn.Sequential(
            nn.Linear(latent_dim, 4 * g * 7 * 7),
            nn.Unflatten(1, (4 * g, 7, 7)),
            norm(4 * g),
            nn.ReLU(),
            nn.ConvTranspose2d(4 * g, 2 * g, 4, 2, 1),
            norm(2 * g),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * g, c, 4, 2, 1),
            nn.Sigmoid(),
        )
        d = d_channels
        self.discriminator = nn.Sequential(
            nn.Conv2d(c, d, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(d, 2 * d, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * d * 7 * 7, 1),
        )

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, latent_dim)`` -> ``(B, C, 28, 28)`` images in [0, 1]."""
        return self.generator(z)

    def discriminate(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, 28, 28)`` -> ``(B,)`` discriminator logits (critic values for WGAN)."""
        return self.discriminator(x).squeeze(1)
