"""Annealed importance sampling (AIS) estimate of an RBM's log partition function and
test log-likelihood (Neal 2001; Salakhutdinov & Murray 2008, "On the quantitative
analysis of deep belief networks", sec. 3-4)."""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F

from dgm_runner.config import PositiveInt
from dgm_runner.data.base import DataSplits
from dgm_runner.models.rbm import RBM
from dgm_runner.progress import track
from dgm_runner.samplers.base import Sampler


def default_betas() -> torch.Tensor:
    """The schedule of Salakhutdinov & Murray (2008), sec. 4.2: steps of 1e-3 on [0, 0.5],
    1e-4 on [0.5, 0.9] and 1e-5 on [0.9, 1] (14 501 inverse temperatures, float64)."""
    return torch.cat(
        [
            torch.arange(0, 0.5, 1e-3, dtype=torch.float64),
            torch.arange(0.5, 0.9, 1e-4, dtype=torch.float64),
            torch.arange(0.9, 1.0, 1e-5, dtype=torch.float64),
            torch.ones(1, dtype=torch.float64),
        ]
    )


def base_rate_bias(train_x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """``(D,)`` visible biases of the base-rate RBM: the log-odds of the training-set pixel
    means, clipped to [eps, 1 - eps] (Salakhutdinov & Murray 2008, sec. 4.1)."""
    p = train_x.reshape(train_x.shape[0], -1).double().mean(0).clamp(eps, 1 - eps)
    return torch.log(p) - torch.log1p(-p)


def _log_ratio(
    vw_c: torch.Tensor, vb: torch.Tensor, vb_a: torch.Tensor, beta: float, prev: float
) -> torch.Tensor:
    """``log p*_beta(v) - log p*_prev(v)`` for the intermediate unnormalised marginals
    ``p*_beta(v) = exp((1 - beta) b_A.v + beta b.v) prod_j (1 + exp(beta (c_j + v.W_j)))``,
    from the shared ``vw_c = v W + c`` ``(M, H)``, ``vb = v.b`` and ``vb_a = v.b_A`` ``(M,)``."""
    return (beta - prev) * (vb - vb_a) + (F.softplus(beta * vw_c) - F.softplus(prev * vw_c)).sum(1)


@torch.no_grad()
def ais_log_partition(
    rbm: RBM,
    b_a: torch.Tensor,
    n_runs: int = 100,
    betas: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """AIS estimate of ``log Z`` of ``rbm``, annealing from the base-rate RBM (visible biases
    ``b_a``, no weights, zero hidden biases: ``log Z_A = sum_i softplus(b_a,i) + H log 2``)
    through ``p*_beta`` with one block-Gibbs transition per temperature; all in float64 and
    log space.

    Args:
        rbm: the model (any device).
        b_a: ``(D,)`` base-rate visible biases (:func:`base_rate_bias`).
        n_runs: M independent AIS runs.
        betas: increasing inverse temperatures from 0 to 1 (default :func:`default_betas`).
        generator: RNG for the chains.

    Returns:
        ``log_z`` (log of the mean importance weight times Z_A), ``log_z_lo`` and
        ``log_z_hi`` (``log(r +- 3 sd(r))`` with r the mean weight, as in Salakhutdinov &
        Murray 2008; ``lo`` is -inf when the interval reaches zero), ``log_z_base``.

    Raises:
        ValueError: the schedule does not run from 0 to 1 or is not increasing.
    """
    betas = default_betas() if betas is None else betas.double()
    if betas[0] != 0 or betas[-1] != 1 or (betas[1:] <= betas[:-1]).any():
        raise ValueError("AIS betas must increase strictly from 0 to 1")
    dev = rbm.W.device
    b_a = b_a.to(dev).double()
    w, b, c = rbm.W.double(), rbm.b.double(), rbm.c.double()
    log_z_a = float(F.softplus(b_a).sum()) + rbm.hidden_dim * math.log(2.0)
    v = torch.bernoulli(torch.sigmoid(b_a).expand(n_runs, -1), generator=generator)
    log_w = torch.zeros(n_runs, dtype=torch.float64, device=dev)
    steps = zip(betas[:-1].tolist(), betas[1:].tolist())
    desc = f"AIS ({n_runs} runs x {len(betas)} temperatures)"
    for prev, beta in track(steps, desc, len(betas) - 1, "temperature"):
        vw_c = v @ w + c  # one product per temperature serves the weight and the Gibbs step
        log_w += _log_ratio(vw_c, v @ b, v @ b_a, beta, prev)
        h = torch.bernoulli(torch.sigmoid(beta * vw_c), generator=generator)
        v = torch.bernoulli(
            torch.sigmoid((1 - beta) * b_a + beta * (h @ w.t() + b)), generator=generator
        )
    shift = float(log_w.max())
    r = torch.exp(log_w - shift)  # importance weights / e^shift
    mean, sd = float(r.mean()), float(r.std() / math.sqrt(n_runs)) if n_runs > 1 else 0.0
    lo = mean - 3 * sd
    return {
        "log_z": log_z_a + shift + math.log(mean),
        "log_z_lo": log_z_a + shift + math.log(lo) if lo > 0 else -math.inf,
        "log_z_hi": log_z_a + shift + math.log(mean + 3 * sd),
        "log_z_base": log_z_a,
    }


@torch.no_grad()
def rbm_ais_log_likelihood(
    model: RBM,
    sampler: Sampler,
    data: DataSplits,
    seed: int,
    final: bool = False,
    n_runs: PositiveInt = 100,
    schedule_steps: Optional[PositiveInt] = None,
    every_eval: bool = False,
) -> dict[str, float]:
    """``sample_metrics`` entry for RBMs: ``log_likelihood_ais`` = mean over the test set of
    ``-F(v) - log Z`` (nats per image, higher is better) with ``log Z`` from
    :func:`ais_log_partition` (``n_runs`` runs; the default 14 501-temperature schedule,
    or ``schedule_steps`` evenly spaced steps for quick checks), plus ``log_z_ais`` and
    its +-3 sd interval (``log_z_ais_lo`` is left out when the interval reaches zero, a
    sign that the weights are too spread for the estimate to be trusted: use more runs or
    temperatures). Runs at the final evaluation only unless ``every_eval``.
    """
    if not (final or every_eval):
        return {}
    gen = torch.Generator(device=model.W.device).manual_seed(seed)
    betas = (
        None
        if schedule_steps is None
        else torch.linspace(0, 1, schedule_steps + 1, dtype=torch.float64)
    )
    bias = base_rate_bias(data.train_float())
    est = ais_log_partition(model, bias, n_runs, betas=betas, generator=gen)
    free = model.free_energy(data.test_x).double().mean()
    out = {
        "log_likelihood_ais": float(-free - est["log_z"]),
        "log_z_ais": est["log_z"],
        "log_z_ais_hi": est["log_z_hi"],
    }
    if math.isfinite(est["log_z_lo"]):  # absent when mean - 3 sd of the weights is <= 0
        out["log_z_ais_lo"] = est["log_z_lo"]
    return out


def _describe_ais(n_runs: int = 100, schedule_steps: Optional[int] = None, **_: Any) -> str:
    """The final-evaluation plan's entry of :func:`rbm_ais_log_likelihood`."""
    temperatures = len(default_betas()) if schedule_steps is None else schedule_steps + 1
    return f"AIS ({n_runs} runs x {temperatures} temperatures)"


rbm_ais_log_likelihood.describe = _describe_ais  # type: ignore[attr-defined]
