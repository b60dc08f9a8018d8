"""Study ``mfvi_blr``: mean-field VI for Bayesian linear regression (seed 000 Q3).

Model ``y_i = beta^T x_i + eps_i``, ``beta ~ N(0, I_d)``, ``eps_i ~ N(0, sigma^2)``;
mean-field ``q(beta) = prod_j N(beta_j | mu_j, s_j^2)``. With ``c_j = sum_i x_ij^2`` and
``R = ||y - X mu||^2 + sum_j c_j s_j^2`` (= ``E_q ||y - X beta||^2``), the ELBO has no
expectation left (Q3 a):

    ELBO = -n/2 log(2 pi sigma^2) - R / (2 sigma^2)
           - 1/2 sum_j (mu_j^2 + s_j^2) + sum_j log s_j + d/2

and its gradients (Q3 b; gradient *ascent* on the ELBO = descent on -ELBO):

    dELBO/dmu    = X^T (y - X mu) / sigma^2 - mu
    dELBO/ds_j   = -c_j s_j / sigma^2 - s_j + 1 / s_j
    dELBO/dsigma = -n / sigma + R / sigma^3

At a fixed sigma the exact posterior is ``N(m, Lambda^-1)`` with precision
``Lambda = X^T X / sigma^2 + I`` and ``m = Lambda^-1 X^T y / sigma^2``; the mean-field
optimum has ``mu = m`` and ``s_j^2 = 1 / Lambda_jj`` (Bishop, PRML, sec. 10.1.2), and
``ELBO + KL(q || posterior) = log p(y | X, sigma)`` exactly.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from dgm_runner.config import NonNegativeInt, PositiveFloat, PositiveInt
from dgm_runner.studies.common import SampleSize, check, new_figure, save_figure, write_result

EXPRESSIONS = {
    "elbo": "-n/2 log(2 pi sigma^2) - R/(2 sigma^2) - 1/2 sum_j (mu_j^2 + s_j^2)"
    " + sum_j log s_j + d/2,"
    "  R = ||y - X mu||^2 + sum_j c_j s_j^2,  c_j = sum_i x_ij^2",
    "grad_mu": "X^T (y - X mu) / sigma^2 - mu",
    "grad_s": "-c_j s_j / sigma^2 - s_j + 1/s_j",
    "grad_sigma": "-n/sigma + R/sigma^3",
    "optimum": "mu = Lambda^-1 X^T y / sigma^2,  s_j^2 = 1/Lambda_jj,"
    "  Lambda = X^T X / sigma^2 + I",
    "identity": "ELBO + KL(q || p(beta | y)) = log N(y; 0, sigma^2 I + X X^T)",
}


def elbo(X: np.ndarray, y: np.ndarray, mu: np.ndarray, s: np.ndarray, sigma: float) -> float:
    """Closed-form ELBO (nats) of the mean-field q; ``X (n, d)``, ``y (n,)``, ``mu, s (d,)``."""
    n, d = X.shape
    R = np.sum((y - X @ mu) ** 2) + np.sum((X**2).sum(0) * s**2)
    return float(
        -0.5 * n * math.log(2 * math.pi * sigma**2)
        - R / (2 * sigma**2)
        - 0.5 * np.sum(mu**2 + s**2)
        + np.sum(np.log(s))
        + 0.5 * d
    )


def elbo_gradients(X: np.ndarray, y: np.ndarray, mu: np.ndarray, s: np.ndarray, sigma: float):
    """Closed-form gradients of :func:`elbo`: ``(d/dmu (d,), d/ds (d,), d/dsigma float)``."""
    n = X.shape[0]
    c = (X**2).sum(0)
    resid = y - X @ mu
    R = np.sum(resid**2) + np.sum(c * s**2)
    return (
        X.T @ resid / sigma**2 - mu,
        -c * s / sigma**2 - s + 1.0 / s,
        float(-n / sigma + R / sigma**3),
    )


def fit(X: np.ndarray, y: np.ndarray, lr: float, n_steps: int, sigma0: float = 1.0):
    """Gradient ascent on ``ELBO / n`` from ``mu = 0, s = 1, sigma = sigma0``.

    Returns:
        ``(mu (d,), s (d,), sigma, trace)`` with ``trace`` the ELBO after every step.

    Raises:
        ValueError: an ``s_j`` or ``sigma`` left (0, inf): the step ``lr`` is too large.
    """
    n, d = X.shape
    mu, s, sigma = np.zeros(d), np.ones(d), float(sigma0)
    trace = []
    for _ in range(n_steps):
        g_mu, g_s, g_sigma = elbo_gradients(X, y, mu, s, sigma)
        mu, s, sigma = mu + lr * g_mu / n, s + lr * g_s / n, sigma + lr * g_sigma / n
        if not (np.all(s > 0) and sigma > 0 and np.all(np.isfinite(s)) and math.isfinite(sigma)):
            raise ValueError(
                f"lr={lr} is invalid: gradient ascent left s > 0, sigma > 0 (use a smaller lr)"
            )
        trace.append(elbo(X, y, mu, s, sigma))
    return mu, s, sigma, np.asarray(trace)


def exact_posterior(X: np.ndarray, y: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact posterior of beta at noise ``sigma``: mean ``(d,)`` and precision ``(d, d)``."""
    precision = X.T @ X / sigma**2 + np.eye(X.shape[1])
    return np.linalg.solve(precision, X.T @ y / sigma**2), precision


