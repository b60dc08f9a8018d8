"""Study ``dummy_gan``: the 1-D dummy GAN, vanilla and Wasserstein (seed 003 written Q1).

Data ``x ~ N(mu, 1)``, latent ``z ~ N(0, 1)``, generator ``G_w(z) = w + z`` (so
``G_w(z) ~ N(w, 1)``); ``w``, ``phi``, ``mu`` are scalars, all values below are in nats.

**(a) Vanilla GAN** (Goodfellow et al. 2014, eq. 1) with ``D_phi(x) = sigmoid(phi x)``
(Q1.1-Q1.3)::

    V(w, phi)  = E_{x~N(mu,1)}[log sigmoid(phi x)] + E_{z~N(0,1)}[log sigmoid(-phi (w + z))]
    dV/dw      = -phi E_z[sigmoid(phi (w + z))]
    dV/dphi    = E_x[x sigmoid(-phi x)] - E_z[(w + z) sigmoid(phi (w + z))]

(``log(1 - sigmoid(t)) = log sigmoid(-t)``). Expectations of a log-sigmoid of a Gaussian
have no elementary closed form, so the reference values are Gauss-Hermite quadrature
(``quad_nodes`` nodes, exact to round-off here; cross-checked against a trapezoid rule in
the tests). Exact statements (the study checks the quadrature against them):

* ``V(mu, phi) = -E_x log(2 + 2 cosh(phi x)) <= -2 log 2`` with equality iff ``phi = 0``:
  when the generator samples the data distribution the best discriminator is
  ``D = 1/2`` everywhere (Q1.3; ibid., Prop. 1 and Thm. 1), ``V = -log 4``.
* ``dV/dphi (w, 0) = (mu - w) / 2`` and ``dV/dw (w, 0) = 0``; ``V`` is strictly concave in
  ``phi`` (``d2V/dphi2 = -E_x[x^2 s(1-s)] - E_z[G^2 s(1-s)] < 0``), so the best response
  ``phi*(w)`` is unique and has the sign of ``mu - w``.
* at ``w = -mu`` the optimal discriminator ``p_data / (p_data + p_G) = sigmoid(2 mu x)``
  lies in the family, so ``argmax_phi V(-mu, phi) = 2 mu`` (ibid., Prop. 1).
* Hessian at the equilibrium ``(mu, 0)``: ``V_phiphi = -(1 + mu^2)/2``,
  ``V_wphi = -1/2``, ``V_ww = 0``. Simultaneous steps ``w -= lr_w dV/dw``,
  ``phi += lr_phi dV/dphi`` linearise to ``J = [[1, lr_w/2], [-lr_phi/2, 1 - lr_phi (1 + mu^2)/2]]``
  whose spectral radius is < 1 for small steps: the concavity in ``phi`` damps the
  rotation and the iterates converge to ``(mu, 0)`` (up to minibatch noise).

**(b) Wasserstein GAN** (Arjovsky et al. 2017) with the critic ``D_phi(x) = phi x``,
``phi in [-1, 1]`` (1-Lipschitz; Q1.4-Q1.6)::

    V(w, phi) = E_x[phi x] - E_z[phi (w + z)] = phi (mu - w)          (exact)
    dV/dw = -phi,   dV/dphi = mu - w
    max_{|phi|<=1} V = |mu - w| = W_1(N(mu, 1), N(w, 1)),  attained at phi = sign(mu - w)
    min_w max_phi V = 0  at  w = mu

The objective is bilinear, and gradient dynamics rotate around ``(mu, 0)`` instead of
descending to it. With ``u = w - mu``:

* simultaneous steps: ``J = [[1, lr_w], [-lr_phi, 1]]``, ``|eig| = sqrt(1 + lr_w lr_phi) > 1``:
  the iterates spiral outwards until the projection onto ``|phi| <= 1`` stops them; in the
  small-step limit the orbits are the ellipses ``lr_phi u^2 + lr_w phi^2 = const`` and the
  largest one inside the box gives a limit cycle with amplitude
  ``|w - mu| ~ sqrt(lr_w / lr_phi)`` (plus O(lr) from the discrete outward drift). The
  last iterate never converges, but its **time average** does (the orbit is centred on
  ``mu``); measured: the mean of ``w`` over the last ``avg_fraction`` of the steps, with a
  batch-means standard error (``n_batches`` batches, which also absorbs the leftover
  partial period), and the amplitude ``(max - min) / 2`` over that window.
* alternating steps (``phi`` first, then ``w`` at the new ``phi``):
  ``J = [[1 - lr_w lr_phi, lr_w], [-lr_phi, 1]]``, ``det J = 1``, ``|eig| = 1`` for
  ``lr_w lr_phi < 4``; ``lr_phi u^2 + lr_w phi^2 - lr_w lr_phi u phi`` is exactly conserved
  (away from the box), i.e. the radius ``r = sqrt(u^2 / rho + phi^2)``, ``rho = lr_w / lr_phi``,
  up to O(lr). So alternating with *both* step sizes decaying by the same factor still does
  not converge: the steps only slow the rotation, and ``r`` ends at ``min(1, r_0)``
  (``r_0 = sqrt((w0 - mu)^2 / rho + phi0^2)``; the projection cuts larger orbits down to
  ``r = 1``). Decaying only the generator's step
  (two time-scale, ``lr_w,t = lr_w / (1 + t / decay_steps)``, ``lr_phi`` fixed) shrinks the
  reachable ellipse: ``|w_t - mu| <= sqrt(lr_w,t / lr_phi) -> 0`` (slowly, ~ t^(-1/2)).
  Averaging the iterates of the constant-step run (the time average above) also gives ``mu``.

Training uses Monte-Carlo minibatches (``batch_size`` fresh draws of ``x`` and ``z`` per
step) and torch autograd through the same per-sample objective that the Monte-Carlo
checks use (:func:`objective_terms`); those checks compare ``V``, ``dV/dw``, ``dV/dphi``
from ``n_mc`` paired draws (per-sample autograd, standard error from the per-sample
spread) with the quadrature / exact values at ``check_points``.

Sources: seed 003 (ECE1508 assignment 3) written question 1; Goodfellow et al. 2014,
"Generative Adversarial Nets"; Arjovsky, Chintala, Bottou 2017, "Wasserstein GAN".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dgm_runner.studies.common import (
    check,
    new_figure,
    require,
    require_int,
    require_positive,
    save_figure,
    torch_threads,
    write_result,
)

KINDS = ("vanilla", "wgan")
SCHEMES = ("simultaneous", "alternating")

EXPRESSIONS = {
    "vanilla_V": "E_x[log sigmoid(phi x)] + E_z[log sigmoid(-phi (w + z))],"
    "  x ~ N(mu,1), z ~ N(0,1)",
    "vanilla_dV_dw": "-phi E_z[sigmoid(phi (w + z))]",
    "vanilla_dV_dphi": "E_x[x sigmoid(-phi x)] - E_z[(w + z) sigmoid(phi (w + z))]",
    "vanilla_at_w_eq_mu": "V(mu, phi) = -E_x log(2 + 2 cosh(phi x)) <= -2 log 2, max at phi = 0",
    "vanilla_dV_dphi_at_0": "dV/dphi (w, 0) = (mu - w) / 2",
    "vanilla_argmax_at_w_eq_minus_mu": "argmax_phi V(-mu, phi) = 2 mu (D* = sigmoid(2 mu x))",
    "vanilla_hessian_at_equilibrium": "V_phiphi = -(1 + mu^2)/2, V_wphi = -1/2, V_ww = 0"
    " at (mu, 0)",
    "wgan_V": "phi (mu - w)",
    "wgan_grads": "dV/dw = -phi,  dV/dphi = mu - w",
    "wgan_inner_max": "max_{|phi|<=1} phi (mu - w) = |mu - w| at phi = sign(mu - w)",
    "wgan_minmax": "argmin_w |mu - w| = mu",
    "wgan_simultaneous_amplitude": "limit cycle |w - mu| <= sqrt(lr_w / lr_phi) (small steps)",
    "wgan_alternating_invariant": "lr_phi u^2 + lr_w phi^2 - lr_w lr_phi u phi conserved"
    " (u = w - mu); radius sqrt(u^2 lr_phi / lr_w + phi^2) -> min(1, r0)",
    "wgan_two_time_scale": "|w_t - mu| <= sqrt(lr_w,t / lr_phi) -> 0",
}


# --- objective, quadrature -------------------------------------------------------------


def objective_terms(
    kind: str, x: torch.Tensor, z: torch.Tensor, w: torch.Tensor, phi: torch.Tensor
) -> torch.Tensor:
    """Per-sample objective ``log D(x_i) + log(1 - D(G(z_i)))`` (vanilla) or
    ``D(x_i) - D(G(z_i))`` (wgan) for paired draws ``x, z (n,)``; ``w, phi`` scalars or ``(n,)``.
    The mean over ``i`` is the Monte-Carlo ``V(w, phi)``; returns ``(n,)``."""
    g = w + z
    if kind == "vanilla":
        return F.logsigmoid(phi * x) + F.logsigmoid(-phi * g)
    return phi * x - phi * g


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def _log_sigmoid(t: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -t)


class GaussQuadrature:
    """``E_{y ~ N(m, 1)}[f(y)]`` by probabilists' Gauss-Hermite quadrature with ``n`` nodes.

    ``expect(f, m)`` evaluates ``f`` at ``m[..., None] + nodes`` (``m`` any shape) and
    returns an array of the shape of ``m``.
    """

    def __init__(self, n: int = 200):
        nodes, weights = np.polynomial.hermite_e.hermegauss(n)
        self.nodes, self.weights = nodes, weights / math.sqrt(2 * math.pi)

    def expect(self, f, m) -> np.ndarray:
        y = np.asarray(m, dtype=np.float64)[..., None] + self.nodes
        return f(y) @ self.weights


def vanilla_value(quad: GaussQuadrature, mu: float, w, phi) -> np.ndarray:
    """Quadrature ``V(w, phi)`` of the vanilla GAN (nats); ``w, phi`` broadcastable arrays."""
    w, phi = np.broadcast_arrays(np.asarray(w, float), np.asarray(phi, float))
    p = phi[..., None]
    real = quad.expect(lambda x: _log_sigmoid(p * x), np.full(w.shape, mu))
    fake = quad.expect(lambda y: _log_sigmoid(-p * y), w)
    return real + fake


def vanilla_grad(quad: GaussQuadrature, mu: float, w, phi) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature ``(dV/dw, dV/dphi)`` of the vanilla GAN from the closed-form derivatives."""
    w, phi = np.broadcast_arrays(np.asarray(w, float), np.asarray(phi, float))
    p = phi[..., None]
    d_w = -phi * quad.expect(lambda y: _sigmoid(p * y), w)
    d_phi = quad.expect(lambda x: x * _sigmoid(-p * x), np.full(w.shape, mu)) - quad.expect(
        lambda y: y * _sigmoid(p * y), w
    )
    return d_w, d_phi


