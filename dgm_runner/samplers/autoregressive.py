"""Ancestral sampling of autoregressive models, one conditional at a time: the pixels of
an autoregressive image model (MADE, PixelCNN: :mod:`dgm_runner.models.autoregressive`),
or the code grid of a VQ-VAE's PixelCNN prior, decoded by the frozen VQ-VAE (van den Oord
et al. 2017, Sec. 3.3; seed 003 programming question 1)."""

from __future__ import annotations

import torch
from torch import nn

from dgm_runner.config import PositiveFloat
from dgm_runner.models.autoregressive import GREY_LEVELS, AutoregressiveImageModel
from dgm_runner.models.pixelcnn import PixelCNNPrior
from dgm_runner.progress import Bar
from dgm_runner.samplers.base import Sampler


def draw_categorical(
    logits: torch.Tensor, temperature: float, generator: torch.Generator
) -> torch.Tensor:
    """``(N, K)`` logits -> ``(N,)`` int64 draws from ``softmax(logits / temperature)``
    (computed in float64), with :func:`torch.multinomial` and ``generator``."""
    probs = torch.softmax((logits / temperature).double(), dim=1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def draw_bernoulli(
    logits: torch.Tensor, temperature: float, generator: torch.Generator
) -> torch.Tensor:
    """Logits of any shape -> 0/1 draws (float, same dtype) from
    ``Bernoulli(sigmoid(logits / temperature))``: ``u < p`` with ``u ~ U[0, 1)`` from
    ``generator`` (float64)."""
    p = torch.sigmoid((logits / temperature).double())
    u = torch.rand(p.shape, generator=generator, device=p.device, dtype=torch.float64)
    return (u < p).to(logits.dtype)


class AutoregressiveSampler(Sampler):
    """Ancestral sampling, one conditional at a time, tempered by ``temperature``
    (``temperature = 1`` samples the model; lower values sharpen every conditional).
    Deterministic given ``generator``.

    * An :class:`AutoregressiveImageModel` (MADE, PixelCNN): ``x_d ~ p(x_d | x_<d)`` in the
      model's generation order, one network pass per step (784 for 28x28 grey images);
      Bernoulli pixels are ``sigmoid(logit / T)`` draws, 256-level pixels
      ``softmax(logits / T)`` draws divided by 255. A mask ensemble (MADE with ``K``
      masks, ``p = (1/K) sum_k p_k``) is sampled exactly as the mixture it is: each sample
      picks its mask uniformly, then is drawn from that mask's model (one pass per pixel
      per mask in use).
    * A :class:`PixelCNNPrior`: ``c_i ~ softmax(logits_i / T)`` for ``i = 1..h*w`` in raster
      order (one pass per position: 49 for the 7x7 grid), then the frozen VQ-VAE decodes
      the grid: ``(n, C, H, W)`` mean images in [0, 1].

    Args:
        temperature: > 0.

    Raises:
        ValueError: ``temperature <= 0``.
    """

    def __init__(self, temperature: PositiveFloat = 1.0) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        self.temperature = temperature

    def check_model(self, model: nn.Module) -> None:
        if not isinstance(model, (AutoregressiveImageModel, PixelCNNPrior)):
            raise TypeError(
                "sampler 'autoregressive' needs an autoregressive image model (MADE, "
                f"PixelCNN) or a PixelCNNPrior, got {type(model).__name__}"
            )

    @torch.no_grad()
    def sample_codes(
        self, model: PixelCNNPrior, n: int, generator: torch.Generator
    ) -> torch.Tensor:
        """``(n, h, w)`` int64 code grids drawn from the prior."""
        h, w = model.grid_shape
        device = next(model.parameters()).device
        codes = torch.zeros(n, h, w, dtype=torch.long, device=device)
        with Bar(h * w, f"code positions ({n} samples)", "position") as bar:
            for r in range(h):
                for c in range(w):
                    logits = model(codes)[:, :, r, c]
                    codes[:, r, c] = draw_categorical(logits, self.temperature, generator)
                    bar.update()
        return codes

    @torch.no_grad()
    def sample_pixels(
        self, model: AutoregressiveImageModel, n: int, generator: torch.Generator
    ) -> torch.Tensor:
        """``(n, C, H, W)`` images drawn from the model (values 0/1, or ``k / 255``)."""
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
        x = torch.zeros(n, *model.image_shape, device=device, dtype=dtype)
        if model.n_orders > 1:  # the mixture's component of each sample
            which = torch.randint(model.n_orders, (n,), generator=generator, device=device)
        else:
            which = torch.zeros(n, dtype=torch.long, device=device)
        groups = [(k, (which == k).nonzero().squeeze(1)) for k in range(model.n_orders)]
        groups = [(k, rows) for k, rows in groups if rows.numel()]
        steps = {k: model.generation_steps(k).to(device) for k, _ in groups}
        total = sum(len(s) for s in steps.values())
        desc = f"pixels ({n} samples, {len(groups)} orderings)"
        with Bar(total, desc, "pixel") as bar:
            for k, rows in groups:
                part = torch.zeros(len(rows), *model.image_shape, device=device, dtype=dtype)
                flat = part.view(len(rows), -1)
                for dims in steps[k]:
                    logits = model.step_logits(part, k, dims)  # (m, G) or (m, 256, G)
                    if model.n_levels == 2:
                        flat[:, dims] = draw_bernoulli(logits, self.temperature, generator)
                    else:
                        step = logits.transpose(1, 2)  # (m, G, 256)
                        levels = draw_categorical(
                            step.reshape(-1, GREY_LEVELS), self.temperature, generator
                        )
                        flat[:, dims] = levels.view(len(rows), -1).to(part.dtype) / (
                            GREY_LEVELS - 1
                        )
                    bar.update()
                x[rows] = part
        return x

    @torch.no_grad()
    def sample(self, model: nn.Module, n: int, generator: torch.Generator) -> torch.Tensor:
        if isinstance(model, PixelCNNPrior):
            return model.decode_codes(self.sample_codes(model, n, generator))
        return self.sample_pixels(model, n, generator)
