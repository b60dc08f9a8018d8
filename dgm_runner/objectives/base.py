"""The objective interface the loop relies on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, NamedTuple, Optional

import torch
from torch import nn

if TYPE_CHECKING:
    from dgm_runner.data.base import DataSplits


class Batch(NamedTuple):
    """One minibatch: ``x`` ``(B, C, H, W)`` float images, ``y`` ``(B,)`` int64 labels, and
    ``noise``: ``(B, C, H, W)`` model-space noise paired row by row with ``x`` when the
    training split holds (noise, sample) pairs (``DataSplits.train_noise``, the reflow data
    of :mod:`dgm_runner.data.reflow`), else None (test batches, every other dataset).

    In a data-parallel run ``B`` is this process's shard of the global batch; per-example
    noise drawn with :func:`dgm_runner.distributions.batch_draw` then matches the global
    batch's."""

    x: torch.Tensor
    y: torch.Tensor
    noise: Optional[torch.Tensor] = None


class Objective:
    """Base class of every training objective (``configs/objective``).

    Subclasses implement :meth:`loss` (what the optimiser minimises) and :meth:`evaluate`
    (per-example test metrics). ``monitor`` names the evaluate key that picks
    ``best.pt`` (lower is better). Objectives with state (e.g. PCD chains) override
    :meth:`state_dict` / :meth:`load_state_dict` so it is checkpointed.
    """

    monitor: str = "loss"
    #: Whether :meth:`steps` makes its updates through :meth:`loss` (what
    #: ``trainer.compile`` compiles); False for objectives that override ``steps`` otherwise.
    updates_through_loss: bool = True
    #: Whether a run may train it data-parallel (:mod:`dgm_runner.distributed`): False for
    #: state that follows examples across batches (PCD's persistent chains).
    data_parallel: bool = True

    def check_model(self, model: nn.Module) -> None:
        """Raise ``TypeError`` (one line) if ``model`` cannot be trained by this objective."""

    def check_data(self, model: nn.Module, data: "DataSplits") -> None:
        """Raise :class:`~dgm_runner.config.ConfigError` (one line) if this objective cannot
        train ``model`` on ``data`` (e.g. ``objective.coupling=pairs`` on a dataset without
        (noise, sample) pairs). Called once the data and the model are built, before any
        work (:func:`dgm_runner.build.build_components`); default: no requirement."""

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return ``(scalar to minimise, {name: detached scalar tensor to log})``."""
        raise NotImplementedError

    def param_groups(self, model: nn.Module) -> dict[str, list[nn.Parameter]]:
        """The optimisers this objective needs: ``{group name: parameters}``; the loop
        builds one optimiser per group (default: one group ``"model"``)."""
        return {"model": list(model.parameters())}

    def steps(
        self, model: nn.Module, batch: Batch, step: int
    ) -> Iterator[tuple[str, torch.Tensor | None, dict[str, torch.Tensor]]]:
        """The updates to make on one batch, in order: yields ``(group, loss, terms)``;
        the loop back-propagates ``loss`` and steps that group's optimiser before asking
        for the next one (so a GAN's generator loss sees the updated discriminator). An
        objective that computes its gradient in closed form writes every parameter's
        ``.grad`` of the group and yields ``loss=None`` (CD-k).
        ``step`` counts batches so far. Default: one update of :meth:`loss`."""
        loss, terms = self.loss(model, batch)
        yield "model", loss, terms

    def after_step(self, group: str, model: nn.Module) -> None:
        """Called after each optimiser step (e.g. WGAN weight clipping)."""

    def evaluate(
        self,
        model: nn.Module,
        batch: Batch,
        generator: torch.Generator | None = None,
        final: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Return ``{metric name: (B,) per-example values}``; the loop averages them.
        ``final`` is true for the last evaluation of a run (and for ``dgm-eval``), where
        expensive metrics (e.g. IWAE with K = 1000) are computed."""
        raise NotImplementedError

    def standard_errors(self, final: bool = False) -> tuple[str, ...]:
        """The names of :meth:`evaluate`'s metrics (at this ``final``) whose standard error
        over the split is reported too, as ``<name>_se``: the sample standard deviation of
        the per-example values over ``sqrt(N)``
        (:func:`dgm_runner.evaluation.evaluate_split`). Default: none."""
        return ()

    def state_dict(self) -> dict[str, Any]:
        """Tensors/primitives to checkpoint (default: none)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