def vanilla_d2_dphi2(quad: GaussQuadrature, mu: float, w, phi) -> np.ndarray:
    """Quadrature ``d2V/dphi2 = -E_x[x^2 s(1-s)] - E_G[G^2 s(1-s)] < 0`` (s the sigmoid)."""
    w, phi = np.broadcast_arrays(np.asarray(w, float), np.asarray(phi, float))
    p = phi[..., None]

    def f(y):
        s = _sigmoid(p * y)
        return -(y**2) * s * (1 - s)

    return quad.expect(f, np.full(w.shape, mu)) + quad.expect(f, w)


def vanilla_best_response(
    quad: GaussQuadrature, mu: float, w, lo: float = -50.0, hi: float = 50.0, iters: int = 80
) -> np.ndarray:
    """``phi*(w) = argmax_phi V(w, phi)`` by bisection on the decreasing ``dV/dphi``."""
    w = np.asarray(w, float)
    a, b = np.full(w.shape, lo), np.full(w.shape, hi)
    for _ in range(iters):
        m = 0.5 * (a + b)
        up = vanilla_grad(quad, mu, w, m)[1] > 0
        a, b = np.where(up, m, a), np.where(up, b, m)
    return 0.5 * (a + b)


def hessian_fd(quad: GaussQuadrature, mu: float, w: float, phi: float, h: float = 1e-4):
    """``(V_ww, V_wphi, V_phiphi)`` by central differences of the quadrature ``V``."""

    def v(dw, dp):
        return float(vanilla_value(quad, mu, w + dw, phi + dp))

    v0 = v(0, 0)
    v_ww = (v(h, 0) - 2 * v0 + v(-h, 0)) / h**2
    v_pp = (v(0, h) - 2 * v0 + v(0, -h)) / h**2
    v_wp = (v(h, h) - v(h, -h) - v(-h, h) + v(-h, -h)) / (4 * h**2)
    return v_ww, v_wp, v_pp


