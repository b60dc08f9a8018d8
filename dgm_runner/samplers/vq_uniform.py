"""Stage-1 grid of a VQ-VAE: decode code grids drawn uniformly at random."""

from __future__ import annotations

import torch
from torch import nn

from dgm_runner.models.checks import require
from dgm_runner.models.vqvae import VQVAE
from dgm_runner.samplers.base import Sampler


class UniformCodeSampler(Sampler):
    """Decode ``(n, h, w)`` grids of i.i.d. uniform code indices with a VQ-VAE:
    ``(n, C, H, W)`` images in [0, 1], deterministic given ``generator``.

    This is the VQ-VAE with the uniform prior it is trained under (van den Oord et al.
    2017, Sec. 3.1); such samples look like patchwork, not garments. Real samples need the
    learned prior of stage 2 (``experiment=vqvae_fashion_prior``, ``sampler=autoregressive``).
    The grid mainly shows what the individual codes decode to.
    """

    def check_model(self, model: nn.Module) -> None:
        require(model, VQVAE, "sampler 'vq_uniform'")

    @torch.no_grad()
    def sample(self, model: VQVAE, n: int, generator: torch.Generator) -> torch.Tensor:
        device = next(model.parameters()).device
        codes = torch.randint(
            0, model.n_codes, (n, *model.grid_shape), generator=generator, device=device
        )
        return model.decode_indices(codes)
