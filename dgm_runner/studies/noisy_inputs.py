"""Study ``noisy_inputs``: densities of noisy inputs X + E (seed 000 extra credit EC-1).

(a) ``X ~ U[-1, 1]``, ``E ~ N(0, 1)``: ``Y = X + E`` has density
``f(y) = (1/2) int_{-1}^{1} phi(y - x) dx = [Phi(y + 1) - Phi(y - 1)] / 2`` and CDF
``G(y) = [Psi(y + 1) - Psi(y - 1)] / 2`` with ``Psi(t) = t Phi(t) + phi(t)`` (``Psi' = Phi``),
so a histogram's expected bin counts are exact: ``n (G(b) - G(a))``.

(b) ``X`` uniform on ``{-1, +1}^d``, ``E ~ N(0, I_d)``: ``f(0) = E_X phi_d(X)`` and by
Jensen (``exp`` convex) ``f(0) >= (2 pi)^(-d/2) exp(-E||X||^2 / 2) = (2 pi e)^(-d/2)``. Every
vertex has ``||x||^2 = d``, so the bound is attained: ``f(0) = (2 pi e)^(-d/2)``.
Monte Carlo cannot evaluate a density at a point without a kernel, so the study uses
the Gaussian-kernel estimate ``K_h(Y) = N(Y; 0, h^2 I)``, whose mean is exactly the
density of ``X + sqrt(1 + h^2) E`` at 0: ``(2 pi (1 + h^2))^(-d/2) exp(-d / (2 (1 + h^2)))``
-> the bound as h -> 0.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch

from dgm_runner.config import NonNegativeInt, PositiveFloat, PositiveInt, Range
from dgm_runner.studies.common import (
    SampleSize,
    check,
    new_figure,
    require,
    save_figure,
    write_result,
)

EXPRESSIONS = {
    "density": "f(y) = [Phi(y+1) - Phi(y-1)] / 2",
    "cdf": "G(y) = [Psi(y+1) - Psi(y-1)] / 2,  Psi(t) = t Phi(t) + phi(t)",
    "bound_at_origin": "f(0) >= (2 pi e)^(-d/2)  (Jensen; equality since ||x||^2 = d on {-1,+1}^d)",
    "kde_mean": "E K_h(X + E) at 0 = (2 pi (1 + h^2))^(-d/2) exp(-d / (2 (1 + h^2)))",
}


def _phi(t: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)


def density(y: torch.Tensor) -> torch.Tensor:
    """Density of ``U[-1, 1] + N(0, 1)`` at ``y`` (any shape, float64)."""
    return 0.5 * (torch.special.ndtr(y + 1) - torch.special.ndtr(y - 1))


def cdf(y: torch.Tensor) -> torch.Tensor:
    """CDF of ``U[-1, 1] + N(0, 1)`` at ``y`` (any shape; +-inf allowed)."""

    def psi(t):
        finite = torch.where(torch.isfinite(t), t, torch.zeros_like(t))
        value = finite * torch.special.ndtr(finite) + _phi(finite)
        return torch.where(torch.isfinite(t), value, torch.where(t > 0, t, torch.zeros_like(t)))

    out = 0.5 * (psi(y + 1) - psi(y - 1))
    return torch.where(torch.isinf(y), (y > 0).to(y.dtype), out)


def origin_lower_bound(d: int) -> float:
    """Jensen lower bound ``(2 pi e)^(-d/2)`` on the density of ``X + E`` at 0, X on
    ``{-1,+1}^d``."""
    return (2 * math.pi * math.e) ** (-d / 2)


def origin_density_by_enumeration(d: int) -> float:
    """``f(0) = 2^-d sum_x N(0; x, I_d)`` summed over the ``2^d`` vertices (d <= 16)."""
    vertices = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=d)), dtype=torch.float64)
    log_phi = -0.5 * vertices.pow(2).sum(1) - 0.5 * d * math.log(2 * math.pi)
    return float(torch.exp(torch.logsumexp(log_phi, 0) - d * math.log(2)))


def kde_mean_at_origin(d: int, h: float) -> float:
    """Exact mean of the Gaussian-kernel estimate ``N(Y; 0, h^2 I)`` of the density at 0."""
    v = 1.0 + h * h
    return (2 * math.pi * v) ** (-d / 2) * math.exp(-d / (2 * v))


def _pool_small_bins(counts: torch.Tensor, probs: torch.Tensor, n: int, min_expected: float = 5.0):
    """Merge the bins expected to hold fewer than ``min_expected`` draws into one, so the
    normal approximation behind the chi^2 and per-bin z-scores holds (Cochran's rule)."""
    small = n * probs < min_expected
    if not small.any():
        return counts, probs
    return (
        torch.cat([counts[~small], counts[small].sum().reshape(1)]),
        torch.cat([probs[~small], probs[small].sum().reshape(1)]),
    )


def run(
    out_dir: str | Path,
    seed: NonNegativeInt = 0,
    n_samples: SampleSize = 200000,
    n_bins: PositiveInt = 40,
    y_range: PositiveFloat = 5.0,
    dims: tuple[Annotated[int, Range(ge=1, le=16)], ...] = (1, 2, 4, 8),
    bandwidths: tuple[PositiveFloat, ...] = (1.0, 0.7, 0.5),
    z_tol: PositiveFloat = 4.0,
) -> dict[str, Any]:
    """Histogram of ``U[-1,1] + N(0,1)`` against its closed form; kernel estimates of the density
    of ``{-1,+1}^d + N(0, I)`` at the origin against their exact means and the bound.

    Args:
        out_dir: where ``result.json`` and ``noisy_inputs.png`` go.
        seed: torch.Generator seed.
        n_samples: draws for (a) and for each d in (b).
        n_bins: histogram bins on ``[-y_range, y_range]`` (plus two tail bins; bins expected
            to hold < 5 draws are pooled into one for the chi^2 test).
        dims: dimensions d for (b) (1 <= d <= 16); bandwidths: kernel widths h > 0.
        z_tol: allowed |z| of each Monte-Carlo check.
    """
    n, n_bins, y_range = int(n_samples), int(n_bins), float(y_range)
    dims, bandwidths = [int(d) for d in dims], [float(h) for h in bandwidths]
    require(len(dims) > 0, "dims is invalid: must be a non-empty list")
    require(len(bandwidths) > 0, "bandwidths is invalid: must be a non-empty list")
    gen = torch.Generator().manual_seed(int(seed))

    # (a) histogram with the exact expected counts (two tail bins make it a full partition)
    y = (2 * torch.rand(n, generator=gen, dtype=torch.float64) - 1) + torch.randn(
        n, generator=gen, dtype=torch.float64
    )
    edges = torch.cat(
        [
            torch.tensor([-math.inf]),
            torch.linspace(-y_range, y_range, n_bins + 1, dtype=torch.float64),
            torch.tensor([math.inf]),
        ]
    ).to(torch.float64)
    counts = (
        torch.bucketize(y, edges[1:-1], right=True).bincount(minlength=n_bins + 2).to(torch.float64)
    )
    probs = cdf(edges[1:]) - cdf(edges[:-1])
    counts, probs = _pool_small_bins(counts, probs, n)
    expected = n * probs
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    dof = len(counts) - 1
    bin_z = (counts - expected) / (expected * (1 - probs)).sqrt()
    grid = torch.linspace(-8, 8, 16001, dtype=torch.float64)
    integral = float(torch.trapezoid(density(grid), grid))

    # (b) kernel estimates at the origin
    origin = []
    for d in dims:
        ys = (2 * torch.randint(0, 2, (n, d), generator=gen) - 1).to(torch.float64) + torch.randn(
            n, d, generator=gen, dtype=torch.float64
        )
        sq = ys.pow(2).sum(1)
        row = {
            "d": d,
            "bound": origin_lower_bound(d),
            "enumeration": origin_density_by_enumeration(d),
            "kde": [],
        }
        for h in bandwidths:
            k = torch.exp(-0.5 * sq / h**2) / (2 * math.pi * h**2) ** (d / 2)
            mean, se = float(k.mean()), float(k.std() / n**0.5)
            exact = kde_mean_at_origin(d, h)
            row["kde"].append(
                {"h": h, "mc": mean, "se": se, "exact_mean": exact, "z": (mean - exact) / se}
            )
        origin.append(row)

    z_worst = max((r for o in origin for r in o["kde"]), key=lambda r: abs(r["z"]))
    checks = [
        check(
            f"(a) histogram chi^2 ({dof} dof) as z = (chi2 - dof)/sqrt(2 dof)",
            (chi2 - dof) / math.sqrt(2 * dof),
            0.0,
            se=1.0,
            z_tol=z_tol,
        ),
        check(
            f"(a) largest |bin z| over {dof + 1} bins",
            float(bin_z.abs().max()),
            0.0,
            se=1.0,
            z_tol=z_tol + 0.5,
        ),
        check("(a) integral of f (trapezoid on [-8, 8])", integral, 1.0, abs_tol=1e-7),
        check(
            "(a) f(0) vs Phi(1) - 1/2 = erf(1/sqrt 2)/2",
            float(density(torch.zeros(1, dtype=torch.float64))),
            0.5 * math.erf(1 / math.sqrt(2)),
            abs_tol=1e-12,
        ),
        check(
            "(b) kernel estimate at 0, worst "
            f"(d={next(o['d'] for o in origin if z_worst in o['kde'])}, "
            f"h={z_worst['h']})",
            z_worst["mc"],
            z_worst["exact_mean"],
            se=z_worst["se"],
            z_tol=z_tol,
        ),
    ]
    for o in origin:
        checks.append(
            check(
                f"(b) f(0) by enumeration vs bound (2 pi e)^(-d/2), d={o['d']}",
                o["enumeration"],
                o["bound"],
                abs_tol=1e-12 * o["bound"],
            )
        )
    result = {
        "study": "noisy_inputs",
        "question": "seed 000 extra credit EC-1 (a)-(b)",
        "params": {
            "seed": seed,
            "n_samples": n,
            "n_bins": n_bins,
            "y_range": y_range,
            "dims": dims,
            "bandwidths": bandwidths,
            "z_tol": z_tol,
        },
        "closed_forms": EXPRESSIONS,
        "histogram": {
            "chi2": chi2,
            "dof": dof,
            "max_abs_bin_z": float(bin_z.abs().max()),
            "density_integral": integral,
        },
        "origin": origin,
        "checks": checks,
    }
    _plot(Path(out_dir) / "noisy_inputs.png", y, y_range, n_bins, origin)
    write_result(out_dir, result)
    return result


def _plot(
    path: Path, y: torch.Tensor, y_range: float, n_bins: int, origin: list[dict[str, Any]]
) -> None:
    fig, (ax1, ax2) = new_figure(2, size=(4.8, 3.8))
    ax1.hist(
        y.numpy(),
        bins=np.linspace(-y_range, y_range, n_bins + 1),
        density=True,
        color="C0",
        alpha=0.5,
        label="histogram of X + E",
    )
    grid = torch.linspace(-y_range, y_range, 400, dtype=torch.float64)
    ax1.plot(grid.numpy(), density(grid).numpy(), "k-", lw=1.5, label="[Phi(y+1) - Phi(y-1)] / 2")
    ax1.set(xlabel="y", ylabel="density", title="(a) X ~ U[-1, 1], E ~ N(0, 1)")
    ax1.legend(fontsize=7)
    hs = np.linspace(0.0, max(r["h"] for r in origin[0]["kde"]), 100)
    for i, o in enumerate(origin):
        color = f"C{i}"
        ax2.errorbar(
            [r["h"] for r in o["kde"]],
            [r["mc"] for r in o["kde"]],
            yerr=[2 * r["se"] for r in o["kde"]],
            fmt="o",
            color=color,
            ms=4,
            label=f"d={o['d']}: kernel estimate (MC)",
        )
        ax2.plot(hs, [kde_mean_at_origin(o["d"], h) for h in hs], "-", color=color, lw=1)
        ax2.plot([0], [o["bound"]], "*", color=color, ms=10)
    ax2.set(
        yscale="log",
        xlabel="kernel width h",
        ylabel="density at 0",
        title="(b) {-1,+1}^d + N(0, I): star = (2 pi e)^(-d/2)",
    )
    ax2.legend(fontsize=7)
    save_figure(fig, path)
