"""Study ``optimal_discriminator``: a trained GAN discriminator vs D* (seed 001 Q3 (c)-(d)).

For fixed densities ``p_data`` and ``p_G`` the GAN objective (Goodfellow et al. 2014, eq. 1)

    V(D) = E_{p_data}[log D(x)] + E_{p_G}[log(1 - D(x))]

is maximised pointwise by ``D*(x) = p_data(x) / (p_data(x) + p_G(x))`` (ibid., Prop. 1),
and ``V(D*) = 2 JSD(p_data, p_G) - log 4`` (ibid., Thm. 1), with
``JSD = KL(p_data || M) / 2 + KL(p_G || M) / 2``, ``M = (p_data + p_G) / 2``.

Measured: an MLP discriminator trained by Adam on fresh samples of both 1-D Gaussian
mixtures, compared with D* on a grid; ``V(D*)`` and the JSD by trapezoidal quadrature
(each from its own definition) and ``V(D*)`` by Monte Carlo.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dgm_runner.config import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Range
from dgm_runner.studies.common import (
    SampleSize,
    check,
    new_figure,
    require,
    save_figure,
    torch_threads,
    write_result,
)

EXPRESSIONS = {
    "D_star": "D*(x) = p_data(x) / (p_data(x) + p_G(x))",
    "V_at_D_star": "V(D*) = 2 JSD(p_data, p_G) - log 4",
    "jsd": "JSD = KL(p_data || M)/2 + KL(p_G || M)/2,  M = (p_data + p_G)/2",
}


class Mixture:
    """1-D Gaussian mixture ``sum_k w_k N(m_k, s_k^2)``.

    Args:
        means, stds, weights: equal-length sequences; stds > 0, weights >= 0 (normalised
            here; :func:`run`'s annotations bound the elements, checked by ``dgm-study``).
    """

    def __init__(
        self, means: Sequence[float], stds: Sequence[float], weights: Sequence[float], name: str
    ):
        require(
            len(means) == len(stds) == len(weights) > 0,
            f"{name}: means, stds, weights are invalid: must be non-empty and of equal length",
        )
        require(sum(weights) > 0, f"{name}.weights is invalid: must not all be 0")
        self.means = torch.tensor(list(means), dtype=torch.float64)
        self.stds = torch.tensor(list(stds), dtype=torch.float64)
        self.weights = torch.tensor(list(weights), dtype=torch.float64) / float(sum(weights))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log density at ``x (n,)`` -> ``(n,)``."""
        z = (x[:, None] - self.means) / self.stds
        comp = (
            -0.5 * z**2
            - torch.log(self.stds)
            - 0.5 * math.log(2 * math.pi)
            + torch.log(self.weights)
        )
        return torch.logsumexp(comp, dim=1)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` draws ``(n,)``."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        return self.means[k] + self.stds[k] * torch.randn(
            n, generator=generator, dtype=torch.float64
        )


def log_d_star(
    x: torch.Tensor, p_data: Mixture, p_gen: Mixture
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log D*(x), log(1 - D*(x)))`` at ``x (n,)``."""
    lp, lg = p_data.log_prob(x), p_gen.log_prob(x)
    lm = torch.logaddexp(lp, lg)
    return lp - lm, lg - lm


def objective_quadrature(
    grid: torch.Tensor, p_data: Mixture, p_gen: Mixture, log_d, log_1md
) -> float:
    """``V(D) = int p_data log D + p_G log(1 - D) dx`` by the trapezoid rule on ``grid``."""
    return float(
        torch.trapezoid(
            p_data.log_prob(grid).exp() * log_d + p_gen.log_prob(grid).exp() * log_1md, grid
        )
    )


def jsd_quadrature(grid: torch.Tensor, p_data: Mixture, p_gen: Mixture) -> float:
    """``JSD(p_data, p_G)`` (nats) from its definition, trapezoid rule on ``grid``."""
    lp, lg = p_data.log_prob(grid), p_gen.log_prob(grid)
    lm = torch.logaddexp(lp, lg) - math.log(2)
    kl_p = torch.trapezoid(lp.exp() * (lp - lm), grid)
    kl_g = torch.trapezoid(lg.exp() * (lg - lm), grid)
    return float(0.5 * kl_p + 0.5 * kl_g)


def make_discriminator(hidden: int, seed: int) -> nn.Module:
    """MLP ``1 -> hidden -> hidden -> 1`` (tanh) returning the logit of D; seeded init."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Linear(1, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, 1),
        ).double()


def train_discriminator(
    net: nn.Module,
    p_data: Mixture,
    p_gen: Mixture,
    steps: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
) -> list[float]:
    """Maximise the minibatch GAN objective (minimise ``-V``) by Adam with a linearly decaying
    step; fresh samples every step. Returns ``-V`` per step (nats)."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 - t / steps)
    losses = []
    for _ in range(steps):
        xd = p_data.sample(batch_size, generator)[:, None]
        xg = p_gen.sample(batch_size, generator)[:, None]
        # -log D = softplus(-logit), -log(1 - D) = softplus(logit)
        loss = F.softplus(-net(xd)).mean() + F.softplus(net(xg)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def run(
    out_dir: str | Path,
    seed: NonNegativeInt = 0,
    data_means: tuple[float, ...] = (-1.5, 1.5),
    data_stds: tuple[PositiveFloat, ...] = (0.5, 0.5),
    data_weights: tuple[NonNegativeFloat, ...] = (0.5, 0.5),
    gen_means: tuple[float, ...] = (0.0,),
    gen_stds: tuple[PositiveFloat, ...] = (1.5,),
    gen_weights: tuple[NonNegativeFloat, ...] = (1.0,),
    hidden: PositiveInt = 32,
    steps: PositiveInt = 2000,
    batch_size: PositiveInt = 512,
    lr: PositiveFloat = 0.01,
    n_eval: SampleSize = 200000,
    grid_points: Annotated[int, Range(ge=3)] = 20001,
    grid_halfwidth: PositiveFloat = 12.0,
    max_mean_abs_error: NonNegativeFloat = 0.02,
    max_objective_gap: NonNegativeFloat = 0.005,
    z_tol: PositiveFloat = 4.0,
) -> dict[str, Any]:
    """Train a discriminator between two fixed 1-D mixtures and compare with D* and 2 JSD - log 4.

    Args:
        out_dir: where ``result.json`` and ``discriminator.png`` go.
        seed: seed of the samples and the network initialisation.
        data_*, gen_*: the mixtures p_data and p_G.
        hidden, steps, batch_size, lr: the MLP and its Adam training.
        n_eval: draws for the Monte-Carlo V(D*).
        grid_points, grid_halfwidth: quadrature grid on ``[-halfwidth, halfwidth]``.
        max_mean_abs_error: allowed ``E_M |D - D*|``; max_objective_gap: allowed ``V(D*) - V(D)``.
        z_tol: allowed |z| of the Monte-Carlo check.
    """
    p_data = Mixture(data_means, data_stds, data_weights, "data")
    p_gen = Mixture(gen_means, gen_stds, gen_weights, "gen")
    hidden, steps, batch_size, n_eval = int(hidden), int(steps), int(batch_size), int(n_eval)
    lr, half, grid_points = float(lr), float(grid_halfwidth), int(grid_points)
    gen = torch.Generator().manual_seed(int(seed))

    net = make_discriminator(hidden, int(seed))
    with torch_threads(1):
        losses = train_discriminator(net, p_data, p_gen, steps, batch_size, lr, gen)

    grid = torch.linspace(-half, half, grid_points, dtype=torch.float64)
    with torch.no_grad():
        logit = net(grid[:, None])[:, 0]
    log_d, log_1md = -F.softplus(-logit), -F.softplus(logit)
    ls_d, ls_1md = log_d_star(grid, p_data, p_gen)
    v_star = objective_quadrature(grid, p_data, p_gen, ls_d, ls_1md)
    v_trained = objective_quadrature(grid, p_data, p_gen, log_d, log_1md)
    jsd = jsd_quadrature(grid, p_data, p_gen)
    m = 0.5 * (p_data.log_prob(grid).exp() + p_gen.log_prob(grid).exp())
    err = (log_d.exp() - ls_d.exp()).abs()
    mean_abs_err = float(torch.trapezoid(m * err, grid))
    bulk = m > 1e-3 * m.max()
    max_err = float(err[bulk].max())

    xd, xg = p_data.sample(n_eval, gen), p_gen.sample(n_eval, gen)
    a, b = log_d_star(xd, p_data, p_gen)[0], log_d_star(xg, p_data, p_gen)[1]
    v_mc = float(a.mean() + b.mean())
    v_mc_se = math.sqrt(float(a.var() + b.var()) / n_eval)

    checks = [
        check("V(D*) (quadrature) vs 2 JSD - log 4", v_star, 2 * jsd - math.log(4), abs_tol=1e-9),
        check(
            "V(D*) Monte Carlo vs 2 JSD - log 4",
            v_mc,
            2 * jsd - math.log(4),
            se=v_mc_se,
            z_tol=z_tol,
        ),
        check("V(trained D) <= V(D*)", v_trained, v_star, relation="<=", abs_tol=1e-9),
        check(
            f"V(D*) - V(trained D) (allowed {max_objective_gap})",
            v_star - v_trained,
            max_objective_gap,
            relation="<=",
            abs_tol=0.0,
        ),
        check(
            f"E_M |D - D*| (allowed {max_mean_abs_error})",
            mean_abs_err,
            max_mean_abs_error,
            relation="<=",
            abs_tol=0.0,
        ),
    ]
    result = {
        "study": "optimal_discriminator",
        "question": "seed 001 Q3 (c)-(d)",
        "params": {
            "seed": seed,
            "data_means": list(data_means),
            "data_stds": list(data_stds),
            "data_weights": list(data_weights),
            "gen_means": list(gen_means),
            "gen_stds": list(gen_stds),
            "gen_weights": list(gen_weights),
            "hidden": hidden,
            "steps": steps,
            "batch_size": batch_size,
            "lr": lr,
            "n_eval": n_eval,
            "grid_points": grid_points,
            "grid_halfwidth": half,
            "max_mean_abs_error": max_mean_abs_error,
            "max_objective_gap": max_objective_gap,
            "z_tol": z_tol,
        },
        "closed_forms": EXPRESSIONS,
        "jsd": jsd,
        "objective": {
            "D_star_quadrature": v_star,
            "D_star_monte_carlo": v_mc,
            "D_star_monte_carlo_se": v_mc_se,
            "trained_quadrature": v_trained,
            "final_minibatch_loss": losses[-1],
        },
        "discriminator_error": {
            "mean_abs_under_M": mean_abs_err,
            "max_abs_where_M_gt_1e-3_max": max_err,
        },
        "checks": checks,
    }
    _plot(
        Path(out_dir) / "discriminator.png",
        grid,
        p_data,
        p_gen,
        log_d.exp(),
        ls_d.exp(),
        losses,
        v_star,
    )
    write_result(out_dir, result)
    return result


def _plot(path, grid, p_data, p_gen, d_trained, d_star, losses, v_star) -> None:
    fig, (ax1, ax2, ax3) = new_figure(3, size=(4.2, 3.6))
    x = grid.numpy()
    keep = np.abs(x) <= 5
    ax1.plot(x[keep], p_data.log_prob(grid).exp().numpy()[keep], label="p_data")
    ax1.plot(x[keep], p_gen.log_prob(grid).exp().numpy()[keep], label="p_G")
    ax1.set(xlabel="x", ylabel="density", title="densities")
    ax1.legend(fontsize=7)
    ax2.plot(x[keep], d_star.numpy()[keep], "k-", lw=2, label="D* = p_data / (p_data + p_G)")
    ax2.plot(x[keep], d_trained.numpy()[keep], "C3--", label="trained MLP D")
    ax2.set(xlabel="x", ylabel="D(x)", title="discriminator", ylim=(-0.02, 1.02))
    ax2.legend(fontsize=7)
    ax3.plot(np.arange(1, len(losses) + 1), -np.asarray(losses), lw=0.5, label="minibatch V(D)")
    ax3.axhline(v_star, color="k", ls="--", lw=1, label="2 JSD - log 4")
    ax3.set(
        xlabel="Adam step",
        ylabel="V (nats)",
        title="GAN objective",
        ylim=(v_star - 0.3, v_star + 0.1),
    )
    ax3.legend(fontsize=7)
    save_figure(fig, path)
