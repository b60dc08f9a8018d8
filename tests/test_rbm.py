"""RBM against brute-force enumeration: free energy, log Z, the CD-k gradient."""

import itertools

import pytest
import torch

from dgm_runner.models import RBM
from dgm_runner.objectives import Batch, ContrastiveDivergence
from dgm_runner.samplers import GibbsSampler

D, H = 6, 4


def _tiny_rbm(seed: int = 0, scale: float = 1.0) -> RBM:
    torch.manual_seed(seed)
    rbm = RBM((1, 2, 3), hidden_dim=H)
    with torch.no_grad():
        rbm.W.copy_(torch.randn(D, H) * scale)
        rbm.b.copy_(torch.randn(D) * 0.5)
        rbm.c.copy_(torch.randn(H) * 0.5)
    return rbm


def _all_states(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)))


def _energy(rbm: RBM, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """E(v, h) for every pair: (Nv, Nh)."""
    return -(v @ rbm.W @ h.t()) - (v @ rbm.b)[:, None] - (h @ rbm.c)[None, :]


def _exact_log_z(rbm: RBM) -> torch.Tensor:
    return torch.logsumexp(-_energy(rbm, _all_states(D), _all_states(H)).flatten(), 0)


def test_free_energy_matches_sum_over_hidden_states():
    rbm = _tiny_rbm()
    v = _all_states(D)
    brute = -torch.logsumexp(-_energy(rbm, v, _all_states(H)), dim=1)
    torch.testing.assert_close(rbm.free_energy(v), brute)
    # and p(v) = exp(-F(v)) / Z sums to one over all 2^D visible states
    log_p = -rbm.free_energy(v) - _exact_log_z(rbm)
    torch.testing.assert_close(torch.logsumexp(log_p, 0), torch.tensor(0.0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("k", [1, 25])
def test_cd_gradient_agrees_in_sign_with_exact_log_likelihood_gradient(k):
    """One-example dataset: -d/dθ [F(v*) - E_model F] is the exact gradient of log p(v*);
    CD-k's estimate (averaged over many chains) must point the same way on every
    parameter whose exact gradient is clearly non-zero."""
    rbm = _tiny_rbm(seed=3, scale=0.5)
    v_star = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0, 0.0]])

    log_p = -rbm.free_energy(v_star).sum() - _exact_log_z(rbm)
    exact = torch.autograd.grad(log_p, [rbm.W, rbm.b, rbm.c])

    torch.manual_seed(0)
    objective = ContrastiveDivergence(k=k)
    batch = v_star.expand(20_000, D).reshape(20_000, 1, 2, 3)
    loss, _ = objective.loss(rbm, Batch(batch, torch.zeros(20_000, dtype=torch.long)))
    cd = [-g for g in torch.autograd.grad(loss, [rbm.W, rbm.b, rbm.c])]

    for e, c in zip(exact, cd):
        clear = e.abs() > 0.05
        assert clear.any()
        assert torch.equal(torch.sign(e[clear]), torch.sign(c[clear]))
    if k == 25:  # a long chain mixes: the estimate is close to the exact gradient itself
        for e, c in zip(exact, cd):
            torch.testing.assert_close(c, e, atol=0.03, rtol=0)


def test_long_gibbs_chain_samples_the_model_distribution():
    rbm = _tiny_rbm(seed=5, scale=0.7)
    sampler = GibbsSampler(steps=50)
    g = torch.Generator().manual_seed(0)
    n = 40_000
    # the sampler returns p(v|h) of the last sweep; its average is the model's E[v]
    mean_v = sampler.sample(rbm, n, g).reshape(n, D).mean(0)
    v = _all_states(D)
    p = torch.softmax(-rbm.free_energy(v), 0)
    torch.testing.assert_close(mean_v, (p[:, None] * v).sum(0), atol=0.01, rtol=0)


def test_pcd_keeps_and_checkpoints_its_chains():
    rbm = _tiny_rbm()
    pcd = ContrastiveDivergence(k=1, persistent=True, n_chains=10)
    x = torch.bernoulli(torch.full((4, 1, 2, 3), 0.5))
    pcd.loss(rbm, Batch(x, torch.zeros(4, dtype=torch.long)))
    chains = pcd.state_dict()["chains"]
    assert chains.shape == (10, D)
    restored = ContrastiveDivergence(k=1, persistent=True)
    restored.load_state_dict(pcd.state_dict())
    assert torch.equal(restored.chains, chains)
