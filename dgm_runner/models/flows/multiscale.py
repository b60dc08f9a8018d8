"""The multi-scale architecture (Dinh et al. 2017, Sec. 3.6; Kingma & Dhariwal 2018,
Fig. 2): after each level but the last, half of the channels are factored out (they go
straight to the latent) and the next level transforms the other half only. And the flow
model built on it, the base class of RealNVP and Glow.

The latent is one flat vector per image: ``eps = (z_1, ..., z_L)``, ``z_i`` the factored-out
channels of level ``i`` and ``z_L`` the last level's output, ``D = C H W`` values in all,
standard normal under the model. A level may condition the prior of the half it factors out
on the half it keeps (Glow's learned prior, :class:`ConditionalSplitPrior`): written as the
shape-preserving flow layer ``z -> (z - mu(h)) / sigma(h)`` before the split, it keeps
``eps ~ N(0, I)`` and the temperature ``T`` of sampling is ``eps ~ N(0, T^2 I)``.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from dgm_runner.models.flows.actnorm import Reduce, data_dependent_init, uninitialized_actnorms
from dgm_runner.models.flows.base import FlowLayer, FlowSequence, standard_normal_log_prob


class ConditionalSplitPrior(FlowLayer):
    """Glow's learned prior of the factored-out channels (Kingma & Dhariwal 2018, their code's
    ``split2d``): on ``(B, C, H, W)`` the first ``C // 2`` channels ``h`` are kept, the rest
    ``z`` get ``N(mu(h), sigma(h)^2)`` with ``(mu, log sigma)`` a zero-initialised 3x3
    convolution of ``h``. As a flow layer: ``(h, z) -> (h, (z - mu) exp(-log sigma))``,
    log-determinant ``-sum log sigma``.

    Args:
        channels: ``C`` (>= 2).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.keep = channels // 2
        self.conv = nn.Conv2d(self.keep, 2 * (channels - self.keep), 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, H, W)`` -> ``((h, standardised z), (B,) -sum log sigma)``."""
        h, z = x[:, : self.keep], x[:, self.keep :]
        mu, log_sigma = self.conv(h).chunk(2, dim=1)
        eps = (z - mu) * torch.exp(-log_sigma)
        return torch.cat([h, eps], dim=1), -log_sigma.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``(h, eps) -> (h, mu(h) + sigma(h) eps)``."""
        h, eps = y[:, : self.keep], y[:, self.keep :]
        mu, log_sigma = self.conv(h).chunk(2, dim=1)
        return torch.cat([h, mu + eps * torch.exp(log_sigma)], dim=1)


