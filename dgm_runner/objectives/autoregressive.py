"""Maximum likelihood for autoregressive image models (MADE, PixelCNN on pixels): the
exact negative log-likelihood, no bound (:mod:`dgm_runner.models.autoregressive`)."""

from __future__ import annotations

import torch
from torch import nn

from dgm_runner.metrics.units import nats_to_bits_per_dim
from dgm_runner.models.autoregressive import AutoregressiveImageModel, log_mean_exp
from dgm_runner.objectives.base import Batch, Objective


class AutoregressiveNLL(Objective):
    """Exact negative log-likelihood, ``-log p(x) = -sum_d log p(x_d | x_<d)``.

    Training: ``loss`` = the mean over the batch of ``-log p_k(x)`` in **nats per image**,
    under one ordering ``k`` per update, drawn uniformly from the model's ``K`` orderings
    (MADE's masks: order- / connectivity-agnostic training, Germain et al. 2015, Sec. 4;
    ``k = 0`` when ``K = 1``). Logged: ``loss`` (nats per image), and ``bits_per_dim`` for
    256-level pixels.

    Evaluation, per image ``(B,)``:

    * ``nll``: ``-log p(x)`` in nats per image, with ``p`` the ensemble
      ``(1/K) sum_k p_k(x)`` over all ``K`` orderings (Germain et al. 2015, Sec. 5; the
      model itself when ``K = 1``); ``monitor`` = ``nll``;
    * ``nll_single_order`` (``K > 1`` only): the mean over the orderings of ``-log p_k(x)``,
      what one mask alone gives on average (``>= nll`` by Jensen's inequality);
    * ``bits_per_dim`` (256-level pixels only): ``nll / (D ln 2)``, a probability of
      discrete data (no offset; :func:`dgm_runner.metrics.units.nats_to_bits_per_dim`).

    Both ``nll`` and ``bits_per_dim`` also get their standard error over the test split
    (``test/nll_se``).

    Data must be on the model's grid (binary for Bernoulli pixels, ``k / 255`` for 256
    levels): checked on every evaluation batch and on the first training batch, a one-line
    ``ValueError`` otherwise.
    """

    monitor = "nll"

    def __init__(self) -> None:
        self._train_data_checked = False

    def check_model(self, model: nn.Module) -> None:
        if not isinstance(model, AutoregressiveImageModel):
            raise TypeError(
                "objective 'autoregressive_nll' needs an autoregressive image model (MADE, "
                f"PixelCNN), got {type(model).__name__}"
            )

    def loss(
        self, model: AutoregressiveImageModel, batch: Batch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not self._train_data_checked:
            model.check_data(batch.x)
            self._train_data_checked = True
        loss = -model.log_prob(batch.x, order=model.draw_order()).mean()
        d = loss.detach()
        terms = {"loss": d}
        if model.n_levels > 2:
            terms["bits_per_dim"] = nats_to_bits_per_dim(d, model.n_dims)
        return loss, terms

    def evaluate(
        self,
        model: AutoregressiveImageModel,
        batch: Batch,
        generator: torch.Generator | None = None,
        final: bool = False,
    ) -> dict[str, torch.Tensor]:
        model.check_data(batch.x)
        per_order = model.order_log_probs(batch.x)  # (B, K) log p_k(x)
        out = {"nll": -log_mean_exp(per_order)}
        if model.n_orders > 1:
            out["nll_single_order"] = -per_order.mean(1)
        if model.n_levels > 2:
            out["bits_per_dim"] = nats_to_bits_per_dim(out["nll"], model.n_dims)
        return out

    def standard_errors(self, final: bool = False) -> tuple[str, ...]:
        """``nll`` and ``bits_per_dim``: reported with their standard errors."""
        return ("nll", "bits_per_dim")
