"""DCGAN-style generator/discriminator pair (Radford et al. 2016) for 28x28, 32x32 and
64x64 images of any channel count."""

from __future__ import annotations

import torch
from torch import nn

from dgm_runner.config import PositiveInt

#: Side -> (side of the generator's first feature map, number of 2x up-samplings). 28: the
#: MNIST network of this project (7 -> 14 -> 28); 32 and 64: the DCGAN stacks of Radford et al.
#: (2016), from 4x4 doubling to the side.
SIDES: dict[int, tuple[int, int]] = {28: (7, 2), 32: (4, 3), 64: (4, 4)}


class DCGAN(nn.Module):
    """A generator ``G: (B, latent_dim) -> (B, C, S, S)`` in [0, 1] and a discriminator
    (critic) ``D: (B, C, S, S) -> (B,)`` logits / critic values, for ``S`` in 28, 32, 64
    and any ``C``.

    With ``n`` up-samplings (``S = s0 * 2^n``; :data:`SIDES`) and widths ``w_i``:

    * G: Linear -> ``(w_0, s0, s0)`` -> [BN, ReLU -> ConvT 4/2/1 -> ``w_{i+1}``] x (n - 1) ->
      BN, ReLU -> ConvT 4/2/1 -> ``(C, S, S)`` -> Sigmoid.
    * D: [Conv 4/2/1 -> LeakyReLU(0.2)] x n (widths ``d, 2d, 4d, ...``) -> Linear -> 1.

    ``S = 28``: ``s0 = 7``, G widths ``4g, 2g`` (7 -> 14 -> 28), D widths ``d, 2d``
    (28 -> 14 -> 7): this project's MNIST network, unchanged. ``S = 32`` and ``64``: the
    stacks of Radford et al. (2016): G from ``4x4`` with widths ``g 2^(n-1), ..., 2g, g``
    doubling to ``S`` (32: ``4g, 2g, g``; 64: ``8g, 4g, 2g, g``), D halving ``S`` to
    ``4x4`` (their first ``ConvT 4/1/0`` from ``1x1`` and last ``Conv 4/1/0`` to ``1x1`` are
    the Linear layers here). D has no batch norm, so the same critic serves WGAN-GP, whose
    per-example gradient penalty batch norm would break (Gulrajani et al. 2017, sec. 4).

    Args:
        image_shape: ``(C, S, S)``, ``S`` in 28, 32, 64 (set by the runner).
        latent_dim: size of z.
        g_channels: g, the generator's base width.
        d_channels: d, the discriminator's base width.
        g_batchnorm: batch norm in the generator before each up-sampling (DCGAN, Radford et
            al. 2016); False: none (a data-parallel run on CPU then follows the
            single-process run exactly: batch norm there normalises each process's shard).

    Raises:
        ValueError: (one line) images other than ``(C, 28, 28)``, ``(C, 32, 32)``,
            ``(C, 64, 64)``.
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
        shape = tuple(int(s) for s in image_shape)
        if len(shape) != 3 or shape[1] != shape[2] or shape[1] not in SIDES:
            raise ValueError(
                "DCGAN needs (C, 28, 28), (C, 32, 32) or (C, 64, 64) images (any C), got "
                f"{tuple(image_shape)}"
            )
        self.image_shape = shape
        self.latent_dim = latent_dim
        c = shape[0]
        start, n = SIDES[shape[1]]
        # generator widths before each up-sampling: 28 -> 4g, 2g; 32 -> 4g, 2g, g; 64 -> 8g, ...
        top = 2**n if start == 7 else 2 ** (n - 1)
        widths = [g_channels * top // 2**i for i in range(n)]

        def norm(channels: int) -> nn.Module:
            return nn.BatchNorm2d(channels) if g_batchnorm else nn.Identity()

        # creation order = initialisation order under a seed (and the state_dict keys)
        layers: list[nn.Module] = [
            nn.Linear(latent_dim, widths[0] * start * start),
            nn.Unflatten(1, (widths[0], start, start)),
        ]
        for i, width in enumerate(widths):
            out = widths[i + 1] if i + 1 < n else c
            layers += [norm(width), nn.ReLU(), nn.ConvTranspose2d(width, out, 4, 2, 1)]
        self.generator = nn.Sequential(*layers, nn.Sigmoid())
        d_widths = [d_channels * 2**i for i in range(n)]
        critic: list[nn.Module] = []
        for i, width in enumerate(d_widths):
            critic += [nn.Conv2d(d_widths[i - 1] if i else c, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        self.discriminator = nn.Sequential(
            *critic, nn.Flatten(), nn.Linear(d_widths[-1] * start * start, 1)
        )

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, latent_dim)`` -> ``(B, C, S, S)`` images in [0, 1]."""
        return self.generator(z)

    def discriminate(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, S)`` -> ``(B,)`` discriminator logits (critic values for WGAN)."""
        return self.discriminator(x).squeeze(1)
