"""Maximum-likelihood training of an autoregressive prior over VQ-VAE codes (stage 2 of
van den Oord et al. 2017, Sec. 3.3; seed 003 programming question 1)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dgm_runner.models.checks import require
from dgm_runner.models.pixelcnn import PixelCNNPrior
from dgm_runner.objectives.base import Batch, Objective


class CodePriorNLL(Objective):
    """Cross-entropy of the prior on the code grids of the data.

    The targets are the code indices ``c = argmin_k ||z_e(x) - e_k||`` of each batch image
    under the frozen VQ-VAE encoder (no gradient); the loss is
    ``-(1/(h w)) sum_i log p(c_i | c_<i)``, the mean over the grid positions and the batch
    (nats per code).

    Logged training terms: ``loss`` (nats per code) and ``nll_bits_per_code`` (the same
    divided by ln 2).

    Evaluation, per image ``(B,)``: ``prior_bits_per_code``, the negative log-likelihood of
    its code grid in **bits per code**, ``-(1/(h w)) sum_i log2 p(c_i | c_<i)``. A uniform prior
    scores ``log2 K`` (7 for K = 128); the entropy of the codes bounds it from below.
    ``monitor`` = ``prior_bits_per_code``.
    """

    monitor = "prior_bits_per_code"

    def check_model(self, model: nn.Module) -> None:
        require(model, PixelCNNPrior, "objective 'code_prior'")

    def param_groups(self, model: PixelCNNPrior) -> dict[str, list[nn.Parameter]]:
        """One optimiser over the PixelCNN's parameters only (the VQ-VAE is frozen)."""
        return {"model": [p for p in model.parameters() if p.requires_grad]}

    def nll_nats(self, model: PixelCNNPrior, batch: Batch) -> torch.Tensor:
        """``(B,)`` negative log-likelihood of each image's code grid, nats per code."""
        codes = model.codes_of(batch.x)
        logits = model(codes)
        return F.cross_entropy(logits, codes, reduction="none").flatten(1).mean(1)

    def loss(
        self, model: PixelCNNPrior, batch: Batch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = self.nll_nats(model, batch).mean()
        d = loss.detach()
        return loss, {"loss": d, "nll_bits_per_code": d / math.log(2.0)}

    def evaluate(
        self,
        model: PixelCNNPrior,
        batch: Batch,
        generator: torch.Generator | None = None,
        final: bool = False,
    ) -> dict[str, torch.Tensor]:
        return {"prior_bits_per_code": self.nll_nats(model, batch) / math.log(2.0)}
