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

Code: the objective, its quadrature and the Monte-Carlo checks are
:mod:`dgm_runner.studies.dummy_gan_objective`; training and its checks are
:mod:`dgm_runner.studies.dummy_gan_dynamics`; this module runs them and writes the result.

Sources: seed 003 (ECE1508 assignment 3) written question 1; Goodfellow et al. 2014,
"Generative Adversarial Nets"; Arjovsky, Chintala, Bottou 2017, "Wasserstein GAN".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch

from dgm_runner.config import NonNegativeInt, PositiveFloat, Range
from dgm_runner.studies.common import SampleSize, new_figure, require, save_figure, write_result
from dgm_runner.studies.dummy_gan_dynamics import (
    SCHEMES,
    Setup,
    step_size,
    train,
    vanilla_training,
    wgan_training,
    window_stats,
)
from dgm_runner.studies.dummy_gan_objective import (
    KINDS,
    GaussQuadrature,
    hessian_fd,
    monte_carlo,
    monte_carlo_checks,
    objective_terms,
    vanilla_best_response,
    vanilla_closed_form_checks,
    vanilla_d2_dphi2,
    vanilla_grad,
    vanilla_value,
    wgan_value,
)

__all__ = [  # the study, and the pieces it is made of (one namespace for the tests)
    "EXPRESSIONS",
    "KINDS",
    "SCHEMES",
    "GaussQuadrature",
    "hessian_fd",
    "monte_carlo",
    "objective_terms",
    "run",
    "step_size",
    "train",
    "vanilla_best_response",
    "vanilla_d2_dphi2",
    "vanilla_grad",
    "vanilla_value",
    "wgan_value",
    "window_stats",
]

#: At least two steps: the averaging window needs them.
Steps = Annotated[int, Range(ge=2)]

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


def run(
    out_dir: str | Path,
    seed: NonNegativeInt = 0,
    mu: float = 1.0,
    w0: float = -1.0,
    phi0: Annotated[float, Range(ge=-1, le=1)] = 0.0,  # inside the critic box
    batch_size: SampleSize = 256,
    vanilla_steps: Steps = 3000,
    vanilla_lr_w: PositiveFloat = 0.1,
    vanilla_lr_phi: PositiveFloat = 0.1,
    wgan_steps: Steps = 4000,
    wgan_lr_w: PositiveFloat = 0.05,
    wgan_lr_phi: PositiveFloat = 0.05,
    wgan_decay_steps: PositiveFloat = 100.0,
    avg_fraction: Annotated[float, Range(gt=0, le=1)] = 0.5,
    n_batches: SampleSize = 10,
    check_points: tuple[tuple[float, float], ...] = ((-0.5, 0.0), (-1.0, 0.5), (2.5, -1.5)),
    n_mc: SampleSize = 200000,
    quad_nodes: Annotated[int, Range(ge=20)] = 200,
    amplitude_rtol: PositiveFloat = 0.25,
    z_tol: PositiveFloat = 4.0,
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
    lrs = {
        "vanilla_lr_w": float(vanilla_lr_w),
        "vanilla_lr_phi": float(vanilla_lr_phi),
        "wgan_lr_w": float(wgan_lr_w),
        "wgan_lr_phi": float(wgan_lr_phi),
    }
    decay, amplitude_rtol = float(wgan_decay_steps), float(amplitude_rtol)
    _require_windows(vanilla_steps, wgan_steps, avg_fraction, n_batches)
    require(len(check_points) > 0, "check_points is invalid: must be a non-empty list of [w, phi]")
    gen = torch.Generator().manual_seed(int(seed))
    quad = GaussQuadrature(quad_nodes)
    setup = Setup(mu, w0, phi0, batch_size, avg_fraction, n_batches, z_tol)

    # (a) vanilla: exact statements against quadrature; Monte Carlo vs quadrature / exact
    vanilla, checks = vanilla_closed_form_checks(quad, mu)
    mc_rows, mc_checks = monte_carlo_checks(quad, mu, check_points, n_mc, gen, z_tol)
    # (a) vanilla training: simultaneous steps, converges; (b) WGAN training: three schemes
    van, van_values, van_checks = vanilla_training(
        setup, vanilla_steps, lrs["vanilla_lr_w"], lrs["vanilla_lr_phi"], gen
    )
    wtraj, wgan, wgan_checks = wgan_training(
        setup, wgan_steps, lrs["wgan_lr_w"], lrs["wgan_lr_phi"], decay, amplitude_rtol, gen
    )
    checks += mc_checks + van_checks + wgan_checks

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
        "vanilla": {**vanilla, **van_values},
        "wgan": wgan,
        "monte_carlo": mc_rows,
        "checks": checks,
    }
    rho = lrs["wgan_lr_w"] / lrs["wgan_lr_phi"]
    _plot(Path(out_dir) / "trajectories.png", quad, mu, van, wtraj, rho)
    write_result(out_dir, result)
    return result


def _require_windows(
    vanilla_steps: int, wgan_steps: int, avg_fraction: float, n_batches: int
) -> None:
    """The averaging window of each run (``avg_fraction`` of its steps) must hold at least
    2 steps per batch of the batch-means standard error (a relation the annotations cannot
    state)."""
    for steps in (vanilla_steps, wgan_steps):
        require(
            round(avg_fraction * steps) >= 2 * n_batches,
            f"n_batches={n_batches} is invalid: the averaging window of {avg_fraction} x {steps}"
            " steps needs at least 2 steps per batch",
        )


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
