"""Study ``bm_meanfield``: the mean-field fixed-point iteration of a Boltzmann machine
(seed 000 Q1).

Energy ``E(x, z) = -x^T W z - x^T B x / 2 - z^T A z / 2`` (A, B symmetric, zero
diagonal), ``q(z | x) = prod_j Bern(z_j; mu_j)``. With ``b = W^T x`` the bound (2) is

    L(mu) = b^T mu + mu^T A mu / 2 + x^T B x / 2 + sum_j H(mu_j) - log Z   <=  log p(x)

(``E_q[z_l z_j] = mu_l mu_j`` for l != j), and dL/dmu_j = 0 gives the fixed point (4)
``mu_j = sigmoid(b_j + sum_{l != j} A_lj mu_l)``. Q1 (c): iterating (5) for all j at once
(synchronous) need not converge:

* counter-example: d = 2, ``A = [[0, -a], [-a, 0]]``, ``b = (b0, b0)``; from mu = (1/2, 1/2)
  both coordinates stay equal, ``m <- g(m) = sigmoid(b0 - a m)``, and the fixed point
  ``m*`` is unstable when ``|g'(m*)| = a m*(1 - m*) > 1``: the iterates settle on a
  2-cycle ``p = g(q), q = g(p)``, ``p != q``, i.e. between (p, p) and (q, q), while
  (p, q) itself is a fixed point of (4) (the one the sequential updates find);
* sufficient condition (Banach): ``max_j sum_l |A_jl| / 4 < 1`` makes the synchronous
  map a contraction in the sup norm (``sigmoid' <= 1/4``), so it converges;
* sequential (coordinate) updates maximise the strictly concave ``L`` in ``mu_j`` exactly,
  so ``L`` never decreases (coordinate ascent).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from dgm_runner.config import NonNegativeInt, PositiveFloat, PositiveInt, Range
from dgm_runner.studies.common import (
    check,
    new_figure,
    require,
    save_figure,
    write_result,
)

EXPRESSIONS = {
    "bound": "L(mu) = b^T mu + mu^T A mu / 2 + x^T B x / 2 + sum_j H(mu_j) - log Z,  b = W^T x",
    "fixed_point": "mu_j = sigmoid(b_j + sum_{l != j} A_lj mu_l)",
    "contraction": "max_j sum_l |A_jl| / 4 < 1  =>  synchronous updates converge",
    "two_cycle": "m* = sigmoid(b0 - a m*) unstable iff a m*(1 - m*) > 1;"
    "  2-cycle p = sigmoid(b0 - a q), q = sigmoid(b0 - a p)",
}


def sigmoid(t: np.ndarray) -> np.ndarray:
    """Logistic function ``1 / (1 + e^-t)``, elementwise."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(t, dtype=float)))


