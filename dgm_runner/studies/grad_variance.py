"""Study ``grad_variance``: reparameterization vs REINFORCE for grad_mu E_{z~N(mu, I_d)}[f(z)].

Seed 000 Q2 (a)-(b) and seed 004 Q1. With ``f(z) = 0.5 ||z||^2`` the true gradient is
``mu``. Both estimators are built with autograd (so the study checks the estimator
code, not a hand-written formula for it):

* reparameterization (Kingma & Welling 2014, sec. 2.4): ``z = mu + eps``, the gradient
  of ``f(mu + eps)`` w.r.t. ``mu`` (equals ``z``);
* REINFORCE / score function (Williams 1992): ``f(z) grad_mu log N(z; mu, I)``
  (equals ``f(z)(z - mu)``), optionally with the constant baseline ``b = E f(z)``.

Closed forms of the total variance (trace of the covariance) of the single-sample
estimate, derived with ``eps = z - mu``, ``a = ||mu||^2``, ``r = ||eps||^2 ~ chi^2_d``,
``u = mu . eps`` and ``E r = d``, ``E r^2 = d(d+2)``, ``E r^3 = d(d+2)(d+4)``,
``E u^2 r = a(d+2)``, odd moments zero:

* reparameterization: ``tr Cov = E ||eps||^2 = d``;
* REINFORCE: ``E[f^2 r] - a = d(d+2)(d+4)/4 + a(d+2)^2/2 + a^2 d/4 - a``  (~ d^3 / 4);
* REINFORCE, baseline ``b = (a + d)/2``: ``a(d+1) + d(d+4)/2``  (~ d^2 / 2).

An L-sample estimate (the mean of L single-sample ones) has variance ``V / L``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.distributions import Normal

from dgm_runner.config import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from dgm_runner.studies.common import (
    SampleSize,
    check,
    new_figure,
    require,
    save_figure,
    write_result,
)

METHODS = ("reparam", "reinforce", "reinforce_baseline")

EXPRESSIONS = {
    "reparam": "tr Cov = d",
    "reinforce": "tr Cov = [d(d+2)(d+4)/4 + a(d+2)^2/2 + a^2 d/4 - a] / L,  a = ||mu||^2",
    "reinforce_baseline": "tr Cov = [a(d+1) + d(d+4)/2] / L,  baseline b = E f(z) = (a + d)/2",
}


def total_variance(method: str, d: int, mu_sq: float, n_per_estimate: int = 1) -> float:
    """Exact total variance (trace of the covariance) of the L-sample gradient estimate.

    Args:
        method: one of :data:`METHODS`.
        d: dimension of ``z``.
        mu_sq: ``||mu||^2``.
        n_per_estimate: L, the samples averaged per estimate.

    Returns:
        ``tr Cov`` in (units of f)^2 (see the module docstring for the derivation).
    """
    a = float(mu_sq)
    if method == "reparam":
        v = float(d)
    elif method == "reinforce":
        v = d * (d + 2) * (d + 4) / 4 + a * (d + 2) ** 2 / 2 + a * a * d / 4 - a
    elif method == "reinforce_baseline":
        v = a * (d + 1) + d * (d + 4) / 2
    else:
        raise ValueError(f"method={method!r} is invalid: must be one of {METHODS}")
    return v / n_per_estimate


def gradient_estimates(method: str, mu: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """L-sample gradient estimates of ``grad_mu E[0.5 ||z||^2]`` by autograd.

    Args:
        method: one of :data:`METHODS`.
        mu: ``(d,)`` mean of ``z``.
        eps: ``(n, L, d)`` standard-normal draws; ``z = mu + eps``.

    Returns:
        ``(n, d)``: n independent estimates, each the mean of L single-sample ones.
    """
    m = mu.detach().expand_as(eps).clone().requires_grad_(True)
    if method == "reparam":
        f = 0.5 * (m + eps).pow(2).sum(-1)
        surrogate = f
    elif method in ("reinforce", "reinforce_baseline"):
        z = (m + eps).detach()
        f = 0.5 * z.pow(2).sum(-1)
        baseline = 0.5 * (mu.pow(2).sum() + mu.numel()) if method == "reinforce_baseline" else 0.0
        surrogate = (f - baseline) * Normal(m, 1.0).log_prob(z).sum(-1)
    else:
        raise ValueError(f"method={method!r} is invalid: must be one of {METHODS}")
    (grad,) = torch.autograd.grad(surrogate.sum(), m)
    return grad.mean(dim=1)


def summarize(grads: torch.Tensor, mu: torch.Tensor) -> dict[str, float]:
    """Empirical mean test and total variance (with its standard error) of ``(n, d)`` estimates.

    Returns:
        ``mean_chi2_z``: ``chi2 = sum_j t_j^2`` (``t_j`` the t-statistic of coordinate j
        against ``mu_j``; about chi^2_d when the estimator is unbiased) mapped to a
        standard-normal score by the Wilson-Hilferty cube-root transform;
        ``mean_max_abs_t``; ``var`` (sum of per-coordinate sample variances) and ``var_se``.
    """
    n, d = grads.shape
    mean = grads.mean(0)
    centered = grads - mean
    coord_var = centered.pow(2).sum(0) / (n - 1)
    t = (mean - mu) / (coord_var / n).sqrt()
    sq = centered.pow(2).sum(1) * n / (n - 1)
    k = 2.0 / (9.0 * d)
    chi2_z = ((float(t.pow(2).sum()) / d) ** (1.0 / 3.0) - (1.0 - k)) / k**0.5
    return {
        "mean_chi2_z": chi2_z,
        "mean_max_abs_t": float(t.abs().max()),
        "var": float(coord_var.sum()),
        "var_se": float(sq.std() / n**0.5),
    }


def fitted_slope(
    dims: Sequence[int], values: Sequence[float], ses: Sequence[float] | None = None
) -> tuple[float, float]:
    """Least-squares slope of ``log v`` against ``log d`` and its standard error
    (delta method, ``se(log v) = se(v) / v``; 0 when ``ses`` is None)."""
    x = np.log(np.asarray(dims, dtype=float))
    y = np.log(np.asarray(values, dtype=float))
    c = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    slope = float((c * y).sum())
    se = (
        0.0
        if ses is None
        else float(np.sqrt((c**2 * (np.asarray(ses) / np.asarray(values)) ** 2).sum()))
    )
    return slope, se


def run(
    out_dir: str | Path,
    seed: NonNegativeInt = 0,
    dims: tuple[PositiveInt, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256),
    n_samples: SampleSize = 20000,
    n_per_estimate: PositiveInt = 1,
    mu_norm: NonNegativeFloat = 1.0,
    slope_from: PositiveInt = 16,
    z_tol: PositiveFloat = 4.0,
) -> dict[str, Any]:
    """Measure mean and total variance of both estimators for every ``d`` in ``dims``.

    Args:
        out_dir: where ``result.json`` and ``variance.png`` go.
        seed: seed of the torch.Generator drawing ``eps``.
        dims: dimensions d (each >= 1).
        n_samples: n, independent estimates per d (>= 2).
        n_per_estimate: L, samples averaged per estimate.
        mu_norm: ``||mu||``; ``mu = mu_norm * (1, ..., 1) / sqrt(d)``.
        slope_from: the log-log slopes are fitted over ``d >= slope_from``.
        z_tol: allowed |z| of each Monte-Carlo check.

    Returns:
        The result dict (also written to ``result.json``).
    """
    dims = [int(d) for d in dims]
    require(len(dims) > 0, "dims is invalid: must be a non-empty list")
    n, L, mu_norm = int(n_samples), int(n_per_estimate), float(mu_norm)
    fit_dims = [d for d in dims if d >= slope_from]
    require(
        len(fit_dims) >= 2, f"slope_from={slope_from} is invalid: leaves fewer than 2 dims to fit"
    )
    gen = torch.Generator().manual_seed(int(seed))

    per_dim = []
    for d in dims:
        mu = torch.full((d,), mu_norm / d**0.5, dtype=torch.float64)
        eps = torch.randn(n, L, d, generator=gen, dtype=torch.float64)
        row: dict[str, Any] = {"d": d}
        for method in METHODS:
            s = summarize(gradient_estimates(method, mu, eps), mu)
            s["var_closed_form"] = total_variance(method, d, mu_norm**2, L)
            s["var_z"] = (s["var"] - s["var_closed_form"]) / s["var_se"]
            row[method] = s
        per_dim.append(row)

    checks = []
    for method in METHODS:
        rows = [r for r in per_dim if r["d"] in fit_dims]
        slope, slope_se = fitted_slope(
            fit_dims, [r[method]["var"] for r in rows], [r[method]["var_se"] for r in rows]
        )
        exact_slope, _ = fitted_slope(fit_dims, [r[method]["var_closed_form"] for r in rows])
        mean_z = float(np.sum([r[method]["mean_chi2_z"] for r in per_dim]) / len(per_dim) ** 0.5)
        checks.append(
            check(
                f"{method}: mean = mu, pooled chi^2 z over all d", mean_z, 0.0, se=1.0, z_tol=z_tol
            )
        )
        for r in (per_dim[0], per_dim[-1]):
            s = r[method]
            checks.append(
                check(
                    f"{method}: total variance, d={r['d']}",
                    s["var"],
                    s["var_closed_form"],
                    se=s["var_se"],
                    z_tol=z_tol,
                )
            )
        checks.append(
            check(
                f"{method}: log-log slope, d>={slope_from}",
                slope,
                exact_slope,
                se=slope_se,
                z_tol=z_tol,
            )
        )

    result = {
        "study": "grad_variance",
        "question": "seed 000 Q2 (a)-(b), seed 004 Q1",
        "params": {
            "seed": seed,
            "dims": dims,
            "n_samples": n,
            "n_per_estimate": L,
            "mu_norm": mu_norm,
            "slope_from": slope_from,
            "z_tol": z_tol,
        },
        "closed_forms": {
            "mean": "E[estimate] = mu",
            **{f"variance_{k}": v for k, v in EXPRESSIONS.items()},
        },
        "per_dim": per_dim,
        "checks": checks,
    }
    _plot(Path(out_dir) / "variance.png", per_dim, mu_norm, L, checks)
    write_result(out_dir, result)
    return result


def _plot(
    path: Path, per_dim: list[dict[str, Any]], mu_norm: float, L: int, checks: list[dict[str, Any]]
) -> None:
    dims = np.array([r["d"] for r in per_dim])
    grid = np.geomspace(dims.min(), dims.max(), 200)
    slopes = {
        c["quantity"].split(":")[0]: c["measured"] for c in checks if "slope" in c["quantity"]
    }
    fig, (ax,) = new_figure(size=(6.0, 4.5))
    for method, color in zip(METHODS, ("C0", "C3", "C2")):
        ax.errorbar(
            dims,
            [r[method]["var"] for r in per_dim],
            yerr=[2 * r[method]["var_se"] for r in per_dim],
            fmt="o",
            color=color,
            ms=4,
            label=f"{method} (measured, fitted slope {slopes[method]:.2f})",
        )
        ax.plot(
            grid,
            [total_variance(method, d, mu_norm**2, L) for d in grid],
            "-",
            color=color,
            lw=1,
            label=f"{method} (closed form)",
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="dimension d",
        ylabel="total variance of the estimate",
        title=f"grad of E[0.5||z||^2], z~N(mu, I), ||mu||={mu_norm:g}, L={L}",
    )
    ax.legend(fontsize=7)
    save_figure(fig, path)