def log_evidence(X: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """``log p(y | X, sigma) = log N(y; 0, sigma^2 I + X X^T)`` in nats."""
    cov = sigma**2 * np.eye(X.shape[0]) + X @ X.T
    _, logdet = np.linalg.slogdet(cov)
    return float(-0.5 * (len(y) * math.log(2 * math.pi) + logdet + y @ np.linalg.solve(cov, y)))


def kl_to_posterior(
    mu: np.ndarray, s: np.ndarray, mean: np.ndarray, precision: np.ndarray
) -> float:
    """``KL(N(mu, diag s^2) || N(mean, precision^-1))`` in nats."""
    d = len(mu)
    diff = mu - mean
    _, logdet_prec = np.linalg.slogdet(precision)
    return float(
        0.5
        * (
            np.sum(np.diag(precision) * s**2)
            + diff @ precision @ diff
            - d
            - logdet_prec
            - np.sum(np.log(s**2))
        )
    )


def elbo_monte_carlo(
    X, y, mu, s, sigma, n_mc: int, rng: np.random.Generator
) -> tuple[float, float]:
    """``E_q[log p(y, beta) - log q(beta)]`` from ``n_mc`` draws of q: (mean, standard error)."""
    beta = mu + s * rng.standard_normal((n_mc, len(mu)))
    resid = y[None, :] - beta @ X.T
    log_lik = -0.5 * len(y) * math.log(2 * math.pi * sigma**2) - 0.5 * (resid**2).sum(1) / sigma**2
    log_prior = -0.5 * (beta**2).sum(1) - 0.5 * len(mu) * math.log(2 * math.pi)
    log_q = (-0.5 * ((beta - mu) / s) ** 2 - np.log(s) - 0.5 * math.log(2 * math.pi)).sum(1)
    w = log_lik + log_prior - log_q
    return float(w.mean()), float(w.std(ddof=1) / math.sqrt(n_mc))


def finite_difference_error(X, y, mu, s, sigma, h: float = 1e-6) -> float:
    """Max relative error of :func:`elbo_gradients` against central differences of :func:`elbo`."""
    theta = np.concatenate([mu, s, [sigma]])
    d = len(mu)

    def f(t):
        return elbo(X, y, t[:d], t[d : 2 * d], t[-1])

    numeric = np.array(
        [(f(theta + h * e) - f(theta - h * e)) / (2 * h) for e in np.eye(len(theta))]
    )
    g_mu, g_s, g_sigma = elbo_gradients(X, y, mu, s, sigma)
    analytic = np.concatenate([g_mu, g_s, [g_sigma]])
    return float(np.max(np.abs(numeric - analytic) / (1.0 + np.abs(analytic))))


def run(
    out_dir: str | Path,
    seed: NonNegativeInt = 0,
    n_data: SampleSize = 200,
    dim: PositiveInt = 5,
    sigma_true: PositiveFloat = 0.5,
    lr: PositiveFloat = 0.05,
    n_steps: PositiveInt = 3000,
    n_mc: SampleSize = 20000,
    z_tol: PositiveFloat = 4.0,
) -> dict[str, Any]:
    """Fit the mean-field q and sigma by gradient ascent on synthetic data; compare with the
    exact posterior, the log evidence and a Monte-Carlo ELBO.

    Args:
        out_dir: where ``result.json`` and ``mfvi.png`` go.
        seed: numpy seed of the data (``x ~ N(0, I)``, ``beta ~ N(0, I)``, noise) and the MC draws.
        n_data, dim: n examples of dimension d.
        sigma_true: noise std of the synthetic data.
        lr: step size on ``ELBO / n``; n_steps: gradient steps.
        n_mc: draws of q for the Monte-Carlo ELBO.
        z_tol: allowed |z| of the Monte-Carlo check.
    """
    n, d = int(n_data), int(dim)
    sigma_true, lr = float(sigma_true), float(lr)
    n_steps, n_mc = int(n_steps), int(n_mc)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    beta = rng.standard_normal(d)
    y = X @ beta + sigma_true * rng.standard_normal(n)

    mu, s, sigma, trace = fit(X, y, lr, n_steps)
    mean, precision = exact_posterior(X, y, sigma)
    value = elbo(X, y, mu, s, sigma)
    mc, mc_se = elbo_monte_carlo(X, y, mu, s, sigma, n_mc, rng)
    evidence = log_evidence(X, y, sigma)
    kl = kl_to_posterior(mu, s, mean, precision)
    R = np.sum((y - X @ mu) ** 2) + np.sum((X**2).sum(0) * s**2)
    grad_norm = float(
        np.sqrt(sum(np.sum(np.square(g)) for g in elbo_gradients(X, y, mu, s, sigma)))
    )
    mf_var = 1.0 / np.diag(precision)

    checks = [
        check(
            "max_j |mu_j - posterior mean_j|", float(np.max(np.abs(mu - mean))), 0.0, abs_tol=1e-6
        ),
        check(
            "max_j |s_j^2 Lambda_jj - 1|",
            float(np.max(np.abs(s**2 / mf_var - 1))),
            0.0,
            abs_tol=1e-6,
        ),
        check("sigma^2 (fitted) vs E_q||y - X beta||^2 / n", sigma**2, R / n, abs_tol=1e-8),
        check("closed-form ELBO vs Monte Carlo", mc, value, se=mc_se, z_tol=z_tol),
        check("ELBO + KL(q||posterior) vs log evidence", value + kl, evidence, abs_tol=1e-6),
        check("ELBO <= log evidence", value, evidence, relation="<=", abs_tol=1e-9),
        check(
            "gradients vs finite differences (max rel. error)",
            finite_difference_error(X, y, mu, s, sigma),
            0.0,
            abs_tol=1e-5,
        ),
    ]
    result = {
        "study": "mfvi_blr",
        "question": "seed 000 Q3 (a)-(b)",
        "params": {
            "seed": seed,
            "n_data": n,
            "dim": d,
            "sigma_true": sigma_true,
            "lr": lr,
            "n_steps": n_steps,
            "n_mc": n_mc,
            "z_tol": z_tol,
        },
        "closed_forms": EXPRESSIONS,
        "fitted": {"mu": mu, "s": s, "sigma": sigma, "elbo": value, "final_grad_norm": grad_norm},
        "exact": {
            "posterior_mean": mean,
            "meanfield_var": mf_var,
            "posterior_var": np.diag(np.linalg.inv(precision)),
            "log_evidence": evidence,
            "kl_q_posterior": kl,
            "beta_true": beta,
        },
        "elbo_monte_carlo": {"mean": mc, "se": mc_se},
        "checks": checks,
    }
    _plot(
        Path(out_dir) / "mfvi.png",
        trace,
        evidence,
        mu,
        mean,
        s,
        mf_var,
        np.diag(np.linalg.inv(precision)),
    )
    write_result(out_dir, result)
    return result


def _plot(path, trace, evidence, mu, mean, s, mf_var, post_var) -> None:
    fig, (ax1, ax2, ax3) = new_figure(3, size=(4.2, 3.6))
    steps = np.arange(1, len(trace) + 1)
    ax1.plot(steps, trace, label="ELBO (closed form)")
    ax1.axhline(evidence, color="k", ls="--", lw=1, label="log evidence at fitted sigma")
    ax1.set(
        xscale="log",
        xlabel="gradient step",
        ylabel="nats",
        title="gradient ascent",
        ylim=(evidence - 40, evidence + 5),
    )
    ax1.legend(fontsize=7)
    j = np.arange(len(mu))
    ax2.plot(j, mean, "ks", mfc="none", ms=9, label="exact posterior mean")
    ax2.plot(j, mu, "C0o", label="mean-field mu")
    ax2.set(xlabel="j", ylabel="beta_j", title="means")
    ax2.legend(fontsize=7)
    ax3.plot(j, post_var, "k^", mfc="none", ms=9, label="posterior variance (Lambda^-1)_jj")
    ax3.plot(j, mf_var, "ks", mfc="none", ms=9, label="1 / Lambda_jj (closed form)")
    ax3.plot(j, s**2, "C0o", label="mean-field s_j^2")
    ax3.set(xlabel="j", ylabel="variance", title="variances (mean field under-estimates)")
    ax3.legend(fontsize=7)
    save_figure(fig, path)
