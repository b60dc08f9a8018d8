"""Maximum likelihood for normalizing flows (RealNVP, Glow: :mod:`dgm_runner.models.flows`):
the exact negative log-density of dequantized images by the change of variables.

Units (docs/evaluation.md, "Data protocols and units"): the model's ``log_prob`` is the
density of pixels in [0, 1]^D, in nats per image; bits/dim is
``nats_to_bits_per_dim(nll, D, LN256)``, the ``ln 256`` offset reporting it as a density of
the 8-bit values in [0, 256)^D, as the probability-flow bits/dim of diffusion models is (one
conversion, the same offset). A uniform density on [0, 1)^D is 8 bits/dim.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from dgm_runner.data.protocols import dequantize_levels, pixel_levels
from dgm_runner.distributed import all_reduce_sum, process_world
from dgm_runner.metrics.units import LN256, nats_to_bits_per_dim
from dgm_runner.models.checks import require
from dgm_runner.models.flows.multiscale import MultiScaleFlow
from dgm_runner.objectives.base import Batch, Objective

log = logging.getLogger("dgm_runner")


def sum_over_processes(tensors: list[torch.Tensor]) -> None:
    """Sum ``tensors`` in place over the processes of a data-parallel run (the run's
    process group, :func:`dgm_runner.distributed.process_world`); nothing in a single
    process. The ``reduce`` of the actnorms' data-dependent initialisation."""
    all_reduce_sum(tensors, process_world())


def on_grey_levels(x: torch.Tensor) -> bool:
    """Whether every value of ``x`` is a stored grey level ``k / 255`` (data that were not
    dequantized)."""
    k = x * 255.0
    return bool((k - k.round()).abs().max() < 1e-4)


class FlowNLL(Objective):
    """Exact negative log-likelihood of a flow, ``-log p(x) = -log N(f(x); 0, I) - log |det
    df/dx|``.

    Training: ``loss`` = the batch mean of ``-log p(x)`` in **nats per image** on the
    training batch as the loop hands it (``dataset.dequantize=uniform``: ``(k + u) / 256``
    drawn afresh at every use); logged also as ``bits_per_dim`` (with the ``ln 256``
    offset). On the first training batch a model whose actnorms are not initialised gets its
    data-dependent initialisation from that batch
    (:meth:`~dgm_runner.models.flows.multiscale.MultiScaleFlow.data_init`), the statistics
    summed over the processes of a data-parallel run (so every process sets the parameters
    one process would from the whole batch); a resumed run's actnorms are initialised
    already (their ``initialized`` buffers are in the checkpoint).

    Evaluation, per test image ``(B,)``: the stored ``k / 255`` images are dequantized as
    the probability-flow bits/dim of diffusion models does it,
    ``(k + u) / 256`` with ``u`` from the evaluation's seeded generator
    (:func:`dgm_runner.data.protocols.dequantize_levels`), then

    * ``nll``: ``-log p(y)`` in nats per image (a density on [0, 1]^D);
    * ``bits_per_dim``: ``nats_to_bits_per_dim(nll, D, LN256)``; ``monitor``.

    Both get their standard error over the test split (``test/nll_se``).

    Raises:
        ValueError: (first training batch, every evaluation batch) values outside [0, 1].
    """

    monitor = "bits_per_dim"

    def check_model(self, model: nn.Module) -> None:
        require(model, MultiScaleFlow, "objective 'flow_nll'")

    def loss(
        self, model: MultiScaleFlow, batch: Batch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if model.data_init_pending:
            model.check_data(batch.x)
            if on_grey_levels(batch.x):
                log.warning(
                    "flow_nll: the training images are grey levels k/255, not dequantized: "
                    "a density of discrete data is unbounded (use dataset=dequantized_mnist "
                    "or dataset.dequantize=uniform)"
                )
            model.data_init(batch.x, reduce=sum_over_processes)
        loss = -model.log_prob(batch.x).mean()
        d = loss.detach()
        return loss, {"loss": d, "bits_per_dim": nats_to_bits_per_dim(d, model.n_dims, LN256)}

    def evaluate(
        self,
        model: MultiScaleFlow,
        batch: Batch,
        generator: torch.Generator | None = None,
        final: bool = False,
    ) -> dict[str, torch.Tensor]:
        model.check_data(batch.x)
        y = dequantize_levels(pixel_levels(batch.x), generator)
        nll = -model.log_prob(y)
        return {"nll": nll, "bits_per_dim": nats_to_bits_per_dim(nll, model.n_dims, LN256)}

    def standard_errors(self, final: bool = False) -> tuple[str, ...]:
        """``nll`` and ``bits_per_dim``: reported with their standard errors."""
        return ("nll", "bits_per_dim")
