"""IWAE training (Burda, Grosse & Salakhutdinov 2016; issue 28 item 3): the k-sample bound
against closed forms on a linear Gaussian model, k = 1 against the ELBO, its gradient
(their Eq. 14), per-example draws in data-parallel shards, the NLL's standard error, and
Burda et al.'s network (experiment=vae_burda)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dgm_runner.distributions import shard_rows
from dgm_runner.evaluation import evaluate_split
from dgm_runner.metrics.stats import standard_error
from dgm_runner.models.vae import VAEMLP, GaussianVAE
from dgm_runner.objectives import ELBO, Batch
from dgm_runner.objectives.elbo import log_importance_weights
from dgm_runner.objectives.iwae import IWAE

D, LATENT, SIGMA, BIAS = 4, 2, 0.05, 0.5


class _LinearDecoder(nn.Module):
    """``z -> logit(W z + b)``: through the ELBO code's sigmoid, the mean ``W z + b``."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(w), b

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        mean = z @ self.w.T + self.b
        assert ((mean > 0) & (mean < 1)).all(), "W z + b left (0, 1): logit undefined"
        return torch.logit(mean).reshape(-1, 1, 1, D)


class _LinearGaussianVAE(GaussianVAE):
    """The linear Gaussian model ``z ~ N(0, I_2)``, ``x | z ~ N(W z + b, sigma^2 I_4)``
    (``likelihood="gaussian"``, ``obs_std=sigma``), in float64. W has orthogonal columns, so
    the exact posterior ``N(S W^T (x - b) / sigma^2, S)``, ``S = (I + W^T W / sigma^2)^-1``,
    is diagonal: a GaussianVAE's q(z|x) can be it (``exact=True``) or a worse fit
    (``exact=False``: mean shifted by +1 and variances times 3)."""

    def __init__(self, exact: bool) -> None:
        super().__init__()
        self.image_shape, self.latent_dim = (1, 1, D), LATENT
        g = torch.Generator().manual_seed(0)
        q, _ = torch.linalg.qr(torch.randn(D, LATENT, generator=g, dtype=torch.float64))
        self.w = q * torch.tensor([0.08, 0.04], dtype=torch.float64)  # orthogonal columns
        s = torch.linalg.inv(torch.eye(LATENT, dtype=torch.float64) + self.w.T @ self.w / SIGMA**2)
        self.encoder = nn.Flatten()
        self.fc_mu = nn.Linear(D, LATENT).double()
        self.fc_logvar = nn.Linear(D, LATENT).double()
        with torch.no_grad():
            self.fc_mu.weight.copy_(s @ self.w.T / SIGMA**2)
            self.fc_mu.bias.copy_(-(s @ self.w.T / SIGMA**2) @ torch.full((D,), BIAS).double())
            self.fc_logvar.weight.zero_()
            self.fc_logvar.bias.copy_(torch.log(torch.diagonal(s)))
            if not exact:
                self.fc_mu.bias.add_(1.0)
                self.fc_logvar.bias.add_(math.log(3.0))
        self.decoder = _LinearDecoder(self.w.clone(), BIAS)

    def exact_log_px(self, x: torch.Tensor) -> torch.Tensor:
        """``log N(x; b, W W^T + sigma^2 I)`` per example (nats), the closed form."""
        cov = self.w @ self.w.T + SIGMA**2 * torch.eye(D, dtype=torch.float64)
        dist = torch.distributions.MultivariateNormal(torch.full((D,), BIAS).double(), cov)
        return dist.log_prob(x.reshape(-1, D))

    def sample_x(self, n: int, seed: int) -> torch.Tensor:
        """``(n, 1, 1, D)`` draws from p(x)."""
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, LATENT, generator=g, dtype=torch.float64)
        eps = torch.randn(n, D, generator=g, dtype=torch.float64)
        return (z @ self.w.T + BIAS + SIGMA * eps).reshape(n, 1, 1, D)


def _iwae(k: int, **kw) -> IWAE:
    return IWAE(k=k, likelihood="gaussian", obs_std=SIGMA, **kw)


def _batch(x: torch.Tensor) -> Batch:
    return Batch(x, torch.zeros(x.shape[0], dtype=torch.long))


def _burda_net(dtype=torch.float32) -> VAEMLP:
    torch.manual_seed(0)
    return VAEMLP((1, 28, 28), latent_dim=50, hidden_dim=200, hidden_layers=2).to(dtype)


def _binary(n: int, dtype=torch.float32, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 1, 28, 28), 0.3), generator=g).to(dtype)


# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("k", [1, 5, 50])
def test_bound_equals_log_px_when_q_is_the_exact_posterior(k):
    """q(z|x) = p(z|x): every weight is p(x), so every estimate of L_k is log p(x)."""
    model = _LinearGaussianVAE(exact=True)
    x = model.sample_x(16, seed=1)
    with torch.no_grad():
        bound = _iwae(k).bound(model, _batch(x), torch.Generator().manual_seed(2))
    torch.testing.assert_close(bound, model.exact_log_px(x), rtol=0, atol=1e-9)


def test_bound_increases_with_k_towards_log_px():
    """Burda et al.'s Theorem 1: E[L_1] <= E[L_5] <= E[L_50] <= E[L_500] <= log p(x), L_k ->
    log p(x). Each E[L_k] is the mean of 2000 independent estimates per image (float64);
    consecutive means must differ by more than 4 standard errors of their difference (the
    gaps to log p(x) are about 3.5, 0.6, 0.05 and 0.005 nats, standard errors 0.1 to
    0.002), and the k = 500 mean lies within 0.02 nats below log p(x) (and not above it by
    more than 4 standard errors)."""
    model = _LinearGaussianVAE(exact=False)
    x = model.sample_x(3, seed=3)
    exact = model.exact_log_px(x)
    reps = 2000
    many = _batch(x.repeat(reps, 1, 1, 1))
    means, ses = [], []
    with torch.no_grad():
        for k in (1, 5, 50, 500):
            est = _iwae(k).bound(model, many, torch.Generator().manual_seed(k)).reshape(reps, 3)
            means.append(est.mean(0))
            ses.append(est.std(0) / math.sqrt(reps))
    for (m1, s1), (m2, s2) in zip(zip(means, ses), zip(means[1:], ses[1:])):
        assert (m2 - m1 > 4 * torch.sqrt(s1**2 + s2**2)).all(), (m1, m2)
    assert (means[0] < exact - 2.0).all()  # the poor q: the ELBO is far below log p(x)
    assert (means[-1] <= exact + 4 * ses[-1]).all()
    assert (exact - means[-1] < 0.02).all(), exact - means[-1]


# --------------------------------------------------------------------------- k = 1 is the ELBO


def test_k1_equals_the_monte_carlo_elbo_from_the_same_draws():
    """L_1 from one draw is log p(x|z) + log p(z) - log q(z|x) at that z: the ELBO with a
    Monte-Carlo KL from the same z (same generator seed), to float64 rounding (the two sum
    the same three terms in another order), value and gradient. Another seed differs."""
    model = _burda_net(torch.float64)
    batch = _batch(_binary(6, torch.float64))
    iwae = IWAE(k=1).bound(model, batch, torch.Generator().manual_seed(7))
    elbo = ELBO(kl="mc").terms(model, batch, torch.Generator().manual_seed(7))["elbo"]
    torch.testing.assert_close(iwae, elbo, rtol=0, atol=1e-9)
    other = IWAE(k=1).bound(model, batch, torch.Generator().manual_seed(8))
    assert (other - elbo).abs().max() > 1e-3

    grads = []
    for objective in (IWAE(k=1), ELBO(kl="mc")):
        torch.manual_seed(11)  # training draws come from the global RNG
        loss, _ = objective.loss(model, batch)
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
    for g_iwae, g_elbo in zip(*grads):
        torch.testing.assert_close(g_iwae, g_elbo, rtol=1e-9, atol=1e-11)


# --------------------------------------------------------------------------- gradients


