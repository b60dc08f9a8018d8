"""What every autoregressive image model with an exact likelihood shares (MADE:
:mod:`dgm_runner.models.made`; PixelCNN on pixels: :mod:`dgm_runner.models.pixelcnn`).

A model is an equally weighted ensemble of ``K = n_orders`` autoregressive factorisations
of the ``D = C * H * W`` pixels,

    p(x) = (1/K) sum_k p_k(x),    p_k(x) = prod_s p_k(x_{o_k(s)} | x_{o_k(1)}, ..., x_{o_k(s-1)}),

where ``o_k`` is the k-th ordering of the pixels (``K = 1`` for PixelCNN and a one-mask
MADE; several masks of MADE, Germain et al. 2015, Sec. 4-5). Every conditional is a
normalised distribution over the pixel's values, so ``p`` is an exact, normalised
probability: no bound, no estimate, no dequantization.

* ``n_levels = 2``: Bernoulli pixels, data exactly 0 or 1 (binarized images); the network's
  output at a pixel is the logit of ``p(x_d = 1 | x_<d)``.
* ``n_levels = 256``: categorical pixels over the 256 grey levels ``{0, ..., 255}`` (data
  ``k / 255``, as the vision loaders store them); the output is 256 logits (a softmax).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Pixel values of a 256-level model: ``k / 255`` for ``k`` in {0, ..., 255}.
GREY_LEVELS = 256


class AutoregressiveImageModel(nn.Module):
    """Base class of the autoregressive image models (see the module docstring).

    Subclasses set ``image_shape`` ``(C, H, W)``, ``n_levels`` (2 or 256) and ``n_orders``
    (``K``) and implement :meth:`logits` and :meth:`generation_steps`; everything else (the
    conditionals, the exact log-likelihood, the choice of an ordering per update) is here.
    """

    image_shape: tuple[int, int, int]
    n_levels: int = 2
    n_orders: int = 1

    @property
    def n_dims(self) -> int:
        """``D = C * H * W``, the number of pixel values of one image."""
        c, h, w = self.image_shape
        return c * h * w

    def logits(self, x: torch.Tensor, order: int = 0) -> torch.Tensor:
        """The conditionals of ordering ``order`` at every pixel, in one pass.

        Args:
            x: ``(B, C, H, W)`` images on the model's grid (:meth:`check_data`).
            order: which of the ``n_orders`` orderings, ``0 <= order < n_orders``.

        Returns:
            ``(B, C, H, W)`` logits of ``p(x_d = 1 | x_<d)`` (``n_levels = 2``) or
            ``(B, 256, C, H, W)`` logits of ``p(x_d = k / 255 | x_<d)`` (``n_levels = 256``);
            the entry of pixel ``d`` depends only on the pixels before ``d`` in that ordering.
        """
        raise NotImplementedError

    def step_logits(self, x: torch.Tensor, order: int, dims: torch.Tensor) -> torch.Tensor:
        """The logits of the pixels ``dims`` only (one row of :meth:`generation_steps`), what
        a sampler needs per step: ``(B, G)`` (``n_levels = 2``) or ``(B, 256, G)``. Here:
        :meth:`logits` of the whole image, indexed; subclasses may compute less (equal up
        to float rounding)."""
        logits = self.logits(x, order)
        if self.n_levels == 2:
            return logits.flatten(1)[:, dims]
        return logits.flatten(2)[:, :, dims]

    def generation_steps(self, order: int = 0) -> torch.Tensor:
        """``(S, G)`` int64 flat pixel indices (into ``x.flatten(1)``) in generation order:
        step ``s`` draws the ``G`` pixels of row ``s`` together (their conditionals depend
        only on the pixels of earlier steps); ``S * G = D``."""
        raise NotImplementedError

    def check_data(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` (one line) unless every value of ``x`` is a pixel value of
        this model: exactly 0 or 1 (``n_levels = 2``), or ``k / 255`` for an integer ``k``
        in [0, 255] (``n_levels = 256``; float32 rounding tolerated)."""
        if self.n_levels == 2:
            if not ((x == 0) | (x == 1)).all():
                raise ValueError(
                    "Bernoulli pixels need binary data (every value 0 or 1): use "
                    "dataset=binarized_mnist, or the 256-level likelihood for grey images"
                )
            return
        k = x * (GREY_LEVELS - 1)
        if not ((k - k.round()).abs().max() < 1e-3 and x.min() >= 0 and x.max() <= 1):
            raise ValueError(
                "256-level pixels need grey images with values k / 255, k in {0..255} "
                "(the vision loaders' grey data, not dequantized or binarized data)"
            )

    def pixel_targets(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as the conditionals' targets: the float 0/1 values (``n_levels = 2``) or the
        int64 levels ``round(255 x)`` (``n_levels = 256``)."""
        if self.n_levels == 2:
            return x
        return (x * (GREY_LEVELS - 1)).round().long()

    def conditional_log_probs(self, x: torch.Tensor, order: int = 0) -> torch.Tensor:
        """``(B, C, H, W)`` log-probabilities ``log p_order(x_d | x_<d)`` in nats, one per
        pixel (their sum over the pixels is ``log p_order(x)``)."""
        logits = self.logits(x, order)
        if self.n_levels == 2:
            return -F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        return -F.cross_entropy(logits, self.pixel_targets(x), reduction="none")

    def order_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K)``: ``log p_k(x)`` in nats under each of the ``K`` orderings."""
        return torch.stack(
            [self.conditional_log_probs(x, k).flatten(1).sum(1) for k in range(self.n_orders)],
            dim=1,
        )

    def log_prob(self, x: torch.Tensor, order: int | None = None) -> torch.Tensor:
        """``(B,)`` exact log-likelihood in nats per image.

        Args:
            x: ``(B, C, H, W)`` images on the model's grid.
            order: one ordering's ``log p_order(x)``; ``None`` (default): the ensemble's
                ``log p(x) = log (1/K) sum_k p_k(x)`` (log-mean-exp over the orderings;
                Germain et al. 2015, Sec. 5), which is ``log p_0(x)`` when ``K = 1``.
        """
        if order is not None:
            return self.conditional_log_probs(x, order).flatten(1).sum(1)
        if self.n_orders == 1:
            return self.log_prob(x, 0)
        return log_mean_exp(self.order_log_probs(x))

    def draw_order(self) -> int:
        """The ordering of one training update: uniform over the ``K`` orderings, drawn from
        the global torch RNG (checkpointed, so a resumed run draws what an uninterrupted one
        does; every data-parallel process draws the same); 0 without a draw when ``K = 1``."""
        if self.n_orders == 1:
            return 0
        return int(torch.randint(self.n_orders, (1,)))


def log_mean_exp(log_p: torch.Tensor) -> torch.Tensor:
    """``(B, K) -> (B,)``: ``log (1/K) sum_k exp(log_p[:, k])``, computed stably."""
    return torch.logsumexp(log_p, dim=1) - math.log(log_p.shape[1])
