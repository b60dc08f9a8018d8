"""Closed-form KL / log-densities against torch.distributions; the reparameterization trick."""

import torch
from torch.distributions import Independent, Normal, kl_divergence

from dgm_runner.distributions import (
    kl_normal_diag,
    kl_normal_std,
    log_normal_diag,
    sample_normal_diag,
)


def _diag(mu, logvar):
    return Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)


def test_kl_standard_normal_matches_torch():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(32, 7, generator=g), torch.randn(32, 7, generator=g)
    expected = kl_divergence(_diag(mu, logvar), _diag(torch.zeros(7), torch.zeros(7)))
    torch.testing.assert_close(kl_normal_std(mu, logvar), expected)


def test_kl_two_diagonal_gaussians_matches_torch():
    g = torch.Generator().manual_seed(1)
    a, b, c, d = (torch.randn(16, 5, generator=g) for _ in range(4))
    torch.testing.assert_close(kl_normal_diag(a, b, c, d), kl_divergence(_diag(a, b), _diag(c, d)))


def test_kl_equal_variance_is_half_squared_mahalanobis():
    # Seed 001 Q1: KL(N(m1, s^2 I) || N(m2, s^2 I)) = ||m1 - m2||^2 / (2 s^2).
    m1, m2, logvar = (
        torch.tensor([[1.0, -2.0]]),
        torch.tensor([[0.5, 1.0]]),
        torch.full((1, 2), 0.7),
    )
    expected = (m1 - m2).pow(2).sum() / (2 * torch.exp(torch.tensor(0.7)))
    torch.testing.assert_close(kl_normal_diag(m1, logvar, m2, logvar), expected.reshape(1))


def test_log_normal_diag_matches_torch():
    g = torch.Generator().manual_seed(2)
    z, mu, logvar = (torch.randn(10, 4, generator=g) for _ in range(3))
    torch.testing.assert_close(log_normal_diag(z, mu, logvar), _diag(mu, logvar).log_prob(z))


def test_reparameterized_sample_has_right_moments_and_gradient():
    mu = torch.tensor([1.0, -3.0], requires_grad=True)
    logvar = torch.log(torch.tensor([4.0, 0.25])).requires_grad_()
    z = sample_normal_diag(
        mu.expand(200_000, 2), logvar.expand(200_000, 2), torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(z.mean(0), mu.detach(), atol=0.02, rtol=0)
    torch.testing.assert_close(z.var(0), torch.tensor([4.0, 0.25]), atol=0.03, rtol=0)
    z.sum().backward()  # dz/dmu = 1 per sample
    torch.testing.assert_close(mu.grad, torch.full((2,), 200_000.0))
