"""Study ``meanfield_families``: KL(q || p) over two mean-field families
(seed 002 Problem 1 (c)-(d)).

Target on ``{0, 1}^N``: ``p(w) proportional to 1 - prod_i w_i``
(beta = 1, ``e^{-Phi} = 1 - prod w``):
uniform on the ``2^N - 1`` configurations other than all-ones, ``log Z = log(2^N - 1)``.
Free energy ``F(q) = sum_w q log(1 - prod w) + H(q) = log Z - KL(q || p)`` (seed eq. 2-3).

Closed-form minimisers (derived here):

* Q2 (one shared factor, ``q(w_i = 1) = theta``): ``q(1, ..., 1) = theta^N > 0`` puts mass
  where p = 0, so KL = inf unless theta = 0: ``q* = delta(0, ..., 0)``, ``KL* = log(2^N - 1)``,
  ``F* = 0``. Not like p at all.
* Q1 (separate factors): KL < inf needs ``prod_i theta_i = 0``, i.e. some ``theta_k = 0``
  (the seed's ``q_1(w_1) = 1 - w_1``); on the remaining coordinates p is uniform, so
  ``KL = log(2^N - 1) - sum_{i != k} H(theta_i)`` is minimised by ``theta_i = 1/2``:
  ``KL* = log(2^N - 1) - (N - 1) log 2 = log(2 - 2^(1-N))`` (-> log 2), ``F* = (N - 1) log 2``.
  It covers half of p's support, uniformly.

Measured: exact KL by enumerating the ``2^N`` configurations, minimised numerically
(a grid over theta for Q2; coordinate-ascent VI (CAVI, Bishop PRML eq. 10.9) from a
random start for Q1; gradient descent on the logits of theta_2..N with the seed's
``q_1 = 1 - w_1`` for Q1).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch

from dgm_runner.config import NonNegativeInt, PositiveInt, Range
from dgm_runner.studies.common import (
    SampleSize,
    check,
    new_figure,
    require,
    save_figure,
    write_result,
)

#: N, the number of coordinates: 2^N - 1 terms are enumerated, so at most 14.
NumCoordinates = Annotated[int, Range(ge=2, le=14)]

EXPRESSIONS = {
    "log_Z": "log(2^N - 1)",
    "Q2": "theta* = 0 (q* = point mass at all-zeros), KL* = log(2^N - 1), max F = 0",
    "Q1": "theta* = (0, 1/2, ..., 1/2) up to permutation, KL* = log(2 - 2^(1-N)),"
    " max F = (N-1) log 2",
}


def configurations(n: int) -> np.ndarray:
    """All of ``{0, 1}^n`` as a ``(2^n, n)`` float array (row k = binary digits of k)."""
    k = np.arange(2**n)[:, None]
    return ((k >> np.arange(n)[::-1]) & 1).astype(float)


def log_unnormalized(w: np.ndarray) -> np.ndarray:
    """``log(1 - prod_i w_i)`` per configuration ``(2^N,)``; -inf at all-ones."""
    with np.errstate(divide="ignore"):
        return np.log(1.0 - w.prod(axis=1))


def product_q(theta: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``q(w) = prod_i theta_i^w_i (1 - theta_i)^(1 - w_i)`` per configuration ``(2^N,)``."""
    return np.prod(np.where(w == 1, theta, 1.0 - theta), axis=1)


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x log y`` with ``0 log y = 0`` (also for y = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, x * np.log(np.where(x > 0, y, 1.0)), 0.0)


def kl_and_free_energy(theta: np.ndarray) -> tuple[float, float, float]:
    """Exact ``(KL(q || p), F(q), log Z)`` in nats by enumeration; KL = inf (F = -inf) when
    q puts mass on the all-ones configuration."""
    w = configurations(len(theta))
    log_pt = log_unnormalized(w)
    log_z = float(np.logaddexp.reduce(log_pt))
    q = product_q(np.asarray(theta, dtype=float), w)
    entropy = -float(_xlogy(q, q).sum())
    energy = float(_xlogy(q, np.exp(log_pt)).sum())  # E_q log(1 - prod w), -inf if q(1..1) > 0
    free_energy = energy + entropy
    return log_z - free_energy, free_energy, log_z


def minimize_shared(n: int, grid_size: int) -> tuple[float, float]:
    """Q2: ``(theta*, KL*)`` minimising the exact KL over a grid of theta in [0, 1]."""
    grid = np.linspace(0.0, 1.0, grid_size)
    kls = np.array([kl_and_free_energy(np.full(n, t))[0] for t in grid])
    best = int(np.argmin(kls))
    return float(grid[best]), float(kls[best])