def wgan_value(mu: float, w, phi) -> np.ndarray:
    """Exact ``V(w, phi) = phi (mu - w)`` of the linear critic."""
    return np.asarray(phi, float) * (mu - np.asarray(w, float))


def monte_carlo(
    kind: str, mu: float, w: float, phi: float, n: int, generator: torch.Generator
) -> dict[str, tuple[float, float]]:
    """``V``, ``dV/dw``, ``dV/dphi`` at ``(w, phi)`` from ``n`` paired draws ``(x_i, z_i)``.

    Per-sample gradients by autograd (``w`` and ``phi`` repeated into ``(n,)`` leaves);
    returns ``{"V": (mean, se), "dV_dw": ..., "dV_dphi": ...}`` with se = std / sqrt(n).
    """
    x = mu + torch.randn(n, generator=generator, dtype=torch.float64)
    z = torch.randn(n, generator=generator, dtype=torch.float64)
    w_i = torch.full((n,), float(w), dtype=torch.float64, requires_grad=True)
    phi_i = torch.full((n,), float(phi), dtype=torch.float64, requires_grad=True)
    v = objective_terms(kind, x, z, w_i, phi_i)
    v.sum().backward()
    out = {}
    for key, t in (("V", v.detach()), ("dV_dw", w_i.grad), ("dV_dphi", phi_i.grad)):
        out[key] = (float(t.mean()), float(t.std()) / math.sqrt(n))
    return out