def test_gradient_is_the_normalised_weight_average_of_eq_14():
    """grad L_k = sum_i w~_i grad log w_i, w~ = softmax(log w) held fixed (Burda Eq. 14)."""
    model = _burda_net(torch.float64)
    x = _binary(4, torch.float64)
    params = list(model.parameters())
    bound = IWAE(k=5).bound(model, _batch(x), torch.Generator().manual_seed(3))
    auto = torch.autograd.grad(bound.sum(), params)
    mu, logvar = model.encode(x)
    eps = torch.randn((4, 5, 50), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    z = (mu[:, None] + torch.exp(0.5 * logvar)[:, None] * eps).transpose(0, 1)
    log_w = log_importance_weights(model, x, None, z, mu, logvar)  # (5, 4)
    weights = torch.softmax(log_w.detach(), dim=0)
    manual = torch.autograd.grad((weights * log_w).sum(), params)
    for a, m in zip(auto, manual):
        torch.testing.assert_close(a, m, rtol=1e-9, atol=1e-12)


def test_iwae_loss_gradients_are_finite_with_log_weights_hundreds_of_nats_apart():
    model = _burda_net()
    with torch.no_grad():
        model.fc_logvar.bias.fill_(4.0)  # a very wide q: log weights spread over ~10^3 nats
    batch = _batch(_binary(8))
    torch.manual_seed(0)
    loss, terms = IWAE(k=50).loss(model, batch)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert torch.isfinite(terms["iwae_bound"]) and terms["loss"] == -terms["iwae_bound"]
    torch.manual_seed(0)
    z = torch.randn(8, 50, 50)  # the same spread, measured
    mu, logvar = model.encode(batch.x)
    draws = (mu[:, None] + torch.exp(0.5 * logvar)[:, None] * z).transpose(0, 1)
    log_w = log_importance_weights(model, batch.x, None, draws, mu, logvar)
    assert float((log_w.max(0).values - log_w.min(0).values).min().detach()) > 100


# --------------------------------------------------------------------------- draws


def test_a_data_parallel_shard_draws_what_the_whole_batch_draws():
    """Inside shard_rows, a shard of rows [2, 4) of a batch of 6 gets the k draws the
    single-process batch gives those rows (batch_draw), so DDP follows one process."""
    model = _LinearGaussianVAE(exact=False)
    x = model.sample_x(6, seed=5)
    with torch.no_grad():
        torch.manual_seed(4)
        whole = _iwae(7).bound(model, _batch(x))
        torch.manual_seed(4)
        with shard_rows(2, 2, 6):
            shard = _iwae(7).bound(model, _batch(x[2:4]))
        torch.manual_seed(4)
        plain = _iwae(7).bound(model, _batch(x[2:4]))  # without the shard: other draws
    torch.testing.assert_close(shard, whole[2:4], rtol=0, atol=1e-12)
    assert (plain - whole[2:4]).abs().max() > 1e-6


# --------------------------------------------------------------------------- evaluation


def test_standard_error_is_the_sample_sd_over_sqrt_n():
    values = torch.tensor([80.0, 90.0, 85.5, 101.0, 79.25], dtype=torch.float64)
    assert standard_error(values) == pytest.approx(np.std(values.numpy(), ddof=1) / math.sqrt(5))
    assert math.isnan(standard_error(values[:1]))


def test_evaluation_reports_the_iwae_nll_and_its_standard_error():
    """evaluate_split's test/nll_iwae_k7 and _se match the per-image values computed
    directly (same generator stream, batch by batch); only the final evaluation has them
    unless iwae_k_eval is set; L_k of the training k is reported as iwae_bound / loss."""
    torch.manual_seed(0)
    model = VAEMLP((1, 4, 4), latent_dim=3, hidden_dim=16, hidden_layers=2).eval()
    x = (torch.rand(37, 1, 4, 4) > 0.5).float()
    y = torch.zeros(37, dtype=torch.long)
    objective = IWAE(k=3, iwae_k=7)
    metrics = evaluate_split(model, objective, x, y, batch_size=10, seed=5, final=True)

    gen = torch.Generator().manual_seed(5)
    with torch.inference_mode():
        per_image = torch.cat(
            [
                objective.evaluate(model, _batch(x[s : s + 10]), gen, final=True)["nll_iwae_k7"]
                for s in range(0, 37, 10)
            ]
        ).double()
    direct = np.std(per_image.numpy(), ddof=1) / math.sqrt(37)
    assert metrics["test/nll_iwae_k7"] == pytest.approx(float(per_image.mean()), rel=1e-6)
    assert metrics["test/nll_iwae_k7_se"] == pytest.approx(direct, rel=1e-9)
    assert metrics["test/nll_iwae_k7_se"] > 0
    assert metrics["test/loss"] == pytest.approx(-metrics["test/iwae_bound"])
    assert metrics["test/elbo"] == pytest.approx(-(metrics["test/recon"] + metrics["test/kl"]))

    middle = evaluate_split(model, objective, x, y, batch_size=10, seed=5, final=False)
    assert not any("nll_iwae" in key for key in middle)
    every = evaluate_split(model, IWAE(k=3, iwae_k_eval=4), x, y, 10, 5, final=False)
    assert {"test/nll_iwae_k4", "test/nll_iwae_k4_se"} <= set(every)


# --------------------------------------------------------------------------- the experiment


def test_vae_burda_is_burdas_network_and_its_test_k_shrinks_under_smoke(compose_cfg):
    cfg = compose_cfg("experiment=vae_burda")
    assert (cfg.model.latent_dim, cfg.model.hidden_dim, cfg.model.hidden_layers) == (50, 200, 2)
    assert (cfg.objective.k, cfg.objective.iwae_k, cfg.trainer.batch_size) == (1, 5000, 20)
    assert (cfg.optimizer.betas, cfg.optimizer.eps) == ([0.9, 0.999], 1e-4)
    assert compose_cfg("experiment=vae_burda", "+debug=smoke").objective.iwae_k <= 100
    model = _burda_net()
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [
        (200, 784),
        (200,),
        (200, 200),
        (200,),  # encoder
        (50, 200),
        (50,),
        (50, 200),
        (50,),  # mu, log-variance
        (200, 50),
        (200,),
        (200, 200),
        (200,),
        (784, 200),
        (784,),  # decoder
    ]
