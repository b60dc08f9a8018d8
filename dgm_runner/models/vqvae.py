"""VQ-VAE (van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation
Learning"; seed 003 programming question 1 and written question 4).

Notation follows the seed: ``u = z_e(x)`` is the encoder output, ``z = e_k`` the nearest
codebook vector. ``sg[.]`` (stop-gradient) is ``.detach()``.
"""

from __future__ import annotations

from typing import Annotated, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from dgm_runner.config import NonNegativeInt, PositiveInt, Range

# Laplace smoothing of the EMA cluster sizes (as in Sonnet's VectorQuantizerEMA): keeps
# e_k = m_k / N_k finite for codes that received no vectors yet.
_EMA_EPS = 1e-5


class Quantized(NamedTuple):
    """Output of :meth:`VQVAE.quantize` for a ``(B, D, h, w)`` encoder output.

    Attributes:
        z_q: ``(B, D, h, w)`` straight-through quantized latents ``u + sg[z - u]``: the
            forward value is the nearest code ``z``, the backward pass copies the decoder's
            gradient to ``u`` (the straight-through estimator, van den Oord et al. 2017,
            Sec. 3.2; Bengio et al. 2013).
        indices: ``(B, h, w)`` int64 index of the nearest code at each grid position.
        codebook_loss: ``(B,)`` ``||sg[u] - z||^2`` summed over the grid and D (moves only
            the codebook; the first term of the seed's L_VQ).
        commitment_loss: ``(B,)`` ``||u - sg[z]||^2`` summed over the grid and D (moves only
            the encoder; weighted by beta in the objective).
    """

    z_q: torch.Tensor
    indices: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor


def code_usage(indices: torch.Tensor, n_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codebook perplexity and fraction of codes in use for a set of code indices.

    With ``p_k`` the frequency of code k among all entries of ``indices``, the perplexity
    is ``exp(-sum_k p_k log p_k)`` (the exponential of the entropy of the code histogram,
    in [1, n_codes]): it equals the number of codes in use when they are used equally
    often, and is lower when usage is uneven.

    Args:
        indices: int64 tensor of any shape with values in ``[0, n_codes)``.
        n_codes: K.

    Returns:
        ``(perplexity, fraction)``: 0-d float tensors; ``fraction`` = (number of distinct
        codes in ``indices``) / K.
    """
    counts = torch.bincount(indices.flatten(), minlength=n_codes).float()
    p = counts / counts.sum()
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return entropy.exp(), (counts > 0).float().mean()


class VQVAE(nn.Module):
    """VQ-VAE with a ``(h, w) = (H/4, W/4)`` grid of D-dim latents (7x7 for 28x28 images).

    Encoder: Conv 4x4/2 (C -> hidden) -> ReLU -> Conv 4x4/2 (hidden -> hidden) -> ReLU ->
    Conv 3x3 -> ReLU -> Conv 1x1 (hidden -> D): ``(B, C, H, W) -> u (B, D, H/4, W/4)``.
    Quantizer: codebook ``nn.Embedding(K, D)``; each grid vector ``u`` is replaced by its
    nearest code ``z = e_k``, ``k = argmin_j ||u - e_j||^2`` (Eq. 1-2 of the paper), with
    the straight-through estimator for the gradient (see :class:`Quantized`).
    Decoder: Conv 3x3 (D -> hidden) -> ReLU -> Conv 3x3 -> ReLU -> ConvTranspose 4x4/2 ->
    ReLU -> ConvTranspose 4x4/2 (hidden -> C): logits; the mean image is their sigmoid.

    Codebook training:

    * ``ema=False`` (default): the codebook is a parameter trained by the codebook loss
      ``||sg[u] - z||^2`` (paper Eq. 3, second term).
    * ``ema=True``: the codebook is not a gradient-trained parameter; during training
      (``model.train()`` and gradients enabled) every :meth:`quantize` call updates it by
      exponential moving averages (paper Appendix A.1, Eqs. 6-8):
      ``N_k <- g N_k + (1-g) n_k``, ``m_k <- g m_k + (1-g) sum_{u assigned to k} u``,
      ``e_k = m_k / N_k`` (N Laplace-smoothed), with ``g = ema_decay``. The objective then
      drops the codebook loss (it is still returned, for logging).

    Dead-code restarts (both modes, training only): a code assigned no vector for
    ``restart_after`` consecutive training batches is re-initialised to a random encoder
    output of the current batch (``0`` disables). Without them the Uniform(-1/K, 1/K)
    initialisation leaves most codes unused (codebook collapse: on Fashion-MNIST a few
    codes carry everything).

    Args:
        image_shape: ``(C, H, W)``; H and W must be divisible by 4 (set by the runner).
        n_codes: K, the codebook size (seed 004: 64..512).
        code_dim: D, the dimension of each code.
        hidden: channels of the conv layers.
        ema: EMA codebook updates instead of the codebook loss.
        ema_decay: g in (0, 1) (paper: 0.99).
        restart_after: training batches without use before a code is restarted (0: never).

    Raises:
        ValueError: H or W not divisible by 4.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        n_codes: PositiveInt = 128,
        code_dim: PositiveInt = 16,
        hidden: PositiveInt = 64,
        ema: bool = False,
        ema_decay: Annotated[float, Range(gt=0, lt=1)] = 0.99,
        restart_after: NonNegativeInt = 100,
    ) -> None:
        super().__init__()
        c, h, w = (int(s) for s in image_shape)
        if h % 4 or w % 4:
            raise ValueError(
                f"model=vqvae needs image height and width divisible by 4, got {h}x{w}"
            )
        if not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay={ema_decay} must be in (0, 1)")
        self.image_shape = (c, h, w)
        self.grid_shape = (h // 4, w // 4)
        self.n_codes, self.code_dim = n_codes, code_dim
        self.ema, self.ema_decay, self.restart_after = ema, ema_decay, restart_after
        self.encoder = nn.Sequential(
            nn.Conv2d(c, hidden, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, code_dim, 1),
        )
        self.codebook = nn.Embedding(n_codes, code_dim)
        # Uniform(-1/K, 1/K), the initialisation of the paper's reference implementation.
        nn.init.uniform_(self.codebook.weight, -1.0 / n_codes, 1.0 / n_codes)
        self.decoder = nn.Sequential(
            nn.Conv2d(code_dim, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(hidden, hidden, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(hidden, c, 4, stride=2, padding=1),
        )
        # Training batches since each code was last assigned a vector (for restarts).
        self.register_buffer("unused_steps", torch.zeros(n_codes, dtype=torch.long))
        if ema:
            self.codebook.weight.requires_grad_(False)
            self.register_buffer("ema_count", torch.ones(n_codes))  # N_k
            self.register_buffer("ema_sum", self.codebook.weight.detach().clone())  # m_k

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images -> ``u = z_e(x)`` ``(B, D, H/4, W/4)`` (continuous)."""
        return self.encoder(x)

    def nearest(self, u: torch.Tensor) -> torch.Tensor:
        """``(B, D, h, w)`` -> ``(B, h, w)`` int64 index of the nearest code (squared
        Euclidean distance; ties go to the lowest index)."""
        flat = u.permute(0, 2, 3, 1).reshape(-1, self.code_dim)
        e = self.codebook.weight
        # ||u - e||^2 = ||u||^2 - 2 u.e + ||e||^2; ||u||^2 does not change the argmin.
        dist = e.pow(2).sum(1)[None, :] - 2.0 * flat @ e.t()
        return dist.argmin(dim=1).reshape(u.shape[0], *u.shape[2:])

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """``(B, h, w)`` int64 code indices -> ``(B, D, h, w)`` code vectors."""
        return self.codebook(indices).permute(0, 3, 1, 2)

    def quantize(self, u: torch.Tensor) -> Quantized:
        """Nearest-code quantization of ``u`` ``(B, D, h, w)`` with the straight-through
        estimator; returns a :class:`Quantized` (losses per example, summed over the grid
        and D). In training mode with gradients enabled this first updates the codebook:
        EMA step (``ema=True``) and dead-code restarts (see the class docstring)."""
        updating = self.training and torch.is_grad_enabled()  # not under no_grad (evaluation)
        with torch.no_grad():
            indices = self.nearest(u)
            if updating:
                self._update_codebook(u.detach(), indices)
        z = self.embed(indices)
        codebook_loss = (u.detach() - z).pow(2).flatten(1).sum(1)
        commitment_loss = (u - z.detach()).pow(2).flatten(1).sum(1)
        z_q = u + (z - u).detach()  # forward: z; backward: identity to u
        return Quantized(z_q, indices, codebook_loss, commitment_loss)

    @torch.no_grad()
    def _update_codebook(self, u: torch.Tensor, indices: torch.Tensor) -> None:
        """EMA step (paper Appendix A.1, Eqs. 6-8) when ``ema``, then dead-code restarts:
        codes unused for ``restart_after`` batches are set to random rows of ``u`` (their
        indices are not re-assigned in this batch). ``u`` ``(B, D, h, w)``, ``indices``
        ``(B, h, w)``."""
        flat = u.permute(0, 2, 3, 1).reshape(-1, self.code_dim)
        onehot = F.one_hot(indices.flatten(), self.n_codes).to(flat.dtype)  # (N, K)
        counts = onehot.sum(0)
        weight = self.codebook.weight
        if self.ema:
            g = self.ema_decay
            self.ema_count.mul_(g).add_(counts, alpha=1 - g)
            self.ema_sum.mul_(g).add_(onehot.t() @ flat, alpha=1 - g)
            total = self.ema_count.sum()
            smoothed = (self.ema_count + _EMA_EPS) / (total + self.n_codes * _EMA_EPS) * total
            weight.copy_(self.ema_sum / smoothed[:, None])
        self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
        if not self.restart_after:
            return
        dead = torch.nonzero(self.unused_steps >= self.restart_after).flatten()
        if dead.numel():
            pick = torch.randint(0, flat.shape[0], (dead.numel(),), device=flat.device)
            weight[dead] = flat[pick]
            self.unused_steps[dead] = 0
            if self.ema:
                self.ema_sum[dead] = flat[pick]
                self.ema_count[dead] = 1.0

    def decode_logits(self, z_q: torch.Tensor) -> torch.Tensor:
        """``(B, D, h, w)`` quantized latents -> ``(B, C, H, W)`` pre-sigmoid outputs."""
        return self.decoder(z_q)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """``(B, D, h, w)`` quantized latents -> ``(B, C, H, W)`` images in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z_q))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """``(B, h, w)`` int64 code indices -> ``(B, C, H, W)`` images in [0, 1]."""
        return self.decode(self.embed(indices))

    def encode_indices(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images -> ``(B, h, w)`` int64 indices of their nearest codes
        (no codebook update)."""
        return self.nearest(self.encode(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Quantized]:
        """``(B, C, H, W)`` -> ``(reconstruction logits (B, C, H, W), Quantized)``."""
        q = self.quantize(self.encode(x))
        return self.decode_logits(q.z_q), q

    def extra_repr(self) -> str:
        return f"K={self.n_codes}, D={self.code_dim}, grid={self.grid_shape}, ema={self.ema}"