# --- training ----------------------------------------------------------------------------


def step_size(lr: float, decay_steps: float, t: int) -> float:
    """``lr / (1 + t / decay_steps)``; constant when ``decay_steps`` is 0."""
    return lr / (1.0 + t / decay_steps) if decay_steps > 0 else lr


def train(
    kind: str,
    mu: float,
    w0: float,
    phi0: float,
    steps: int,
    batch_size: int,
    lr_w: float,
    lr_phi: float,
    scheme: str,
    generator: torch.Generator,
    decay_w: float = 0.0,
    decay_phi: float = 0.0,
) -> np.ndarray:
    """Gradient descent on ``w`` and ascent on ``phi`` of the minibatch objective.

    ``simultaneous``: both gradients at the same point and minibatch; ``alternating``: a
    ``phi`` step on one minibatch, then a ``w`` step at the new ``phi`` on a fresh one.
    WGAN's ``phi`` is projected onto ``[-1, 1]`` after each step. Step ``t`` uses
    :func:`step_size` with ``decay_w`` / ``decay_phi``.

    Returns:
        ``(steps + 1, 2)`` array of ``(w_t, phi_t)``, row 0 the start.
    """
    w = torch.tensor(float(w0), dtype=torch.float64, requires_grad=True)
    phi = torch.tensor(float(phi0), dtype=torch.float64, requires_grad=True)
    traj = np.empty((steps + 1, 2))
    traj[0] = w0, phi0
    lim = 1.0 if kind == "wgan" else math.inf

    # all minibatches drawn up front (one call each): row k is the k-th fresh minibatch
    n_draws = steps if scheme == "simultaneous" else 2 * steps
    xs = mu + torch.randn(n_draws, batch_size, generator=generator, dtype=torch.float64)
    zs = torch.randn(n_draws, batch_size, generator=generator, dtype=torch.float64)
    drawn = iter(zip(xs, zs))

    def batch():
        return next(drawn)

    for t in range(steps):
        ew, ep = step_size(lr_w, decay_w, t), step_size(lr_phi, decay_phi, t)
        if scheme == "simultaneous":
            gw, gp = torch.autograd.grad(objective_terms(kind, *batch(), w, phi).mean(), (w, phi))
            with torch.no_grad():
                w -= ew * gw
                phi += ep * gp
                phi.clamp_(-lim, lim)
        else:
            (gp,) = torch.autograd.grad(objective_terms(kind, *batch(), w, phi).mean(), (phi,))
            with torch.no_grad():
                phi += ep * gp
                phi.clamp_(-lim, lim)
            (gw,) = torch.autograd.grad(objective_terms(kind, *batch(), w, phi).mean(), (w,))
            with torch.no_grad():
                w -= ew * gw
        traj[t + 1] = w.item(), phi.item()
    return traj


