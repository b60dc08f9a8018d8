"""AIS for RBMs against the exact log partition function of small RBMs (issue 7)."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from dgm_runner.metrics.ais import (
    ais_log_partition,
    base_rate_bias,
    default_betas,
    rbm_ais_log_likelihood,
)
from dgm_runner.models import RBM


def _rbm(d: int, h: int, scale: float, seed: int) -> RBM:
    torch.manual_seed(seed)
    rbm = RBM((1, 1, d), hidden_dim=h)
    with torch.no_grad():
        rbm.W.copy_(torch.randn(d, h) * scale)
        rbm.b.copy_(torch.randn(d) * 0.5 - 1.0)
        rbm.c.copy_(torch.randn(h) * 0.5)
    return rbm


def exact_log_z(rbm: RBM) -> float:
    """Sum over the 2^H hidden states with the visible units marginalised analytically:
    Z = sum_h exp(c.h) prod_i (1 + exp(b_i + W_i.h))."""
    hs = torch.tensor(
        list(itertools.product([0.0, 1.0], repeat=rbm.hidden_dim)), dtype=torch.float64
    )
    with torch.no_grad():
        terms = hs @ rbm.c.double() + F.softplus(hs @ rbm.W.double().t() + rbm.b.double()).sum(1)
    return float(torch.logsumexp(terms, 0))


def test_default_schedule_matches_salakhutdinov_murray():
    betas = default_betas()
    assert betas[0] == 0 and betas[-1] == 1 and len(betas) == 500 + 4000 + 10000 + 1
    assert (betas[1:] > betas[:-1]).all()


@pytest.mark.parametrize("seed, scale", [(0, 0.3), (1, 0.6)])
def test_ais_agrees_with_the_exact_log_partition_function(seed, scale):
    rbm = _rbm(d=20, h=12, scale=scale, seed=seed)
    data = torch.bernoulli(
        torch.full((500, 20), 0.3), generator=torch.Generator().manual_seed(seed)
    )
    betas = torch.linspace(0, 1, 3001, dtype=torch.float64)
    est = ais_log_partition(
        rbm,
        base_rate_bias(data),
        n_runs=200,
        betas=betas,
        generator=torch.Generator().manual_seed(seed),
    )
    exact = exact_log_z(rbm)
    assert abs(est["log_z"] - exact) < max(0.05, 0.01 * abs(exact))
    assert est["log_z_lo"] <= exact <= est["log_z_hi"]


def test_zero_weight_rbm_is_exact_in_one_step():
    # W = 0 and b = b_A: every intermediate distribution is the base one, all weights equal.
    rbm = _rbm(d=10, h=4, scale=0.0, seed=2)
    b_a = rbm.b.detach().double().clone()
    est = ais_log_partition(rbm, b_a, n_runs=5, betas=torch.linspace(0, 1, 11, dtype=torch.float64))
    assert est["log_z"] == pytest.approx(exact_log_z(rbm), abs=1e-9)


def test_bad_schedule_is_rejected():
    with pytest.raises(ValueError, match="increase"):
        ais_log_partition(
            _rbm(4, 2, 0.1, 0), torch.zeros(4), betas=torch.tensor([0.0, 0.7, 0.5, 1.0])
        )


def test_log_likelihood_metric_runs_only_at_the_final_evaluation():
    from dgm_runner.data import DataSplits

    rbm = _rbm(d=16, h=6, scale=0.3, seed=3)
    x = torch.bernoulli(torch.full((64, 1, 1, 16), 0.3), generator=torch.Generator().manual_seed(0))
    data = DataSplits(
        "t", x, torch.zeros(64, dtype=torch.long), x, torch.zeros(64, dtype=torch.long), 1, True
    )
    assert rbm_ais_log_likelihood(rbm, None, data, seed=0, final=False) == {}
    out = rbm_ais_log_likelihood(rbm, None, data, seed=0, final=True, n_runs=50)
    exact = -float(rbm.free_energy(x).double().mean()) - exact_log_z(rbm)
    assert out["log_likelihood_ais"] == pytest.approx(exact, abs=0.05)
    assert math.isfinite(out["log_z_ais_hi"])