def cavi(theta0: np.ndarray, n_sweeps: int = 50) -> np.ndarray:
    """Q1 by CAVI: ``q_i(w_i) proportional to exp E_{q_-i}[log p~(w)]`` for i = 1..N, repeated.

    The expectation is exact (enumeration) with ``0 * log 0 = 0``: a value of ``w_i`` whose
    conditional expectation is -inf gets probability 0. Returns theta ``(N,)``.
    """
    theta = np.array(theta0, dtype=float)
    n = len(theta)
    w = configurations(n)
    log_pt = log_unnormalized(w)
    for _ in range(n_sweeps):
        previous = theta.copy()
        for i in range(n):
            others = np.prod(np.where(w == 1, theta, 1.0 - theta)[:, np.arange(n) != i], axis=1)
            e = [float(_xlogy(others * (w[:, i] == v), np.exp(log_pt)).sum()) for v in (0, 1)]
            theta[i] = math.exp(e[1] - np.logaddexp(e[0], e[1])) if e[1] > -math.inf else 0.0
        if np.array_equal(theta, previous):
            break
    return theta


def descend_with_seed_factor(
    n: int, generator: torch.Generator, steps: int = 500, lr: float = 2.0
) -> np.ndarray:
    """Q1 with the seed's ``q_1(w_1) = 1 - w_1``: gradient descent of the exact KL (enumerated
    over the support ``w_1 = 0``) in the logits of ``theta_2..N``. Returns theta ``(N,)``."""
    w = torch.as_tensor(configurations(n), dtype=torch.float64)
    support = w[:, 0] == 0
    log_p = torch.as_tensor(log_unnormalized(w.numpy()), dtype=torch.float64)
    log_p = (log_p - torch.logsumexp(log_p, 0))[support]
    ws = w[support, 1:]
    logits = (6 * torch.rand(n - 1, generator=generator, dtype=torch.float64) - 3).requires_grad_(
        True
    )
    for _ in range(steps):
        theta = torch.sigmoid(logits)
        q = torch.where(ws == 1, theta, 1 - theta).prod(1)
        kl = (q * (q.log() - log_p)).sum()
        (grad,) = torch.autograd.grad(kl, logits)
        with torch.no_grad():
            logits -= lr * grad
    return np.concatenate([[0.0], torch.sigmoid(logits).detach().numpy()])


def kl_q1_closed_form(n: int) -> float:
    """``KL* = log(2 - 2^(1 - N))`` over Q1 (nats)."""
    return math.log(2.0 - 2.0 ** (1 - n))