def window_stats(traj: np.ndarray, mu: float, avg_fraction: float, n_batches: int) -> dict:
    """Mean of ``w`` and ``phi`` over the last ``avg_fraction`` of the steps, their batch-means
    standard errors (``n_batches`` equal batches), the amplitude ``(max - min) / 2`` of ``w``
    there and the final iterate."""
    start = len(traj) - int(round(avg_fraction * (len(traj) - 1)))
    window = traj[start:]
    usable = (len(window) // n_batches) * n_batches
    means = window[len(window) - usable :].reshape(n_batches, -1, 2).mean(axis=1)
    se = means.std(axis=0, ddof=1) / math.sqrt(n_batches)
    return {
        "window_start_step": start,
        "w_mean": float(window[:, 0].mean()),
        "w_mean_se": float(se[0]),
        "phi_mean": float(window[:, 1].mean()),
        "phi_mean_se": float(se[1]),
        "w_amplitude": float((window[:, 0].max() - window[:, 0].min()) / 2),
        "w_final": float(traj[-1, 0]),
        "phi_final": float(traj[-1, 1]),
        "abs_w_final_minus_mu": float(abs(traj[-1, 0] - mu)),
    }


def _thin(traj: np.ndarray, max_points: int = 400) -> list[list[float]]:
    stride = max(1, math.ceil(len(traj) / max_points))
    keep = np.r_[np.arange(0, len(traj), stride), len(traj) - 1]
    return traj[np.unique(keep)].tolist()


# --- the study ---------------------------------------------------------------------------


def run(
    out_dir: str | Path,
    seed: int = 0,
    mu: float = 1.0,
    w0: float = -1.0,
    phi0: float = 0.0,
    batch_size: int = 256,
    vanilla_steps: int = 3000,
    vanilla_lr_w: float = 0.1,
    vanilla_lr_phi: float = 0.1,
    wgan_steps: int = 4000,
    wgan_lr_w: float = 0.05,
    wgan_lr_phi: float = 0.05,
    wgan_decay_steps: float = 100.0,
    avg_fraction: float = 0.5,
    n_batches: int = 10,
    check_points: Sequence[Sequence[float]] = ((-0.5, 0.0), (-1.0, 0.5), (2.5, -1.5)),
    n_mc: int = 200000,
    quad_nodes: int = 200,
    amplitude_rtol: float = 0.25,
    z_tol: float = 4.0,
) -> dict[str, Any]:
    """Closed forms, Monte-Carlo checks and training of the dummy GAN, vanilla and WGAN.

    Args:
        out_dir: where ``result.json`` and ``trajectories.png`` go.
        seed: torch.Generator seed of every draw (checks and training).
        mu: data mean; w0, phi0: start of every training run (``|phi0| <= 1``).
        batch_size: draws of ``x`` and of ``z`` per training step.
        vanilla_steps, vanilla_lr_w, vanilla_lr_phi: simultaneous steps of the vanilla GAN.
        wgan_steps, wgan_lr_w, wgan_lr_phi: the three WGAN runs (simultaneous, constant
            steps; alternating, both steps / ``(1 + t / wgan_decay_steps)``; alternating,
            only the generator's step decaying).
        avg_fraction, n_batches: time-average window (last fraction of the steps) and its
            batch-means standard error.
        check_points: ``[w, phi]`` pairs for the Monte-Carlo checks of V and its gradient.
        n_mc: paired draws per Monte-Carlo check; quad_nodes: Gauss-Hermite nodes.
        amplitude_rtol: allowed relative error of the small-step amplitude predictions.
        z_tol: allowed |z| of each Monte-Carlo check.
    """
    mu, w0, phi0 = (float(v) for v in (mu, w0, phi0))
    for name, v in (("mu", mu), ("w0", w0), ("phi0", phi0)):
        require(math.isfinite(v), f"{name}={v!r} is invalid: must be finite")
    require(abs(phi0) <= 1, f"phi0={phi0!r} is invalid: must lie in the critic box [-1, 1]")
    batch_size = require_int("batch_size", batch_size, 2)
    vanilla_steps, wgan_steps = (
        require_int("vanilla_steps", vanilla_steps, 2),
        require_int("wgan_steps", wgan_steps, 2),
    )
    lrs = {
        k: require_positive(k, v)
        for k, v in (
            ("vanilla_lr_w", vanilla_lr_w),
            ("vanilla_lr_phi", vanilla_lr_phi),
            ("wgan_lr_w", wgan_lr_w),
            ("wgan_lr_phi", wgan_lr_phi),
        )
    }
    decay = require_positive("wgan_decay_steps", wgan_decay_steps)
    require(
        0 < avg_fraction <= 1 if isinstance(avg_fraction, (int, float)) else False,
        f"avg_fraction={avg_fraction!r} is invalid: must be in (0, 1]",
    )
    n_batches = require_int("n_batches", n_batches, 2)
    for steps in (vanilla_steps, wgan_steps):
        require(
            round(avg_fraction * steps) >= 2 * n_batches,
            f"n_batches={n_batches} is invalid: the averaging window of {avg_fraction} x {steps}"
            " steps needs at least 2 steps per batch",
        )
    require(
        len(check_points) > 0 and all(len(p) == 2 for p in check_points),
        "check_points is invalid: must be a non-empty list of [w, phi]",
    )
    n_mc, quad_nodes = require_int("n_mc", n_mc, 2), require_int("quad_nodes", quad_nodes, 20)
    amplitude_rtol = require_positive("amplitude_rtol", amplitude_rtol)
    gen = torch.Generator().manual_seed(int(seed))
    quad = GaussQuadrature(quad_nodes)
    checks: list[dict[str, Any]] = []

    # (a) vanilla: exact statements against quadrature
    phis = np.linspace(-3, 3, 601)
    v_mu = vanilla_value(quad, mu, mu, phis)
    v_mu_0 = float(vanilla_value(quad, mu, mu, 0.0))
    phi_star_mu = float(vanilla_best_response(quad, mu, mu))
    phi_star_minus_mu = float(vanilla_best_response(quad, mu, -mu))
    checks.append(check("vanilla V(mu, 0) = -2 log 2", v_mu_0, -2 * math.log(2), abs_tol=1e-12))
    checks.append(
        check("vanilla argmax_phi V(mu, phi) = 0", phi_star_mu, 0.0, abs_tol=1e-9)
    )
    checks.append(
        check(
            "vanilla max_{phi != 0} V(mu, phi) <= -2 log 2 (grid |phi| <= 3)",
            float(v_mu[phis != 0].max()),
            -2 * math.log(2),
            relation="<=",
            abs_tol=0.0,
        )
    )
    if mu != 0:
        checks.append(
            check(
                "vanilla argmax_phi V(-mu, phi) = 2 mu", phi_star_minus_mu, 2 * mu, abs_tol=1e-8
            )
        )
    hess = hessian_fd(quad, mu, mu, 0.0)
    hess_exact = (0.0, -0.5, -(1 + mu**2) / 2)
    for name, got, want in zip(("V_ww", "V_wphi", "V_phiphi"), hess, hess_exact):
        checks.append(
            check(f"vanilla {name} at (mu, 0), finite differences", got, want, abs_tol=1e-5)
        )

    # Monte Carlo vs quadrature / exact at the check points
    mc_rows = []
    for w, phi in check_points:
        w, phi = float(w), float(phi)
        label = f"(w, phi) = ({w:g}, {phi:g})"
        gw, gp = vanilla_grad(quad, mu, w, phi)
        ref = {
            "vanilla": {
                "V": float(vanilla_value(quad, mu, w, phi)),
                "dV_dw": float(gw) + 0.0,  # + 0.0: no "-0" in the table
                "dV_dphi": float(gp),
            },
            "wgan": {"V": phi * (mu - w) + 0.0, "dV_dw": -phi + 0.0, "dV_dphi": mu - w},
        }
        for kind in KINDS:
            mc = monte_carlo(kind, mu, w, phi, n_mc, gen)
            mc_rows.append(
                {"kind": kind, "w": w, "phi": phi, "monte_carlo": mc, "exact": ref[kind]}
            )
            for key in ("V", "dV_dw", "dV_dphi"):
                mean, se = mc[key]
                exact = se <= 1e-12 * (1 + abs(mean))  # a per-sample constant (round-off spread)
                checks.append(
                    check(
                        f"{kind} {key.replace('_', '/')} Monte Carlo, {label}",
                        mean,
                        ref[kind][key],
                        se=None if exact else se,
                        z_tol=z_tol,
                        abs_tol=1e-12,
                    )
                )
        if phi == 0:
            checks.append(
                check(
                    f"vanilla dV/dphi = (mu - w)/2, {label}",
                    ref["vanilla"]["dV_dphi"],
                    (mu - w) / 2,
                    abs_tol=1e-12,
                )
            )

    # (a) vanilla training: simultaneous steps, converges
    with torch_threads(1):
        van = train(
            "vanilla",
            mu,
            w0,
            phi0,
            vanilla_steps,
            batch_size,
            lrs["vanilla_lr_w"],
            lrs["vanilla_lr_phi"],
            "simultaneous",
            gen,
        )
    require(
        np.isfinite(van).all() and np.abs(van).max() < 1e6,
        f"vanilla_lr_w={vanilla_lr_w}, vanilla_lr_phi={vanilla_lr_phi} is invalid: the iterates"
        " diverged",
    )
    van_stats = window_stats(van, mu, avg_fraction, n_batches)
    lw, lp = lrs["vanilla_lr_w"], lrs["vanilla_lr_phi"]
    jac = np.array([[1.0, lw / 2], [-lp / 2, 1 - lp * (1 + mu**2) / 2]])
    van_radius = float(np.abs(np.linalg.eigvals(jac)).max())
    checks.append(
        check(
            "vanilla simultaneous: time-average w = mu",
            van_stats["w_mean"],
            mu,
            se=van_stats["w_mean_se"],
            z_tol=z_tol,
        )
    )
    checks.append(
        check(
            "vanilla simultaneous: time-average phi = 0",
            van_stats["phi_mean"],
            0.0,
            se=van_stats["phi_mean_se"],
            z_tol=z_tol,
        )
    )

    # (b) WGAN training: three schemes
    lw, lp = lrs["wgan_lr_w"], lrs["wgan_lr_phi"]
    rho = lw / lp
    runs = {
        "simultaneous": dict(scheme="simultaneous"),
        "alternating_equal_decay": dict(scheme="alternating", decay_w=decay, decay_phi=decay),
        "alternating_two_time_scale": dict(scheme="alternating", decay_w=decay),
    }
    wtraj = {}
    with torch_threads(1):
        for name, kw in runs.items():
            wtraj[name] = train(
                "wgan", mu, w0, phi0, wgan_steps, batch_size, lw, lp, generator=gen, **kw
            )
    require(
        all(np.isfinite(t).all() for t in wtraj.values()),
        f"wgan_lr_w={wgan_lr_w}, wgan_lr_phi={wgan_lr_phi} is invalid: the iterates diverged",
    )
    wstats = {k: window_stats(t, mu, avg_fraction, n_batches) for k, t in wtraj.items()}
    sim = wstats["simultaneous"]
    amp_pred = math.sqrt(rho)
    checks.append(
        check(
            "wgan simultaneous: time-average w = mu",
            sim["w_mean"],
            mu,
            se=sim["w_mean_se"],
            z_tol=z_tol,
        )
    )
    checks.append(
        check(
            f"wgan simultaneous: amplitude of w = sqrt(lr_w/lr_phi) (rtol {amplitude_rtol})",
            sim["w_amplitude"],
            amp_pred,
            abs_tol=amplitude_rtol * amp_pred,
        )
    )
    eq = wtraj["alternating_equal_decay"]
    r0 = math.sqrt((w0 - mu) ** 2 / rho + phi0**2)
    radius_final = math.sqrt((eq[-1, 0] - mu) ** 2 / rho + eq[-1, 1] ** 2)
    radius_pred = min(1.0, r0)
    checks.append(
        check(
            "wgan alternating, equal decaying steps: final radius = min(1, r0)"
            f" (rtol {amplitude_rtol})",
            radius_final,
            radius_pred,
            abs_tol=amplitude_rtol * radius_pred,
        )
    )
    tts = wstats["alternating_two_time_scale"]
    lr_w_final = step_size(lw, decay, wgan_steps - 1)
    bound_final = math.sqrt(lr_w_final / lp)
    checks.append(
        check(
            "wgan two time-scale: |w_T - mu| <= sqrt(lr_w,T / lr_phi)",
            tts["abs_w_final_minus_mu"],
            bound_final,
            relation="<=",
            abs_tol=amplitude_rtol * bound_final,
        )
    )
    checks.append(
        check(
            "wgan two time-scale: time-average w = mu",
            tts["w_mean"],
            mu,
            se=tts["w_mean_se"],
            z_tol=z_tol,
        )
    )

    result = {
        "study": "dummy_gan",
        "question": "seed 003 written Q1",
        "params": {
            "seed": seed,
            "mu": mu,
            "w0": w0,
            "phi0": phi0,
            "batch_size": batch_size,
            "vanilla_steps": vanilla_steps,
            "wgan_steps": wgan_steps,
            **lrs,
            "wgan_decay_steps": decay,
            "avg_fraction": avg_fraction,
            "n_batches": n_batches,
            "check_points": [list(map(float, p)) for p in check_points],
            "n_mc": n_mc,
            "quad_nodes": quad_nodes,
            "amplitude_rtol": amplitude_rtol,
            "z_tol": z_tol,
        },
        "closed_forms": EXPRESSIONS,
        "vanilla": {
            "V_mu_0": v_mu_0,
            "argmax_phi_V_mu": phi_star_mu,
            "argmax_phi_V_minus_mu": phi_star_minus_mu,
            "hessian_fd_at_equilibrium": dict(zip(("V_ww", "V_wphi", "V_phiphi"), hess)),
            "hessian_exact_at_equilibrium": dict(zip(("V_ww", "V_wphi", "V_phiphi"), hess_exact)),
            "simultaneous_jacobian_spectral_radius": van_radius,
            "training": van_stats,
            "trajectory": _thin(van),
        },
        "wgan": {
            "amplitude_prediction_simultaneous": amp_pred,
            "radius_start": r0,
            "radius_final_equal_decay": radius_final,
            "radius_prediction_equal_decay": radius_pred,
            "lr_w_final": lr_w_final,
            "two_time_scale_bound_final": bound_final,
            "simultaneous_jacobian_spectral_radius": math.sqrt(1 + lw * lp),
            "training": wstats,
            "trajectories": {k: _thin(t) for k, t in wtraj.items()},
        },
        "monte_carlo": mc_rows,
        "checks": checks,
    }
    _plot(Path(out_dir) / "trajectories.png", quad, mu, van, wtraj, rho)
    write_result(out_dir, result)
    return result


def _plot(path: Path, quad, mu, van, wtraj, rho) -> None:
    fig, (ax1, ax2) = new_figure(2, size=(5.2, 4.4))
    w_lo = min(van[:, 0].min(), mu - 1.5) - 0.3
    w_hi = max(van[:, 0].max(), mu + 1.5) + 0.3
    p_ext = max(1.5, np.abs(van[:, 1]).max() + 0.3)
    ww, pp = np.meshgrid(np.linspace(w_lo, w_hi, 81), np.linspace(-p_ext, p_ext, 81))
    quad_small = GaussQuadrature(60)
    cs = ax1.contour(
        ww, pp, vanilla_value(quad_small, mu, ww, pp), levels=15, cmap="viridis", linewidths=0.7
    )
    ax1.clabel(cs, fontsize=6, fmt="%.2f")
    wg = np.linspace(w_lo, w_hi, 81)
    best = vanilla_best_response(quad, mu, wg, iters=40)
    ax1.plot(wg, best, "k--", lw=1, label="best response phi*(w)")
    ax1.plot(van[:, 0], van[:, 1], "C3-", lw=0.8, label="simultaneous GD")
    ax1.plot(*van[0], "o", color="C3", ms=5, label="start")
    ax1.plot(mu, 0, "k*", ms=14, label="equilibrium (mu, 0)")
    ax1.set(xlabel="w", ylabel="phi", title="vanilla GAN, D = sigmoid(phi x): V(w, phi)")
    ax1.legend(fontsize=7, loc="lower left")

    styles = {
        "simultaneous": ("C0", "simultaneous, constant steps"),
        "alternating_equal_decay": ("C1", "alternating, both steps decaying"),
        "alternating_two_time_scale": ("C2", "alternating, generator step decaying"),
    }
    for name, traj in wtraj.items():
        color, label = styles[name]
        ax2.plot(traj[:, 0], traj[:, 1], "-", color=color, lw=0.6, alpha=0.8, label=label)
        ax2.plot(*traj[-1], "s", color=color, ms=5)
    t = np.linspace(0, 2 * np.pi, 200)
    ax2.plot(
        mu + math.sqrt(rho) * np.cos(t), np.sin(t), "k:", lw=1, label="ellipse u^2/rho + phi^2 = 1"
    )
    w_all = np.concatenate([t_[:, 0] for t_ in wtraj.values()])
    lo, hi = min(w_all.min(), mu - 1.5) - 0.2, max(w_all.max(), mu + 1.5) + 0.2
    ax2.plot([lo, mu, mu, hi], [1, 1, -1, -1], "k--", lw=1, label="best response sign(mu - w)")
    ax2.plot(*wtraj["simultaneous"][0], "o", color="k", ms=5, label="start")
    ax2.plot(mu, 0, "k*", ms=14, label="equilibrium (mu, 0)")
    ax2.set(
        xlabel="w",
        ylabel="phi",
        title="WGAN, D = phi x, |phi| <= 1: V = phi (mu - w)",
        xlim=(lo, hi),
        ylim=(-1.25, 1.75),
    )
    ax2.legend(fontsize=6, loc="upper right", ncol=2)
    save_figure(fig, path)