def bernoulli_entropy(mu: np.ndarray) -> np.ndarray:
    """``H(mu) = -mu log mu - (1 - mu) log(1 - mu)`` in nats, 0 at mu in {0, 1}."""
    mu = np.asarray(mu, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(
            np.where(mu > 0, mu * np.log(mu), 0.0) + np.where(mu < 1, (1 - mu) * np.log1p(-mu), 0.0)
        )
    return h


def bound(mu: np.ndarray, b: np.ndarray, A: np.ndarray) -> float:
    """The mu-dependent part of the bound: ``b^T mu + mu^T A mu / 2 + sum_j H(mu_j)`` (nats)."""
    return float(b @ mu + 0.5 * mu @ A @ mu + bernoulli_entropy(mu).sum())


def synchronous(
    b: np.ndarray, A: np.ndarray, n_iter: int, stop_tol: float | None = None
) -> np.ndarray:
    """Iterates of update (5) for all j at once from mu = 1/2: ``(T + 1, d)`` with
    ``T = n_iter``, or fewer when ``max |delta mu| < stop_tol`` earlier."""
    mu = np.full(len(b), 0.5)
    traj = [mu]
    for _ in range(n_iter):
        new = sigmoid(b + A @ mu)
        traj.append(new)
        if stop_tol is not None and np.abs(new - mu).max() < stop_tol:
            break
        mu = new
    return np.asarray(traj)


def sequential(
    b: np.ndarray, A: np.ndarray, n_sweeps: int, stop_tol: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Coordinate updates j = 1..d per sweep from mu = 1/2 (stops early when a sweep
    moves ``max |delta mu| < stop_tol``).

    Returns:
        ``(traj (T + 1, d)`` after each of the T sweeps, ``bounds (T * d + 1,)`` after
        each single-coordinate update).
    """
    mu = np.full(len(b), 0.5)
    traj, bounds = [mu.copy()], [bound(mu, b, A)]
    for _ in range(n_sweeps):
        for j in range(len(b)):
            mu[j] = sigmoid(b[j] + A[j] @ mu)  # A_jj = 0: mu_j itself does not enter
            bounds.append(bound(mu, b, A))
        traj.append(mu.copy())
        if stop_tol is not None and np.abs(traj[-1] - traj[-2]).max() < stop_tol:
            break
    return np.asarray(traj), np.asarray(bounds)


def converged_at(traj: np.ndarray, tol: float) -> int | None:
    """First step t with ``max |mu_t - mu_{t-1}| < tol``, or None."""
    steps = np.abs(np.diff(traj, axis=0)).max(axis=1)
    hits = np.nonzero(steps < tol)[0]
    return int(hits[0]) + 1 if len(hits) else None


def random_model(rng: np.random.Generator, visible: int, hidden: int, scale: float):
    """Random ``W (D, d) ~ N(0, 1)``, ``A (d, d)`` symmetric zero-diagonal ``~ N(0, scale^2)``,
    ``B (D, D)`` likewise, and ``x ~ Bern(1/2)^D``."""

    def sym(k):
        m = np.triu(rng.normal(0.0, scale, (k, k)), 1)
        return m + m.T

    return (
        rng.normal(size=(visible, hidden)),
        sym(hidden),
        sym(visible),
        rng.integers(0, 2, visible).astype(float),
    )


def log_marginal_and_log_z(W, A, B, x) -> tuple[float, float]:
    """``log p(x)`` and ``log Z`` of the Boltzmann machine by enumerating all (x, z)."""

    def states(k):
        return np.array(list(itertools.product((0.0, 1.0), repeat=k)))

    xs, zs = states(W.shape[0]), states(W.shape[1])
    neg_e = (
        (xs @ W @ zs.T)
        + 0.5 * np.einsum("ij,jk,ik->i", xs, B, xs)[:, None]
        + 0.5 * np.einsum("ij,jk,ik->i", zs, A, zs)[None, :]
    )
    log_z = float(np.logaddexp.reduce(neg_e.ravel()))
    row = np.nonzero((xs == x).all(1))[0][0]
    return float(np.logaddexp.reduce(neg_e[row])) - log_z, log_z


def two_cycle_fixed_point(a: float, b0: float) -> float:
    """The fixed point ``m* = sigmoid(b0 - a m*)`` of the symmetric 2-unit map
    (bisection; a > 0)."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if sigmoid(b0 - a * mid) > mid else (lo, mid)
    return 0.5 * (lo + hi)


def run(
    out_dir: str | Path,
    seed: NonNegativeInt = 0,
    visible: PositiveInt = 8,
    hidden: Annotated[int, Range(ge=2)] = 8,
    scales: tuple[PositiveFloat, ...] = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
    n_models: PositiveInt = 200,
    max_iter: Annotated[int, Range(ge=3)] = 500,
    tol: PositiveFloat = 1e-9,
    cycle_coupling: PositiveFloat = 10.0,
    cycle_bias: float = 2.5,
    enum_visible: PositiveInt = 4,
    enum_hidden: Annotated[int, Range(ge=2)] = 6,
) -> dict[str, Any]:
    """Sweep random models for synchronous vs sequential convergence; run the 2-cycle example;
    check the bound by enumeration on a small model.

    Args:
        out_dir: where ``result.json`` and ``meanfield.png`` go.
        seed: numpy seed of the random models.
        visible, hidden: D and d of the swept models.
        scales: std of the entries of A (W has std 1).
        n_models: random models per scale.
        max_iter: synchronous iterations / sequential sweeps; tol: convergence threshold on
            max |delta mu|.
        cycle_coupling, cycle_bias: ``a`` and ``b0`` of the counter-example.
        enum_visible, enum_hidden: size of the model checked by enumeration (2^(D+d) states).
    """
    D, d, n_models, max_iter = int(visible), int(hidden), int(n_models), int(max_iter)
    tol, a, b0 = float(tol), float(cycle_coupling), float(cycle_bias)
    ev, eh = int(enum_visible), int(enum_hidden)
    require(
        ev + eh <= 16,
        f"enum_visible + enum_hidden = {ev + eh} is invalid: must be <= 16 (2^16 states)",
    )
    require(len(scales) > 0, "scales is invalid: must be a non-empty list")
    rng = np.random.default_rng(seed)

    sweep, contraction_total, contraction_converged, min_increment = [], 0, 0, np.inf
    for scale in scales:
        scale = float(scale)
        n_sync = n_seq = 0
        for _ in range(n_models):
            W, A, _, x = random_model(rng, D, d, scale)
            b = W.T @ x
            sync_ok = converged_at(synchronous(b, A, max_iter, tol), tol) is not None
            seq_traj, seq_bounds = sequential(b, A, max_iter, tol)
            n_sync += sync_ok
            n_seq += converged_at(seq_traj, tol) is not None
            min_increment = min(min_increment, float(np.diff(seq_bounds).min()))
            if np.abs(A).sum(1).max() / 4 < 1:
                contraction_total += 1
                contraction_converged += sync_ok
        sweep.append(
            {
                "scale": scale,
                "sync_converged": n_sync / n_models,
                "sequential_converged": n_seq / n_models,
            }
        )

    # The counter-example: two units with strong mutual inhibition.
    A2, b2 = np.array([[0.0, -a], [-a, 0.0]]), np.array([b0, b0])
    cyc = synchronous(b2, A2, max_iter)
    p, q = cyc[-1, 0], cyc[-2, 0]
    m_star = two_cycle_fixed_point(a, b0)
    cyc_seq, cyc_seq_bounds = sequential(b2, A2, max_iter, tol)
    cyc_sync_bounds = np.array([bound(m, b2, A2) for m in cyc[:50]])

    # The bound against log p(x) on a model small enough to enumerate.
    W, A, B, x = random_model(rng, ev, eh, 1.0)
    mu = sequential(W.T @ x, A, max_iter, tol)[0][-1]
    log_px, log_z = log_marginal_and_log_z(W, A, B, x)
    full_bound = bound(mu, W.T @ x, A) + 0.5 * x @ B @ x - log_z
    zs = np.array(list(itertools.product((0.0, 1.0), repeat=eh)))
    qz = np.prod(np.where(zs == 1, mu, 1 - mu), axis=1)
    log_joint = x @ W @ zs.T + 0.5 * x @ B @ x + 0.5 * np.einsum("ij,jk,ik->i", zs, A, zs) - log_z
    enum_bound = float(qz @ log_joint + bernoulli_entropy(mu).sum())

    checks = [
        check(
            "2-cycle: |mu_T - mu_{T-2}| (period 2)", abs(cyc[-1, 0] - cyc[-3, 0]), 0.0, abs_tol=1e-9
        ),
        check("2-cycle: amplitude |p - q|", abs(p - q), 0.1, relation=">=", abs_tol=0.0),
        check("2-cycle: p = sigmoid(b0 - a q)", p, float(sigmoid(b0 - a * q)), abs_tol=1e-9),
        check(
            "fixed point m* unstable: a m*(1 - m*)",
            a * m_star * (1 - m_star),
            1.0,
            relation=">=",
            abs_tol=0.0,
        ),
        check(
            "2-cycle example: sequential updates converge",
            float(converged_at(cyc_seq, tol) is not None),
            1.0,
            abs_tol=0.0,
        ),
        check(
            "sequential updates: min bound increment",
            min(min_increment, float(np.diff(cyc_seq_bounds).min())),
            0.0,
            relation=">=",
            abs_tol=1e-10,
        ),
        check(
            "2-cycle: synchronous updates decrease the bound (min increment)",
            float(np.diff(cyc_sync_bounds).min()),
            0.0,
            relation="<=",
            abs_tol=0.0,
        ),
        check(
            f"sync converged | contraction (n={contraction_total})",
            contraction_converged / max(contraction_total, 1),
            1.0,
            abs_tol=0.0,
        ),
        check("bound: closed form vs enumeration over z", full_bound, enum_bound, abs_tol=1e-9),
        check("bound <= log p(x) (enumeration)", full_bound, log_px, relation="<=", abs_tol=1e-12),
    ]
    result = {
        "study": "bm_meanfield",
        "question": "seed 000 Q1 (b)-(c)",
        "params": {
            "seed": seed,
            "visible": D,
            "hidden": d,
            "scales": list(scales),
            "n_models": n_models,
            "max_iter": max_iter,
            "tol": tol,
            "cycle_coupling": a,
            "cycle_bias": b0,
            "enum_visible": ev,
            "enum_hidden": eh,
        },
        "closed_forms": EXPRESSIONS,
        "sweep": sweep,
        "two_cycle": {
            "p": p,
            "q": q,
            "fixed_point": m_star,
            "instability": a * m_star * (1 - m_star),
            "sequential_limit": cyc_seq[-1],
        },
        "enumeration": {"log_px": log_px, "bound": full_bound, "gap": log_px - full_bound},
        "checks": checks,
    }
    _plot(
        Path(out_dir) / "meanfield.png",
        sweep,
        cyc,
        cyc_seq,
        cyc_sync_bounds,
        cyc_seq_bounds,
        m_star,
        d,
    )
    write_result(out_dir, result)
    return result


def _plot(path, sweep, cyc, cyc_seq, sync_bounds, seq_bounds, m_star, d) -> None:
    fig, (ax1, ax2, ax3) = new_figure(3, size=(4.2, 3.6))
    scales = [r["scale"] for r in sweep]
    ax1.plot(scales, [r["sync_converged"] for r in sweep], "o-", label="synchronous (5)")
    ax1.plot(scales, [r["sequential_converged"] for r in sweep], "s--", label="sequential")
    ax1.axvline(
        4 / (d - 1) / math.sqrt(2 / math.pi),
        color="gray",
        ls=":",
        lw=1,
        label="typical contraction edge",
    )
    ax1.set(
        xscale="log",
        xlabel="std of A entries",
        ylabel="fraction converged",
        title=f"random models, d={d}",
    )
    ax1.legend(fontsize=7)
    t = np.arange(40)
    ax2.plot(t, cyc[:40, 0], "o-", ms=3, label="synchronous mu_1")
    ax2.plot(
        np.arange(min(40, len(cyc_seq))),
        cyc_seq[:40, 0],
        "s-",
        ms=3,
        label="sequential mu_1 (per sweep)",
    )
    ax2.axhline(m_star, color="gray", ls=":", lw=1, label="unstable fixed point m*")
    ax2.set(xlabel="iteration", ylabel="mu_1", title="2-unit counter-example")
    ax2.legend(fontsize=7)
    ax3.plot(np.arange(len(sync_bounds)), sync_bounds, "o-", ms=3, label="synchronous")
    ax3.plot(
        np.arange(len(seq_bounds[:80])) / 2,
        seq_bounds[:80],
        "s-",
        ms=3,
        label="sequential (per coordinate)",
    )
    ax3.set(
        xlabel="iteration (sweeps)", ylabel="bound L(mu) (+ const)", title="bound along the updates"
    )
    ax3.legend(fontsize=7)
    save_figure(fig, path)