def run(
    out_dir: str | Path,
    seed: NonNegativeInt = 0,
    n_min: NumCoordinates = 2,
    n_max: NumCoordinates = 10,
    grid_size: SampleSize = 1001,
    n_random: PositiveInt = 200,
) -> dict[str, Any]:
    """Minimise KL(q || p) over Q2 and Q1 for N = n_min..n_max and compare with the closed forms.

    Args:
        out_dir: where ``result.json`` and ``families.png`` go.
        seed: seed of the random starts and random feasible q's.
        n_min, n_max: the range of N (2 <= n_min <= n_max <= 14).
        grid_size: theta grid points for Q2.
        n_random: random q in Q1 per N to check ``KL >= KL*`` and ``F <= log Z``.
    """
    n_min, n_max, grid_size, n_random = int(n_min), int(n_max), int(grid_size), int(n_random)
    require(n_min <= n_max, f"n_max={n_max} is invalid: need n_min <= n_max (n_min={n_min})")
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(seed))

    rows = []
    for n in range(n_min, n_max + 1):
        theta2, kl2 = minimize_shared(n, grid_size)
        theta_cavi = cavi(rng.uniform(0.05, 0.95, n))
        kl_cavi, f_cavi, log_z = kl_and_free_energy(theta_cavi)
        theta_hint = descend_with_seed_factor(n, gen)
        kl_hint = kl_and_free_energy(theta_hint)[0]
        # random q in Q1: a random coordinate switched off (feasible) or none (generic)
        randoms = rng.uniform(0, 1, (n_random, n))
        randoms[: n_random // 2, 0] = 0.0
        rand_stats = [kl_and_free_energy(t) for t in randoms]
        rows.append(
            {
                "N": n,
                "log_Z": log_z,
                "log_Z_closed_form": math.log(2.0**n - 1),
                "Q2_theta": theta2,
                "Q2_kl": kl2,
                "Q2_kl_closed_form": math.log(2.0**n - 1),
                "Q1_theta_cavi": theta_cavi,
                "Q1_kl_cavi": kl_cavi,
                "Q1_free_energy": f_cavi,
                "Q1_theta_seed_factor": theta_hint,
                "Q1_kl_seed_factor": kl_hint,
                "Q1_kl_closed_form": kl_q1_closed_form(n),
                "Q1_free_energy_closed_form": (n - 1) * math.log(2),
                "random_min_kl": min(s[0] for s in rand_stats),
                "random_max_free_energy": max(s[1] for s in rand_stats),
            }
        )

    def worst(key_a, key_b):
        return max(abs(r[key_a] - r[key_b]) for r in rows)

    theta_err = max(
        np.abs(np.sort(r["Q1_theta_cavi"]) - np.r_[0.0, np.full(r["N"] - 1, 0.5)]).max()
        for r in rows
    )
    hint_err = max(
        np.abs(r["Q1_theta_seed_factor"] - np.r_[0.0, np.full(r["N"] - 1, 0.5)]).max() for r in rows
    )
    checks = [
        check(
            "log Z (enumeration) vs log(2^N - 1), max over N",
            worst("log_Z", "log_Z_closed_form"),
            0.0,
            abs_tol=1e-9,
        ),
        check(
            "Q2: theta* on the grid, max over N", max(r["Q2_theta"] for r in rows), 0.0, abs_tol=0.0
        ),
        check(
            "Q2: KL* vs log(2^N - 1), max |diff| over N",
            worst("Q2_kl", "Q2_kl_closed_form"),
            0.0,
            abs_tol=1e-9,
        ),
        check(
            "Q1 (CAVI): sorted theta* vs (0, 1/2, ...), max |diff|", theta_err, 0.0, abs_tol=1e-9
        ),
        check(
            "Q1 (CAVI): KL* vs log(2 - 2^(1-N)), max |diff| over N",
            worst("Q1_kl_cavi", "Q1_kl_closed_form"),
            0.0,
            abs_tol=1e-9,
        ),
        check(
            "Q1 (q_1 = 1 - w_1, gradient descent): theta vs (0, 1/2, ...), max |diff|",
            hint_err,
            0.0,
            abs_tol=1e-6,
        ),
        check(
            "Q1 (q_1 = 1 - w_1): KL vs closed form, max |diff| over N",
            worst("Q1_kl_seed_factor", "Q1_kl_closed_form"),
            0.0,
            abs_tol=1e-9,
        ),
        check(
            "random q in Q1: min_N (min KL - KL*)",
            min(r["random_min_kl"] - r["Q1_kl_closed_form"] for r in rows),
            0.0,
            relation=">=",
            abs_tol=1e-12,
        ),
        check(
            "max F(q) - log Z over N and all q tried",
            max(max(r["random_max_free_energy"], r["Q1_free_energy"]) - r["log_Z"] for r in rows),
            0.0,
            relation="<=",
            abs_tol=1e-12,
        ),
    ]
    result = {
        "study": "meanfield_families",
        "question": "seed 002 Problem 1 (c)-(d)",
        "params": {
            "seed": seed,
            "n_min": n_min,
            "n_max": n_max,
            "grid_size": grid_size,
            "n_random": n_random,
        },
        "closed_forms": EXPRESSIONS,
        "per_N": rows,
        "checks": checks,
    }
    _plot(Path(out_dir) / "families.png", rows)
    write_result(out_dir, result)
    return result


def _plot(path: Path, rows: list[dict[str, Any]]) -> None:
    ns = np.array([r["N"] for r in rows])
    fig, (ax1, ax2) = new_figure(2, size=(4.8, 3.8))
    ax1.plot(ns, [r["Q2_kl"] for r in rows], "o", color="C3", label="Q2 (shared factor), numerical")
    ax1.plot(ns, np.log(2.0**ns - 1), "-", color="C3", lw=1, label="log(2^N - 1)")
    ax1.plot(
        ns, [r["Q1_kl_cavi"] for r in rows], "s", color="C0", label="Q1 (separate factors), CAVI"
    )
    ax1.plot(ns, np.log(2 - 2.0 ** (1 - ns)), "-", color="C0", lw=1, label="log(2 - 2^(1-N))")
    ax1.axhline(math.log(2), color="gray", ls=":", lw=1, label="log 2")
    ax1.set(xlabel="N", ylabel="min KL(q || p) (nats)", title="minimal KL per family")
    ax1.legend(fontsize=7)
    ax2.plot(ns, [r["log_Z"] for r in rows], "k-", label="log Z")
    ax2.plot(ns, [r["Q1_free_energy"] for r in rows], "s", color="C0", label="max F over Q1")
    ax2.plot(ns, [r["log_Z"] - r["Q2_kl"] for r in rows], "o", color="C3", label="max F over Q2")
    ax2.set(xlabel="N", ylabel="nats", title="log Z >= max F(q)")
    ax2.legend(fontsize=7)
    save_figure(fig, path)
