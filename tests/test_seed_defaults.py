"""The seeds as written are the defaults (issue 19): each literal setting is pinned here;
our variants stay options (docs/seeds-as-written.md)."""

from __future__ import annotations

import pytest
import torch

from dgm_runner.testing import compose_train


def _node(*overrides: str):
    return compose_train(list(overrides))


def test_seed_001_q4_dsm_is_unweighted_and_algorithm_1_has_no_extra_step():
    cfg = _node("experiment=dsm_toy2d")
    assert cfg.objective.weighting == "none"  # sum_i ||s + (x~ - x) / sigma_i^2||^2
    assert cfg.sampler.denoise is False
    from hydra.utils import instantiate

    from dgm_runner.models.score import NoiseConditionalScoreMLP

    sampler = instantiate(cfg.sampler, steps_per_level=3)
    model = NoiseConditionalScoreMLP((2,), hidden_dim=8, n_layers=2, n_levels=4)
    calls = []
    score = model.score
    model.score = lambda x, s: calls.append(1) or score(x, s)
    sampler.sample(model, 5, torch.Generator().manual_seed(0))
    assert len(calls) == 4 * 3  # L levels x T steps, as printed
    calls.clear()
    instantiate(cfg.sampler, steps_per_level=3, denoise=True).sample(
        model, 5, torch.Generator().manual_seed(0)
    )
    assert len(calls) == 4 * 3 + 1  # the option adds one Tweedie step


def test_seed_001_q4_loss_is_the_printed_sum():
    """The default objective's per-example loss is ||s + (x~ - x)/sigma^2||^2 exactly."""
    from hydra.utils import instantiate

    from dgm_runner.objectives.dsm import dsm_per_example

    objective = instantiate(_node("experiment=dsm_toy2d").objective)
    score, noise = torch.randn(6, 2), torch.randn(6, 2)
    sigma = torch.tensor([0.01, 0.1, 1.0, 5.0, 0.5, 2.0])
    x_tilde_minus_x = sigma[:, None] * noise
    printed = (score + x_tilde_minus_x / sigma[:, None] ** 2).pow(2).sum(1)
    got = dsm_per_example(score, noise, sigma, objective.weighting)
    torch.testing.assert_close(got, printed)


def test_seed_002_kingma_welling_setup():
    cfg = _node("experiment=vae_kingma_14x14")
    assert cfg.dataset.threshold_uint8 == 128  # "greater than 128" (boundary: test_data.py)
    assert cfg.dataset.per_class == 1000 and cfg.dataset.image_size == 14
    assert cfg.optimizer._target_ == "torch.optim.Adagrad"
    assert cfg.optimizer.lr == pytest.approx(0.02)
    assert cfg.trainer.val_every_steps == 100 and cfg.trainer.val_size == 100
    assert cfg.objective.n_samples == 2


def test_seed_003_vq_loss_weights_both_terms_one():
    from hydra.utils import instantiate

    objective = instantiate(_node("experiment=vqvae_fashion").objective)
    assert objective.beta == 1.0  # L_VQ = ||sg(u) - z||^2 + ||sg(z) - u||^2


def test_seed_001_q2_interpolates_three_random_pairs_of_different_classes():
    from dgm_runner.figures.vae import _pair_indices

    cfg = _node("experiment=vae_bernoulli_2d")
    node = cfg.figures.interpolation
    assert node.pairs is None and node.n_pairs == 3 and node.step == 0.1
    labels = torch.tensor([0, 0, 1, 1, 2, 3, 3, 3, 4, 5])
    drawn = _pair_indices(labels, None, 3, seed=5)
    assert len(drawn) == 3 and all(labels[i] != labels[j] for i, j in drawn)
    assert drawn == _pair_indices(labels, None, 3, seed=5)  # seeded
    assert drawn != _pair_indices(labels, None, 3, seed=6)
    assert _pair_indices(labels, [[1, 3]], 3, seed=5) == [[2, 5]]  # the option: first images
    with pytest.raises(ValueError, match="two different classes"):
        _pair_indices(torch.zeros(4, dtype=torch.long), None, 3, seed=0)


def test_seed_000_rbm_recipe_uses_the_better_measured_momentum():
    cfg = _node("experiment=rbm_cdk")
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.lr == pytest.approx(0.05)
    assert cfg.trainer.batch_size == 64 and cfg.optimizer.momentum == 0.0
    assert cfg.model.hidden_dim == 128  # "the dimensionality d of the latent variables is 128"
