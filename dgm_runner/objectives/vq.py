"""The VQ-VAE objective (van den Oord et al. 2017, Eq. 3; seed 003 programming question 1
and written question 4)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dgm_runner.config import NonNegativeFloat
from dgm_runner.models.checks import require
from dgm_runner.models.vqvae import VQVAE, code_usage
from dgm_runner.objectives.base import Batch, Objective


class VQObjective(Objective):
    """Minimise ``recon + codebook + beta * commitment`` per image, averaged over the batch:

    * ``recon``: ``recon="mse"``: ``||x - sigmoid(logits)||^2`` summed over pixels;
      ``recon="bce"``: binary cross-entropy summed over pixels (nats).
    * ``codebook``: ``||sg[u] - z||^2`` summed over the latent grid and D (trains the
      codebook only). Dropped from the loss when the model updates its codebook by EMA
      (``model.ema=True``; it is still logged).
    * ``commitment``: ``||u - sg[z]||^2`` summed likewise (trains the encoder only),
      weighted by ``beta`` (seed 003 Q4's L_VQ: 1, the config default; van den Oord et
      al. 2017: 0.25).

    With sums over the 784 pixels and over the 7x7x16 = 784 latent entries (defaults on
    28x28 images) the balance between the terms is the same as with per-element means.
    ``beta`` lives here, not in the model: it weights a loss term.

    Logged training terms (batch means): ``loss``, ``recon``, ``recon_mse``, ``codebook``,
    ``commitment``, ``perplexity``, ``codes_used``.

    Evaluation (``(B,)`` per image; the loop averages over the test set):

    * ``recon_mse``: mean squared error per pixel of ``E[x | z_q(x)]`` (pixels in [0, 1]);
      ``recon_mse_sum``: the same summed over the pixels of an image (= 784 x recon_mse).
    * ``codebook``, ``commitment``: as above.
    * ``perplexity``: ``exp(entropy)`` of the code histogram of the evaluation batch (see
      :func:`dgm_runner.models.vqvae.code_usage`), and ``codes_used``: the fraction of the
      K codes that occur in the batch. These are batch statistics, broadcast to every
      example of the batch, so the loop's average is the batch-size-weighted mean over
      evaluation batches (``trainer.eval_batch_size``, default 1000 images = 49 000 codes),
      not the value for the whole test set at once.

    ``monitor`` = ``recon_mse`` (picks ``best.pt``).

    Args:
        beta: weight of the commitment loss (>= 0).
        recon: ``mse`` or ``bce``.
    """

    monitor = "recon_mse"

    def __init__(self, beta: NonNegativeFloat = 1.0, recon: Literal["mse", "bce"] = "mse") -> None:
        if beta < 0:
            raise ValueError(f"beta={beta} must be >= 0")
        if recon not in ("mse", "bce"):
            raise ValueError(f"recon={recon!r}: allowed values are 'mse', 'bce'")
        self.beta = beta
        self.recon = recon

    def check_model(self, model: nn.Module) -> None:
        require(model, VQVAE, "objective 'vq'")

    def terms(self, model: VQVAE, batch: Batch) -> dict[str, torch.Tensor]:
        """Per-image terms, each ``(B,)`` (names as in the class docstring), plus the
        batch statistics ``perplexity`` and ``codes_used`` broadcast to ``(B,)``."""
        x = batch.x
        logits, q = model(x)
        mean = torch.sigmoid(logits)
        sq = (mean - x).pow(2).flatten(1).sum(1)
        if self.recon == "mse":
            recon = sq
        else:
            recon = (
                F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
            )
        loss = recon + self.beta * q.commitment_loss
        if not model.ema:
            loss = loss + q.codebook_loss
        perplexity, used = code_usage(q.indices, model.n_codes)
        ones = torch.ones_like(recon)
        return {
            "loss": loss,
            "recon": recon,
            "recon_mse": sq / x[0].numel(),
            "recon_mse_sum": sq,
            "codebook": q.codebook_loss,
            "commitment": q.commitment_loss,
            "perplexity": perplexity * ones,
            "codes_used": used * ones,
        }

    def loss(self, model: VQVAE, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms = self.terms(model, batch)
        logged = (
            "loss",
            "recon",
            "recon_mse",
            "codebook",
            "commitment",
            "perplexity",
            "codes_used",
        )
        means = {k: terms[k].mean() for k in logged}
        return means["loss"], {k: v.detach() for k, v in means.items()}

    def evaluate(
        self,
        model: VQVAE,
        batch: Batch,
        generator: torch.Generator | None = None,
        final: bool = False,
    ) -> dict[str, torch.Tensor]:
        terms = self.terms(model, batch)
        keys = ("recon_mse", "recon_mse_sum", "codebook", "commitment", "perplexity", "codes_used")
        return {k: terms[k].detach() for k in keys}
