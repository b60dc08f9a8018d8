"""The objective ``V(w, phi)`` of the 1-D dummy GAN (study :mod:`dgm_runner.studies.dummy_gan`,
whose docstring derives the closed forms): the per-sample objective, Gauss-Hermite
quadrature of the vanilla GAN's expectations, the WGAN's exact value, the Monte-Carlo
estimator, and the two groups of checks that compare them (values in nats).

Data ``x ~ N(mu, 1)``, latent ``z ~ N(0, 1)``, generator ``G_w(z) = w + z``; vanilla
discriminator ``D_phi(x) = sigmoid(phi x)``, WGAN critic ``D_phi(x) = phi x``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dgm_runner.studies.common import check

KINDS = ("vanilla", "wgan")


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
        """``E_{y ~ N(m, 1)}[f(y)]`` for each entry of ``m`` (an array of ``m``'s shape)."""
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


# --- checks of the objective ---------------------------------------------------------------


def vanilla_closed_form_checks(
    quad: GaussQuadrature, mu: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The vanilla GAN's exact statements against quadrature: ``V(mu, 0) = -2 log 2``, the
    best response ``phi*(mu) = 0`` and ``phi*(-mu) = 2 mu``, ``V(mu, phi) <= -2 log 2`` on a
    grid, and the Hessian at the equilibrium ``(mu, 0)`` by finite differences.

    Returns:
        ``(values, checks)``: the measured values (nats; the ``vanilla`` part of
        ``result.json``) and the agreement rows.
    """
    checks: list[dict[str, Any]] = []
    phis = np.linspace(-3, 3, 601)
    v_mu = vanilla_value(quad, mu, mu, phis)
    v_mu_0 = float(vanilla_value(quad, mu, mu, 0.0))
    phi_star_mu = float(vanilla_best_response(quad, mu, mu))
    phi_star_minus_mu = float(vanilla_best_response(quad, mu, -mu))
    checks.append(check("vanilla V(mu, 0) = -2 log 2", v_mu_0, -2 * math.log(2), abs_tol=1e-12))
    checks.append(check("vanilla argmax_phi V(mu, phi) = 0", phi_star_mu, 0.0, abs_tol=1e-9))
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
            check("vanilla argmax_phi V(-mu, phi) = 2 mu", phi_star_minus_mu, 2 * mu, abs_tol=1e-8)
        )
    hess = hessian_fd(quad, mu, mu, 0.0)
    hess_exact = (0.0, -0.5, -(1 + mu**2) / 2)
    for name, got, want in zip(("V_ww", "V_wphi", "V_phiphi"), hess, hess_exact):
        checks.append(
            check(f"vanilla {name} at (mu, 0), finite differences", got, want, abs_tol=1e-5)
        )
    values = {
        "V_mu_0": v_mu_0,
        "argmax_phi_V_mu": phi_star_mu,
        "argmax_phi_V_minus_mu": phi_star_minus_mu,
        "hessian_fd_at_equilibrium": dict(zip(("V_ww", "V_wphi", "V_phiphi"), hess)),
        "hessian_exact_at_equilibrium": dict(zip(("V_ww", "V_wphi", "V_phiphi"), hess_exact)),
    }
    return values, checks


def monte_carlo_checks(
    quad: GaussQuadrature,
    mu: float,
    check_points: Sequence[Sequence[float]],
    n_mc: int,
    generator: torch.Generator,
    z_tol: float,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``V``, ``dV/dw``, ``dV/dphi`` by Monte Carlo (:func:`monte_carlo`, ``n_mc`` paired
    draws) against quadrature (vanilla) and the exact values (WGAN) at each ``[w, phi]`` of
    ``check_points``, within ``z_tol`` standard errors (round-off where the per-sample value
    is constant); at ``phi = 0`` also ``dV/dphi = (mu - w) / 2``.

    Returns:
        ``(rows, checks)``: per point and kind ``{kind, w, phi, monte_carlo, exact}``, and
        the agreement rows.
    """
    checks: list[dict[str, Any]] = []
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
            mc = monte_carlo(kind, mu, w, phi, n_mc, generator)
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
    return mc_rows, checks
