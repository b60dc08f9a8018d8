"""Conditional flow matching (Lipman et al. 2023, "Flow matching for generative modeling";
Liu et al. 2023, "Flow straight and fast"; Tong et al. 2024, "Improving and generalizing
flow-based generative models with minibatch optimal transport") for any
:class:`~dgm_runner.models.score.DiffusionModel`, with the probability path of its process
(:class:`~dgm_runner.sdes.LinearPath` is the flow-matching one)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from dgm_runner.config import ConfigError, NonNegativeFloat, PositiveFloat, UnitInterval
from dgm_runner.distributions import batch_draw
from dgm_runner.models.checks import require
from dgm_runner.models.score import DiffusionModel
from dgm_runner.objectives.base import Batch, Objective
from dgm_runner.objectives.guidance import conditioned_on, training_labels

#: The one-line error of ``coupling=pairs`` without pairs (``{}``: what lacks them).
_NO_PAIRS = (
    "objective.coupling=pairs trains on (noise, sample) pairs, but {}: use "
    "dataset=reflow_pairs dataset.pairs=<file of dgm-reflow-pairs> (or another coupling)"
)


def ot_permutation(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``(B,)`` int64 permutation ``perm`` such that pairing example ``i`` of ``x0`` with
    ``noise[perm[i]]`` minimises ``sum_i || x0_i - noise_perm[i] ||^2``: the exact optimal
    transport plan between the two empirical measures of ``B`` points each (uniform weights,
    squared Euclidean cost), which is a permutation (Birkhoff), found by
    :func:`scipy.optimize.linear_sum_assignment` (Tong et al. 2024, Sec. 3.2, OT-CFM, with
    the exact plan in place of a sampled one). Costs are formed in float64 on the CPU
    (``|a|^2 + |b|^2 - 2 a.b``); ties are broken by SciPy deterministically.

    Args:
        x0, noise: ``(B, ...)`` data and noise (any trailing shape, flattened).

    Returns:
        ``(B,)`` permutation on ``x0``'s device.

    Raises:
        ValueError: the two batches differ in size.
    """
    if x0.shape[0] != noise.shape[0]:
        raise ValueError(
            f"minibatch OT pairs batches of equal size, got {x0.shape[0]} and {noise.shape[0]}"
        )
    a = x0.detach().flatten(1).double().cpu()
    b = noise.detach().flatten(1).double().cpu()
    cost = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    _, cols = linear_sum_assignment(cost.numpy())
    return torch.from_numpy(np.asarray(cols, dtype=np.int64)).to(x0.device)