class MultiScaleFlow(nn.Module):
    """A normalizing flow on images (module docstring): ``preprocess``, then level ``i``'s
    layers, then (all levels but the last) ``splits[i]`` and the factoring-out of the last
    ``C - C // 2`` channels.

    Args:
        image_shape: ``(C, H, W)`` of the data.
        preprocess: the data's first layer (logit or centring,
            :mod:`dgm_runner.models.flows.preprocessing`).
        levels: one :class:`FlowSequence` per level.
        splits: a shape-preserving layer before each factoring-out (``len(levels) - 1`` of
            them; ``None``: nothing, the factored-out channels are standard normal).
        shapes: ``(C, H, W)`` after each level, as the levels compute them (their channels
            before the factoring-out).

    Subclasses (:class:`~dgm_runner.models.flows.realnvp.RealNVP`,
    :class:`~dgm_runner.models.flows.glow.Glow`) build the levels. Data are in [0, 1]^D
    (dequantized pixels); ``log_prob`` is their density, in nats.

    Raises:
        ValueError: ``splits`` or ``shapes`` do not match ``levels``.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        preprocess: FlowLayer,
        levels: list[FlowSequence],
        splits: list[Optional[FlowLayer]],
        shapes: list[tuple[int, int, int]],
    ) -> None:
        super().__init__()
        if len(splits) != len(levels) - 1 or len(shapes) != len(levels):
            raise ValueError("a multi-scale flow needs one split per level but the last")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.preprocess = preprocess
        self.levels = nn.ModuleList(levels)
        self.splits = nn.ModuleList(s if s is not None else nn.Identity() for s in splits)
        self.latent_shapes = [(c - c // 2, h, w) for c, h, w in shapes[:-1]] + [shapes[-1]]
        self._init_checked = False
        self.register_load_state_dict_post_hook(_recheck_init)

    @property
    def n_dims(self) -> int:
        """``D = C * H * W``."""
        c, h, w = self.image_shape
        return c * h * w

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data to latent.

        Args:
            x: ``(B, C, H, W)`` in [0, 1].

        Returns:
            ``eps`` ``(B, D)`` (the latent, standard normal under the model) and ``(B,)``
            ``log |det d eps / dx|`` in nats, the preprocessing's included.
        """
        h, log_det = self.preprocess(x)
        parts = []
        for i, level in enumerate(self.levels):
            h, ld = level(h)
            log_det = log_det + ld
            if i < len(self.splits):
                split = self.splits[i]
                if isinstance(split, FlowLayer):
                    h, ld = split(h)
                    log_det = log_det + ld
                keep = h.shape[1] // 2
                parts.append(h[:, keep:].flatten(1))
                h = h[:, :keep]
        parts.append(h.flatten(1))
        return torch.cat(parts, dim=1), log_det

    def inverse(self, eps: torch.Tensor) -> torch.Tensor:
        """Latent to data: ``(B, D)`` -> ``(B, C, H, W)`` (in [0, 1] for latents of the
        data; not clamped)."""
        sizes = [c * h * w for c, h, w in self.latent_shapes]
        pieces = eps.split(sizes, dim=1)
        b = eps.shape[0]
        h = pieces[-1].reshape(b, *self.latent_shapes[-1])
        for i in reversed(range(len(self.levels))):
            if i < len(self.splits):
                out = pieces[i].reshape(b, *self.latent_shapes[i])
                h = torch.cat([h, out], dim=1)
                split = self.splits[i]
                if isinstance(split, FlowLayer):
                    h = split.inverse(h)
            h = self.levels[i].inverse(h)
        return self.preprocess.inverse(h)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` in [0, 1] -> ``(B,)`` ``log p(x)`` in nats per example: the
        density of the data in [0, 1]^D (before the ``ln 256`` offset of 8-bit units),
        ``log N(eps; 0, I) + log |det d eps / dx|``."""
        eps, log_det = self(x)
        return standard_normal_log_prob(eps) + log_det

    def sample(
        self, n: int, temperature: float = 1.0, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """``(n, C, H, W)`` samples ``inverse(eps)``, ``eps ~ N(0, T^2 I)`` (``T`` the
        temperature; 1: the model), drawn from ``generator``; not clamped to [0, 1]."""
        ref = next(iter(self.parameters()), None)  # a parameter-free flow: CPU, default dtype
        device = ref.device if ref is not None else torch.device("cpu")
        dtype = ref.dtype if ref is not None else torch.get_default_dtype()
        eps = torch.randn(n, self.n_dims, generator=generator, device=device, dtype=dtype)
        return self.inverse(temperature * eps)

    # ------------------------------------------------------------------ initialisation

    @property
    def data_init_pending(self) -> bool:
        """Whether :meth:`data_init` has yet to look at this model (a Python flag, no
        device sync; reset when weights are loaded)."""
        return not self._init_checked

    def data_init(self, x: torch.Tensor, reduce: Optional[Reduce] = None) -> int:
        """Data-dependent initialisation of every actnorm not yet initialised, from one
        forward pass on ``x`` (:func:`~dgm_runner.models.flows.actnorm.data_dependent_init`;
        ``reduce`` sums the statistics over data-parallel processes).

        Returns:
            The number of layers initialised.
        """
        count = data_dependent_init(self, lambda: self.log_prob(x), reduce)
        self._init_checked = True
        return count

    def check_data(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` (one line) unless every value of ``x`` lies in [0, 1] (the
        flows' data: dequantized pixels)."""
        if not (x.min() >= 0 and x.max() <= 1):
            raise ValueError(
                f"flows need data in [0, 1] (dequantized pixels), got values in "
                f"[{float(x.min()):.4g}, {float(x.max()):.4g}]"
            )

    def actnorms_initialized(self) -> bool:
        """Whether every actnorm of the model is initialised (a device sync per layer)."""
        return not uninitialized_actnorms(self)


def _recheck_init(module: Any, incompatible_keys: object) -> None:
    """Load-state-dict post-hook of :class:`MultiScaleFlow`: the loaded actnorms may not be
    initialised."""
    module._init_checked = False


def check_divisible(image_shape: tuple[int, ...], squeezes: int, model: str) -> None:
    """Raise ``ValueError`` (one line) unless ``H`` and ``W`` are divisible by
    ``2 ** squeezes``.

    Args:
        image_shape: ``(C, H, W)``.
        squeezes: how many squeeze operations the model applies.
        model: the model's config name, for the message (``"model=glow"``).
    """
    _, h, w = image_shape
    factor = 2**squeezes
    if h % factor or w % factor:
        raise ValueError(
            f"{model}: {squeezes} squeeze(s) need a height and width divisible by {factor}, "
            f"got {h}x{w} (fewer levels/scales?)"
        )
