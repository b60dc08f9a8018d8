"""Gradient dynamics of the 1-D dummy GAN (study :mod:`dgm_runner.studies.dummy_gan`,
whose docstring derives the predictions): minibatch training with simultaneous or
alternating steps, time averages with batch-means standard errors, and the checks of the
vanilla GAN (converges to ``(mu, 0)``) and of the WGAN's three schemes (a limit cycle,
a conserved radius, the two time-scale bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dgm_runner.studies.common import check, require, torch_threads
from dgm_runner.studies.dummy_gan_objective import objective_terms

SCHEMES = ("simultaneous", "alternating")


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


def thin(traj: np.ndarray, max_points: int = 400) -> list[list[float]]:
    """At most about ``max_points`` rows of ``traj`` (evenly strided, the last one kept),
    as lists (for ``result.json``)."""
    stride = max(1, math.ceil(len(traj) / max_points))
    keep = np.r_[np.arange(0, len(traj), stride), len(traj) - 1]
    return traj[np.unique(keep)].tolist()


@dataclass(frozen=True)
class Setup:
    """What every training run of the study shares.

    Args:
        mu: data mean; w0, phi0: start of every run (``|phi0| <= 1``).
        batch_size: fresh draws of ``x`` and of ``z`` per step.
        avg_fraction, n_batches: the time-average window (last fraction of the steps) and
            the number of batches of its batch-means standard error.
        z_tol: allowed |z| of the time-average checks.
    """

    mu: float
    w0: float
    phi0: float
    batch_size: int
    avg_fraction: float
    n_batches: int
    z_tol: float


def vanilla_training(
    setup: Setup, steps: int, lr_w: float, lr_phi: float, generator: torch.Generator
) -> tuple[np.ndarray, dict[str, Any], list[dict[str, Any]]]:
    """The vanilla GAN trained by simultaneous steps: its time averages should be the
    equilibrium ``(mu, 0)`` (the linearised map's spectral radius < 1: it converges).

    Returns:
        ``(trajectory, values, checks)``: the ``(steps + 1, 2)`` iterates, the
        ``result.json`` values (spectral radius, window statistics, thinned trajectory)
        and the agreement rows.

    Raises:
        ValueError: the iterates diverged (step sizes too large).
    """
    mu, z_tol = setup.mu, setup.z_tol
    with torch_threads(1):
        van = train(
            "vanilla",
            mu,
            setup.w0,
            setup.phi0,
            steps,
            setup.batch_size,
            lr_w,
            lr_phi,
            "simultaneous",
            generator,
        )
    require(
        np.isfinite(van).all() and np.abs(van).max() < 1e6,
        f"vanilla_lr_w={lr_w}, vanilla_lr_phi={lr_phi} is invalid: the iterates diverged",
    )
    van_stats = window_stats(van, mu, setup.avg_fraction, setup.n_batches)
    lw, lp = lr_w, lr_phi
    jac = np.array([[1.0, lw / 2], [-lp / 2, 1 - lp * (1 + mu**2) / 2]])
    van_radius = float(np.abs(np.linalg.eigvals(jac)).max())
    checks = [
        check(
            "vanilla simultaneous: time-average w = mu",
            van_stats["w_mean"],
            mu,
            se=van_stats["w_mean_se"],
            z_tol=z_tol,
        ),
        check(
            "vanilla simultaneous: time-average phi = 0",
            van_stats["phi_mean"],
            0.0,
            se=van_stats["phi_mean_se"],
            z_tol=z_tol,
        ),
    ]
    values = {
        "simultaneous_jacobian_spectral_radius": van_radius,
        "training": van_stats,
        "trajectory": thin(van),
    }
    return van, values, checks


def wgan_training(
    setup: Setup,
    steps: int,
    lr_w: float,
    lr_phi: float,
    decay: float,
    amplitude_rtol: float,
    generator: torch.Generator,
) -> tuple[dict[str, np.ndarray], dict[str, Any], list[dict[str, Any]]]:
    """The WGAN trained three ways: simultaneous constant steps (a limit cycle of amplitude
    ``sqrt(lr_w / lr_phi)`` whose time average is ``mu``), alternating with both steps
    decaying by ``1 / (1 + t / decay)`` (the radius ends at ``min(1, r0)``) and alternating
    with only the generator's step decaying (two time-scale: ``|w_T - mu| <=
    sqrt(lr_w,T / lr_phi)``, time average ``mu``); amplitudes within ``amplitude_rtol``.

    Returns:
        ``(trajectories, values, checks)``: the iterates per scheme, the ``result.json``
        values (predictions, window statistics, thinned trajectories) and the agreement rows.

    Raises:
        ValueError: the iterates diverged.
    """
    mu, w0, phi0, z_tol = setup.mu, setup.w0, setup.phi0, setup.z_tol
    lw, lp = lr_w, lr_phi
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
                "wgan", mu, w0, phi0, steps, setup.batch_size, lw, lp, generator=generator, **kw
            )
    require(
        all(np.isfinite(t).all() for t in wtraj.values()),
        f"wgan_lr_w={lr_w}, wgan_lr_phi={lr_phi} is invalid: the iterates diverged",
    )
    wstats = {k: window_stats(t, mu, setup.avg_fraction, setup.n_batches) for k, t in wtraj.items()}
    sim = wstats["simultaneous"]
    amp_pred = math.sqrt(rho)
    checks = []
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
    lr_w_final = step_size(lw, decay, steps - 1)
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
    values = {
        "amplitude_prediction_simultaneous": amp_pred,
        "radius_start": r0,
        "radius_final_equal_decay": radius_final,
        "radius_prediction_equal_decay": radius_pred,
        "lr_w_final": lr_w_final,
        "two_time_scale_bound_final": bound_final,
        "simultaneous_jacobian_spectral_radius": math.sqrt(1 + lw * lp),
        "training": wstats,
        "trajectories": {k: thin(t) for k, t in wtraj.items()},
    }
    return wtraj, values, checks