class FlowMatching(Objective):
    """Conditional flow matching: ``x_t = alpha(t) x_0 + sigma(t) eps`` on the model's
    process (``x_0`` in model space), target the path's velocity
    ``u = alpha'(t) x_0 + sigma'(t) eps`` (:meth:`~dgm_runner.sdes.SDE.velocity_target`;
    under ``model/sde=linear`` ``u = (1 - sigma_min) eps - x_0``), per-example loss
    ``|| v_theta(x_t, t) - u ||^2`` **summed over pixels** (no factor 1/2; Lipman et al.
    2023, Eq. 9 and 23), averaged over the batch; ``v_theta`` is the model's
    :meth:`~dgm_runner.models.score.DiffusionModel.velocity` (the network itself with
    ``model.preconditioning=velocity``, else derived from its noise prediction). Its
    minimiser is ``E[u | x_t]``, the probability-flow velocity; the loss at the minimum is
    ``E || u - E[u | x_t] ||^2 > 0`` (not 0), in squared model-space units per unit time.
    Metric ``fm_loss`` (test: with its standard error ``fm_loss_se``).

    ``coupling`` (how ``eps`` is paired with ``x_0`` in a batch):

    - ``independent``: each example its own draw (I-CFM; Lipman et al. 2023, Tong et al.
      2024, Sec. 3.1).
    - ``minibatch_ot``: the batch's noise draws are permuted by the exact OT assignment
      :func:`ot_permutation` before use (OT-CFM; Tong et al. 2024, Sec. 3.2): straighter
      paths. The pairing depends on the whole batch, so a data-parallel run (each process
      sees only its shard) is refused (``data_parallel = False``), and the test loss, made
      with the same coupling inside each evaluation batch, depends on
      ``trainer.eval_batch_size``.
    - ``pairs``: the noise of each training example is the one stored with it
      (``batch.noise``: ``dataset=reflow_pairs``, :mod:`dgm_runner.data.reflow`), the
      (noise, endpoint) pairs of an earlier flow's ODE, so the model learns the rectified
      flow of that deterministic coupling: reflow (Liu et al. 2023, Sec. 2.2-2.3, the
      k-rectified flow; the times ``t`` are still drawn per example). A training batch
      without noise is a one-line :class:`~dgm_runner.config.ConfigError`, and so is a
      dataset without pairs (:meth:`check_data`, before any work). The **test** split holds
      the real images of the dataset the pairs' run trained on and has no pairs, so
      :meth:`evaluate` (the test and validation ``fm_loss``) draws independent noise there,
      as ``independent`` does: it measures the loss of the independent coupling of the
      real data, not the training loss on the pairs.

    ``time_sampling`` on ``[t_lo, T]``, ``t_lo = max(t_min, sde.t_min)``:

    - ``uniform``: ``model.sde.sample_t`` (``U(t_lo, T)``; a discrete DDPM's ``n / N``).
    - ``logit_normal``: ``t = t_lo + (T - t_lo) sigmoid(m + s z)``, ``z ~ N(0, 1)`` (Esser
      et al. 2024, Sec. 3.1, Eq. 19: ``m``, ``s``; with ``t_lo = 0``, ``T = 1`` exactly their
      density, ``logit t ~ N(m, s^2)``).

    Draws (``t`` then ``eps``, per example) go through
    :func:`dgm_runner.distributions.batch_draw` with the loop's RNG in training and the
    evaluation's generator in :meth:`evaluate`, as
    :class:`~dgm_runner.objectives.dsm.DiffusionDSM`'s: a resumed run repeats them exactly,
    and with ``independent`` coupling a data-parallel run draws what one process would.

    Args:
        coupling: ``independent``, ``minibatch_ot`` or ``pairs``.
        time_sampling: ``uniform`` or ``logit_normal``.
        m, s: the logit-normal's location and scale (Esser et al.: 0 and 1).
        t_min: smallest training time (0: the linear path is exact at t = 0 with a velocity
            model; a VP process needs > 0, e.g. 1e-5, where ``sigma'(0)`` is infinite).
        p_uncond: for a class-conditional model (``model.conditional=true``), the
            probability that an example's label is replaced by the null class, drawn after
            ``t`` and the noise (:func:`~dgm_runner.objectives.guidance.training_labels`;
            Ho & Salimans 2022); the test loss drops labels at the same rate. Unused
            otherwise, and with ``coupling=pairs`` (the pairs carry no labels).
    """

    monitor = "fm_loss"

    def __init__(
        self,
        coupling: Literal["independent", "minibatch_ot", "pairs"] = "independent",
        time_sampling: Literal["uniform", "logit_normal"] = "uniform",
        m: float = 0.0,
        s: PositiveFloat = 1.0,
        t_min: NonNegativeFloat = 0.0,
        p_uncond: UnitInterval = 0.1,
    ) -> None:
        self.coupling, self.time_sampling = coupling, time_sampling
        self.m, self.s, self.t_min, self.p_uncond = m, s, t_min, p_uncond
        # pairs: the noise comes with the rows, gathered like them (exact in any shard)
        self.data_parallel = coupling != "minibatch_ot"
        #: why a data-parallel run is refused (the loop's one-line error)
        self.serial_reason = "minibatch OT pairs noise with the whole global batch"

    def check_model(self, model: nn.Module) -> None:
        require(model, DiffusionModel, "objective 'flow_matching'")

    def check_data(self, model: nn.Module, data) -> None:
        """``coupling=pairs`` needs a training split with (noise, sample) pairs
        (``data.train_noise``).

        Raises:
            ConfigError: one line naming ``dataset=reflow_pairs``.
        """
        if self.coupling == "pairs" and getattr(data, "train_noise", None) is None:
            raise ConfigError(_NO_PAIRS.format(f"dataset {data.name!r} has none"))

    def sample_t(self, model: DiffusionModel, n: int, generator, device) -> torch.Tensor:
        """``(n,)`` training times (see ``time_sampling``)."""
        if self.time_sampling == "uniform":
            return model.sde.sample_t(n, generator, device, self.t_min)
        lo, hi = max(self.t_min, model.sde.t_min), model.sde.T
        z = torch.randn(n, generator=generator, device=device)
        return lo + (hi - lo) * torch.sigmoid(self.m + self.s * z)

    def per_example(
        self, model: DiffusionModel, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """``(B,)`` loss of model-space ``x0`` ``(B, ...)`` at times ``t`` ``(B,)`` with the
        (already coupled) noise ``noise`` ``(B, ...)``."""
        mean, std = model.sde.marginal(x0, t)
        x_t = mean + std.reshape(-1, *([1] * (x0.ndim - 1))) * noise
        target = model.sde.velocity_target(x0, noise, t)
        return (model.velocity(x_t, t) - target).pow(2).flatten(1).sum(1)

    def draw(
        self, model: DiffusionModel, x0: torch.Tensor, generator=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(t (B,), noise (B, ...))`` for model-space ``x0`` ``(B, ...)``: per-example draws
        (:func:`~dgm_runner.distributions.batch_draw`), the noise then coupled."""
        n, rest = x0.shape[0], x0.shape[1:]
        t = batch_draw(n, lambda k: self.sample_t(model, k, generator, x0.device))
        noise = batch_draw(
            n, lambda k: torch.randn((k, *rest), generator=generator, device=x0.device)
        )
        if self.coupling == "minibatch_ot":
            noise = noise[ot_permutation(x0, noise)]
        return t, noise

    def _per_example(self, model: DiffusionModel, batch: Batch, generator=None) -> torch.Tensor:
        x0 = model.encode(batch.x)
        t, noise = self.draw(model, x0, generator)
        labels = training_labels(model, batch.y, self.p_uncond, generator)
        with conditioned_on(model, labels):
            return self.per_example(model, x0, t, noise)

    def paired_per_example(
        self, model: DiffusionModel, x: torch.Tensor, noise: torch.Tensor, generator=None
    ) -> torch.Tensor:
        """``(B,)`` loss of the ``pairs`` coupling: data ``x`` ``(B, ...)`` (as the dataset
        holds it; ``model.encode`` maps it to the model-space endpoints ``x0``) with its own
        model-space ``noise`` ``(B, ...)``, times drawn per example as :meth:`draw` draws
        them (``t`` only: no noise is drawn)."""
        x0 = model.encode(x)
        t = batch_draw(x0.shape[0], lambda k: self.sample_t(model, k, generator, x0.device))
        return self.per_example(model, x0, t, noise.to(x0.dtype))

    def loss(self, model, batch: Batch):
        """``(mean fm_loss of the batch, {"fm_loss": it})``; ``coupling=pairs`` takes each
        row's noise from ``batch.noise``.

        Raises:
            ConfigError: ``coupling=pairs`` and the batch has no noise (one line).
        """
        if self.coupling == "pairs":
            if batch.noise is None:
                raise ConfigError(_NO_PAIRS.format("this training batch has no noise"))
            loss = self.paired_per_example(model, batch.x, batch.noise).mean()
        else:
            loss = self._per_example(model, batch).mean()
        return loss, {"fm_loss": loss.detach()}

    def evaluate(self, model, batch: Batch, generator=None, final: bool = False):
        """``fm_loss`` ``(B,)`` of the test (or validation) batch with noise drawn from
        ``generator``: independent draws under ``coupling=pairs`` too (the real test images
        have no pairs; the class docstring), OT-paired under ``minibatch_ot``."""
        return {"fm_loss": self._per_example(model, batch, generator)}

    def standard_errors(self, final: bool = False) -> tuple[str, ...]:
        return ("fm_loss",)
