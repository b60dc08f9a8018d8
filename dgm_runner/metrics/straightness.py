"""The straightness of a flow (Liu, Gong & Liu 2023, "Flow straight and fast: learning to
generate and transfer data with rectified flow", ICLR 2023, Sec. 2.3):

    S(Z) = integral_0^1 E || (Z_1 - Z_0) - dZ_t/dt ||^2 dt,

how far the trajectories of the ODE bend away from the straight line between their ends.
It is 0 exactly when every trajectory is a straight line travelled at constant speed, the
case where one Euler step is exact; repeated reflow (the k-rectified flows) drives it
towards 0 (in their analysis, its minimum over the first k flows falls as 1/k).

Here it is estimated along solver trajectories: ``n`` prior draws are carried by Euler
steps on a time grid ``T = t_0 > t_1 > ... > t_K = t_end`` (``h_i = t_{i+1} - t_i < 0``),
with ``v_i = model.velocity(x_i, t_i)`` and ``x_{i+1} = x_i + h_i v_i``; the trajectory's
mean velocity is ``v_bar = (x_K - x_0) / (t_K - t_0) = sum_i (h_i / H) v_i``
(``H = t_K - t_0``), and

    S_hat = sum_i (h_i / H) || v_bar - v_i ||^2,

the time average of the squared distance between the velocity and the chord, i.e. the
left Riemann sum of the integral above (Liu et al.'s time runs the other way, ``tau = 1 -
t``, which flips the signs of both terms and leaves the norm unchanged). With
``t_end = 0`` and ``T = 1`` (the linear path) the interval is exactly theirs; otherwise the
average is over ``[t_end, T]``. It converges to ``S`` as the grid is refined. Units:
squared model-space units per unit time squared, summed over the dimensions of one example
(as ``fm_loss``).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import torch

from dgm_runner.config import PositiveInt, Steps
from dgm_runner.data.base import DataSplits
from dgm_runner.metrics.stats import standard_error
from dgm_runner.models.score import DiffusionModel
from dgm_runner.progress import track
from dgm_runner.samplers.diffusion import ProbabilityFlowODE, model_device

log = logging.getLogger("dgm_runner")


@torch.no_grad()
def straightness_values(
    model: DiffusionModel, times: torch.Tensor, x_T: torch.Tensor
) -> torch.Tensor:
    """``(n,)`` per-trajectory straightness ``S_hat`` (module docstring) of the Euler
    trajectories from the states ``x_T`` ``(n, ...)`` (model space, at ``times[0]``) down the
    grid ``times`` ``(K + 1,)`` (decreasing; ``K`` network evaluations per trajectory).
    ``K = 1`` gives 0 (one velocity is its own chord).

    Raises:
        ValueError: ``times`` is not a strictly decreasing grid of at least two times.
    """
    times = times.to(x_T.device)
    if times.ndim != 1 or times.numel() < 2 or not bool((times[1:] < times[:-1]).all()):
        raise ValueError("straightness needs a strictly decreasing time grid of >= 2 times")
    total = times[-1] - times[0]
    x, velocities, weights = x_T, [], []
    for i in range(times.numel() - 1):
        t, h = times[i], times[i + 1] - times[i]
        v = model.velocity(x, t.expand(x.shape[0]))
        velocities.append(v)
        weights.append(h / total)
        x = x + h * v
    mean_v = sum(w * v for w, v in zip(weights, velocities))
    return sum(w * (mean_v - v).pow(2).flatten(1).sum(1) for w, v in zip(weights, velocities))


def straightness(
    model: DiffusionModel,
    grid: torch.Tensor | ProbabilityFlowODE,
    n: int,
    generator: torch.Generator,
    batch_size: int | None = None,
) -> tuple[float, float]:
    """Monte-Carlo estimate of Liu et al.'s straightness ``S`` of ``model``'s ODE (module
    docstring), from ``n`` draws of the process's prior (``model.sde.prior_sample``, from
    ``generator``) carried by Euler steps on ``grid``. The model is put in eval mode for the
    call (and restored).

    Args:
        model: a :class:`~dgm_runner.models.score.DiffusionModel` (its ``velocity``).
        grid: ``(K + 1,)`` decreasing times from ``T`` (e.g.
            :func:`dgm_runner.samplers.diffusion.ode_time_grid`), or an ODE sampler whose
            grid (:meth:`ProbabilityFlowODE.times`) is used (its ``method`` is not: the
            trajectories are Euler's).
        n: trajectories; generator: the noise's source (on the model's device).
        batch_size: trajectories per batch (None: all at once).

    Returns:
        ``(mean, standard error over the trajectories)`` in squared model-space units per
        unit time squared, summed over the dimensions of one example.

    Raises:
        ValueError: a grid that is not strictly decreasing.
    """
    device = model_device(model)
    times = grid.times(model, device) if isinstance(grid, ProbabilityFlowODE) else grid
    was_training = model.training
    model.eval()
    step = batch_size or n
    values = []
    try:
        for start in track(range(0, n, step), f"straightness ({n} trajectories)", unit="batch"):
            k = min(step, n - start)
            x_T = model.sde.prior_sample((k, *model.image_shape), generator, device)
            values.append(straightness_values(model, times.to(device), x_T))
    finally:
        model.train(was_training)
    values_all = torch.cat(values).double()
    se = standard_error(values_all) if n > 1 else math.nan
    return float(values_all.mean()), float(se)


def straightness_metric(
    model: Any,
    sampler: Any,
    data: DataSplits,
    seed: int,
    final: bool,
    n: PositiveInt = 100,
    steps: Steps = 20,
    grid: Literal["uniform", "karras", "logit"] = "uniform",
    batch_size: PositiveInt = 100,
) -> dict[str, float]:
    """``sample_metrics`` entry (``configs/sample_metrics/straightness.yaml``): the
    straightness of the model's ODE from ``n`` prior draws on an Euler grid of ``steps``
    intervals (:func:`straightness`; not the run's sampler's grid: a 1-step sampler's would
    give 0), at the final evaluation of a diffusion / flow-matching model.

    Returns:
        ``straightness``, ``straightness_se``, ``straightness_n``, ``straightness_steps``;
        ``{}`` at other evaluations, for other models, and for a model the ODE cannot start
        (a noise-predicting model on the linear path, logged).
    """
    if not final or not isinstance(model, DiffusionModel):
        return {}
    ode = ProbabilityFlowODE(method="euler", steps=steps, grid=grid)
    try:
        ode.check_model(model)
    except (TypeError, ValueError) as err:
        log.warning("straightness skipped: %s", err)
        return {}
    gen = torch.Generator(device=model_device(model)).manual_seed(seed)
    mean, se = straightness(model, ode, n, gen, batch_size)
    log.info(
        "straightness (Euler, %d steps): %.4g +- %.2g over %d trajectories", steps, mean, se, n
    )
    return {
        "straightness": mean,
        "straightness_se": se,
        "straightness_n": float(n),
        "straightness_steps": float(steps),
    }


def _describe(model: Any, n: int = 100, steps: int = 20, **_: Any) -> str | None:
    """The final-evaluation plan's entry (``None``: it will skip)."""
    if not isinstance(model, DiffusionModel):
        return None
    return f"straightness ({n} trajectories x {steps} Euler steps)"


straightness_metric.describe = _describe  # type: ignore[attr-defined]
