"""Study ``gaussian_kl``: KL between 1-D Gaussians against Monte Carlo (seed 001 Q1 (g)-(h)).

(g) ``KL(q || q) = 0`` for any q (the log-ratio is 0 at every point).
(h) equal variances:
``KL(N(mu_phi, sigma^2) || N(mu_p, sigma^2)) = (mu_p - mu_phi)^2 / (2 sigma^2)``.

Measured: ``KL = E_{z ~ q}[log q(z) - log p(z)]`` averaged over draws of q, with the
densities from ``torch.distributions.Normal``. With ``z = mu_phi + sigma eps`` the
log-ratio is ``Delta^2 / (2 sigma^2) + eps Delta / sigma`` (``Delta = mu_phi - mu_p``), so
the single-draw standard deviation is ``|Delta| / sigma``. The closed form is also checked
against the runner's own ``dgm_runner.distributions.kl_normal_diag``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.distributions import Normal

from dgm_runner.config import NonNegativeInt, PositiveFloat
from dgm_runner.distributions import kl_normal_diag
from dgm_runner.studies.common import (
    SampleSize,
    check,
    new_figure,
    require,
    save_figure,
    write_result,
)

#: One case ``[mu_phi, mu_p, sigma]`` of the equal-variance KL (``sigma > 0``).
Case = tuple[float, float, PositiveFloat]

EXPRESSIONS = {
    "self": "KL(q || q) = 0",
    "equal_variance": "KL(N(mu_phi, sigma^2) || N(mu_p, sigma^2))"
    " = (mu_p - mu_phi)^2 / (2 sigma^2)",
}


def kl_equal_variance(mu_phi: float, mu_p: float, sigma: float) -> float:
    """Closed-form ``KL(N(mu_phi, sigma^2) || N(mu_p, sigma^2))`` in nats."""
    return (mu_p - mu_phi) ** 2 / (2 * sigma**2)


def kl_monte_carlo(q: Normal, p: Normal, n: int, generator: torch.Generator) -> tuple[float, float]:
    """``E_{z~q}[log q(z) - log p(z)]`` from n draws: (mean, standard error), nats."""
    z = q.loc + q.scale * torch.randn(n, generator=generator, dtype=torch.float64)
    ratio = q.log_prob(z) - p.log_prob(z)
    return float(ratio.mean()), float(ratio.std() / math.sqrt(n))


def run(
    out_dir: str | Path,
    seed: NonNegativeInt = 0,
    n_samples: SampleSize = 100000,
    cases: tuple[Case, ...] = (
        (0.0, 0.5, 1.0),
        (1.0, -1.0, 0.5),
        (2.0, 0.5, 2.0),
        (-1.0, 2.0, 1.0),
    ),
    z_tol: PositiveFloat = 4.0,
) -> dict[str, Any]:
    """Monte-Carlo KL(q || q) and equal-variance KL for each ``(mu_phi, mu_p, sigma)`` in ``cases``.

    Args:
        out_dir: where ``result.json`` and ``kl.png`` go.
        seed: torch.Generator seed; n_samples: draws of q per case.
        cases: ``[mu_phi, mu_p, sigma]`` triples (sigma > 0).
        z_tol: allowed |z| of each Monte-Carlo check.
    """
    n = int(n_samples)
    require(len(cases) > 0, "cases is invalid: must be a non-empty list of [mu_phi, mu_p, sigma]")
    gen = torch.Generator().manual_seed(int(seed))
    rows, checks = [], []
    for case in cases:
        mu_phi, mu_p, sigma = (float(v) for v in case)
        q = Normal(
            torch.tensor(mu_phi, dtype=torch.float64), torch.tensor(sigma, dtype=torch.float64)
        )
        p = Normal(
            torch.tensor(mu_p, dtype=torch.float64), torch.tensor(sigma, dtype=torch.float64)
        )
        self_mc, _ = kl_monte_carlo(q, q, n, gen)
        mc, se = kl_monte_carlo(q, p, n, gen)
        exact = kl_equal_variance(mu_phi, mu_p, sigma)
        logvar = torch.tensor([2 * math.log(sigma)], dtype=torch.float64)
        runner = float(
            kl_normal_diag(
                torch.tensor([mu_phi], dtype=torch.float64),
                logvar,
                torch.tensor([mu_p], dtype=torch.float64),
                logvar,
            )
        )
        rows.append(
            {
                "mu_phi": mu_phi,
                "mu_p": mu_p,
                "sigma": sigma,
                "kl_self_mc": self_mc,
                "kl_mc": mc,
                "se": se,
                "se_closed_form": abs(mu_phi - mu_p) / sigma / math.sqrt(n),
                "kl_closed_form": exact,
                "kl_normal_diag": runner,
            }
        )
        label = f"mu_phi={mu_phi:g}, mu_p={mu_p:g}, sigma={sigma:g}"
        checks.append(check(f"KL(q||q), {label}", self_mc, 0.0, abs_tol=1e-12))
        checks.append(check(f"KL(q||p) Monte Carlo, {label}", mc, exact, se=se, z_tol=z_tol))
        checks.append(check(f"KL(q||p) kl_normal_diag, {label}", runner, exact, abs_tol=1e-12))
    result = {
        "study": "gaussian_kl",
        "question": "seed 001 Q1 (g)-(h)",
        "params": {"seed": seed, "n_samples": n, "cases": [list(c) for c in cases], "z_tol": z_tol},
        "closed_forms": EXPRESSIONS,
        "cases": rows,
        "checks": checks,
    }
    _plot(Path(out_dir) / "kl.png", rows)
    write_result(out_dir, result)
    return result


def _plot(path: Path, rows: list[dict[str, Any]]) -> None:
    fig, (ax,) = new_figure(size=(5.5, 4.0))
    t = np.linspace(0, max(abs(r["mu_phi"] - r["mu_p"]) / r["sigma"] for r in rows) * 1.1, 200)
    ax.plot(t, t**2 / 2, "k-", lw=1, label="(mu_p - mu_phi)^2 / (2 sigma^2)")
    ax.errorbar(
        [abs(r["mu_phi"] - r["mu_p"]) / r["sigma"] for r in rows],
        [r["kl_mc"] for r in rows],
        yerr=[2 * r["se"] for r in rows],
        fmt="o",
        color="C3",
        label="Monte Carlo (+-2 SE)",
    )
    ax.plot(
        [0.0] * len(rows),
        [r["kl_self_mc"] for r in rows],
        "s",
        color="C0",
        label="KL(q || q), Monte Carlo",
    )
    ax.set(
        xlabel="|mu_p - mu_phi| / sigma",
        ylabel="KL (nats)",
        title="KL between equal-variance Gaussians",
    )
    ax.legend(fontsize=8)
    save_figure(fig, path)
