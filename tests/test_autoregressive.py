"""Autoregressive pixel models (issue 28, item 2): MADE and PixelCNN are autoregressive
(autograd: an output never depends on its own or a later pixel, for every mask), their
likelihood is exact (on a 3x3 binary toy the probabilities of all 512 images sum to 1 and
every conditional is the joint's conditional), the objective reports that likelihood, and
the sampler draws from the model's distribution (empirical frequencies against the exact
probabilities). The smoke runs of made_mnist / pixelcnn_mnist are in test_contracts.py."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from dgm_runner.models.autoregressive import AutoregressiveImageModel
from dgm_runner.models.made import MADE
from dgm_runner.models.pixelcnn import PixelCNN
from dgm_runner.objectives.autoregressive import AutoregressiveNLL
from dgm_runner.objectives.base import Batch
from dgm_runner.samplers.autoregressive import AutoregressiveSampler

TOY = (1, 3, 3)  # 512 binary images


def _sharpen(model: torch.nn.Module, scale: float) -> torch.nn.Module:
    """Scale every weight (not the mask degrees): a peaked, far from uniform model."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model


def _made(shape=TOY, seed: int = 0, **kwargs) -> MADE:
    torch.manual_seed(seed)
    model = MADE(shape, **{"hidden_dim": 24, **kwargs}).double().eval()
    if model.direct is not None:  # initialised to zero: give the direct path weights to check
        with torch.no_grad():
            model.direct.normal_()
    return model


def _pixelcnn(shape=TOY, seed: int = 0, **kwargs) -> PixelCNN:
    torch.manual_seed(seed)
    args = {"channels": 8, "n_layers": 2, "first_kernel": 3, "kernel": 3, **kwargs}
    return PixelCNN(shape, **args).double().eval()


MODELS = {
    "made_1_mask": lambda **kw: _made(**kw),
    "made_2_layers": lambda **kw: _made(n_layers=2, **kw),
    "made_4_masks_natural": lambda **kw: _made(n_layers=2, n_masks=4, **kw),
    "made_4_masks_random_orders": lambda **kw: _made(n_layers=2, n_masks=4, order="random", **kw),
    "made_direct_2_random_orders": lambda **kw: _made(
        n_masks=2, order="random", direct_connections=True, **kw
    ),
    "pixelcnn": lambda **kw: _pixelcnn(**kw),
    "pixelcnn_gated": lambda **kw: _pixelcnn(gated=True, **kw),
    # 3 colour channels of 1x3 pixels: 512 images too, R -> G -> B within a position
    "pixelcnn_3_colours": lambda seed=2, **kw: _pixelcnn((3, 1, 3), seed=seed, **kw),
    "pixelcnn_3_colours_gated": lambda **kw: _pixelcnn((3, 1, 3), gated=True, channels=7, **kw),
}


def _all_binary_images(shape=TOY) -> torch.Tensor:
    d = math.prod(shape)
    grid = torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)), dtype=torch.float64)
    return grid.view(-1, *shape)


def _ranks(model: AutoregressiveImageModel, order: int) -> torch.Tensor:
    """``(D,)``: the generation step of each flat pixel."""
    steps = model.generation_steps(order)
    rank = torch.empty(model.n_dims, dtype=torch.long)
    for s, dims in enumerate(steps):
        rank[dims] = s
    return rank


# --------------------------------------------------------------------------- autoregressive


def _jacobian(model: AutoregressiveImageModel, order: int, x: torch.Tensor) -> torch.Tensor:
    """``(D_out, D_in)``: |d output / d input| summed over the output's logits (levels)."""

    def f(flat: torch.Tensor) -> torch.Tensor:
        logits = model.logits(flat.view(1, *model.image_shape), order)
        if model.n_levels > 2:  # (1, 256, C, H, W): sum the levels' gradients
            logits = logits.sum(1)
        return logits.flatten()

    return torch.autograd.functional.jacobian(f, x.flatten()).abs()


@pytest.mark.parametrize(
    "build",
    [
        lambda: _made((1, 5, 5)),
        lambda: _made((1, 5, 5), n_layers=2, n_masks=3),
        lambda: _made((1, 5, 5), n_layers=2, n_masks=3, order="random", mask_seed=7),
        lambda: _made((2, 3, 3), n_masks=2, order="random"),
        lambda: _made((1, 5, 5), n_masks=3, order="random", direct_connections=True),
        lambda: _pixelcnn((1, 5, 5), first_kernel=7),
        lambda: _pixelcnn((1, 5, 5), gated=True),
        lambda: _pixelcnn((1, 5, 5), likelihood="categorical"),
        lambda: _pixelcnn((2, 4, 4)),
    ],
    ids=[
        "made",
        "made_3_masks",
        "made_3_random_orders",
        "made_2_channels",
        "made_direct_connections",
        "pixelcnn_7x7",
        "pixelcnn_gated",
        "pixelcnn_256_levels",
        "pixelcnn_2_channels",
    ],
)
def test_outputs_depend_only_on_earlier_pixels(build):
    """For every ordering (every MADE mask): d logit_i / d x_j = 0 whenever pixel j comes at
    or after pixel i, at a random real-valued input (every ReLU path in play)."""
    model = build()
    x = torch.randn(
        model.image_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    for order in range(model.n_orders):
        jac = _jacobian(model, order, x)
        rank = _ranks(model, order)
        at_or_after = rank[None, :] >= rank[:, None]  # [i, j]: j is not before i
        assert not jac[at_or_after].any(), f"order {order}: an output sees its own or a later pixel"
        assert jac[~at_or_after].any(), f"order {order}: no output depends on any pixel"
        last = int(torch.argmax(rank))  # the last pixel sees some earlier pixel
        assert jac[last].any(), f"order {order}"


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"gated": True, "channels": 7}, {"likelihood": "categorical", "first_kernel": 5}],
    ids=["plain", "gated_7_channels", "256_levels"],
)
def test_colour_pixelcnn_is_autoregressive_in_raster_then_channel_order(kwargs):
    """3x4x4 colour images (van den Oord et al. 2016, Sec. 3.4): the logit of channel c at
    position p has zero gradient, by autograd, with respect to every input at a later
    position and to channels >= c at p (R sees neither G nor B of its pixel, G sees R, B
    sees R and G); the order is written out here, not read off the model."""
    model = _pixelcnn((3, 4, 4), **kwargs)
    channel, position = torch.arange(48) // 16, torch.arange(48) % 16
    rank = 3 * position + channel  # raster order, then R, G, B; flat index c * 16 + p
    at_or_after = rank[None, :] >= rank[:, None]
    seen = torch.zeros(48, 48, dtype=torch.float64)
    for seed in range(4):  # ReLUs cut some paths at one input: what is seen, at any of 4
        x = torch.randn(
            model.image_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
        )
        jac = _jacobian(model, 0, x)  # [i, j]: d output i / d input j
        assert not jac[at_or_after].any(), "an output sees its own or a later pixel value"
        seen += jac
    # and it sees what it may: G and B of the first pixel see R there, B sees G
    for c, earlier in ((1, 0), (2, 0), (2, 1)):
        assert seen[c * 16, earlier * 16] > 0, (c, earlier)
    assert torch.equal(_ranks(model, 0), rank)  # the sampler draws in that order


def test_made_orders_and_masks_differ_and_are_drawn_from_their_seeds():
    natural = _made((1, 4, 4), n_masks=3)
    random = _made((1, 4, 4), n_masks=3, order="random")
    assert all(
        torch.equal(natural.generation_steps(k).flatten(), torch.arange(16)) for k in range(3)
    )
    orders = {tuple(random.generation_steps(k).flatten().tolist()) for k in range(3)}
    assert len(orders) == 3  # order-agnostic: three orderings
    assert not torch.equal(natural.hidden_degrees[0], natural.hidden_degrees[1])  # connectivity
    # mask k comes from seed mask_seed + k, whatever K is
    shifted = _made((1, 4, 4), n_masks=2, order="random", mask_seed=1)
    assert torch.equal(shifted.input_degrees[0], random.input_degrees[1])
    assert torch.equal(shifted.hidden_degrees[0], random.hidden_degrees[1])


def test_made_checkpoint_carries_its_masks():
    trained = _made((1, 4, 4), n_masks=2, order="random", mask_seed=3)
    other = _made((1, 4, 4), n_masks=2, order="random", mask_seed=0)
    x = torch.bernoulli(torch.full((5, 1, 4, 4), 0.5, dtype=torch.float64))
    other.log_prob(x)  # builds (and caches) the masks of its own seed
    other.load_state_dict(trained.state_dict())
    torch.testing.assert_close(other.log_prob(x), trained.log_prob(x))


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("name", list(MODELS))
def test_probabilities_of_all_512_images_sum_to_one(name):
    model = _sharpen(MODELS[name](), 3.0)
    x = _all_binary_images(model.image_shape)
    with torch.no_grad():
        p = model.log_prob(x).exp()
        assert float(p.sum()) == pytest.approx(1.0, abs=1e-10)
        assert float(p.max() / p.min()) > 100  # far from uniform: the sum is not 1 by accident
        for k in range(model.n_orders):  # each mask's model is normalised too
            assert float(model.log_prob(x, order=k).exp().sum()) == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("name", list(MODELS))
def test_conditionals_are_the_joints_conditionals(name):
    """log p(x) is the sum of the conditionals (the log-mean-exp over the masks of those
    sums for an ensemble), and each conditional p_k(x_o(s) | x_o(<s)) equals the ratio of
    the marginals of p_k over the first s + 1 and the first s pixels, summed over all 512
    images."""
    model = _sharpen(MODELS[name](), 3.0)
    x = _all_binary_images(model.image_shape)
    with torch.no_grad():
        per_order = []
        for k in range(model.n_orders):
            cond = model.conditional_log_probs(x, k).flatten(1)  # (512, 9)
            joint = cond.sum(1)
            torch.testing.assert_close(model.log_prob(x, order=k), joint)
            per_order.append(joint)
            flat = x.flatten(1).long()
            order = model.generation_steps(k).flatten()
            weights = 2 ** torch.arange(model.n_dims)
            for s in range(model.n_dims):
                prefix = order[: s + 1]
                key_with = (flat[:, prefix] * weights[: s + 1]).sum(1)
                key_without = (flat[:, prefix[:-1]] * weights[:s]).sum(1)
                p = joint.exp()
                with_ = torch.zeros(2 ** (s + 1), dtype=p.dtype).index_add_(0, key_with, p)
                without = torch.zeros(2**s, dtype=p.dtype).index_add_(0, key_without, p)
                ratio = with_[key_with] / without[key_without]
                torch.testing.assert_close(cond[:, order[s]].exp(), ratio)
        stacked = torch.stack(per_order, 1)
        expected = torch.logsumexp(stacked, 1) - math.log(model.n_orders)
        torch.testing.assert_close(model.log_prob(x), expected)


def test_256_level_pixelcnn_is_normalised_over_all_65536_images():
    model = _sharpen(_pixelcnn((1, 1, 2), likelihood="categorical"), 3.0)
    levels = torch.tensor(list(itertools.product(range(256), repeat=2)), dtype=torch.float64)
    x = (levels / 255).view(-1, 1, 1, 2)
    with torch.no_grad():
        p = model.log_prob(x).exp()
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-10)
    assert float(p.max() / p.min()) > 10  # far from uniform


# --------------------------------------------------------------------------- the objective


def test_objective_reports_the_exact_nll_and_its_ensemble():
    model = _sharpen(_made(n_layers=2, n_masks=4, order="random"), 3.0)
    objective = AutoregressiveNLL()
    x = _all_binary_images()[::7]
    out = objective.evaluate(model, Batch(x, torch.zeros(len(x), dtype=torch.long)))
    torch.testing.assert_close(out["nll"], -model.log_prob(x))
    singles = torch.stack([-model.log_prob(x, order=k) for k in range(4)], 1)
    torch.testing.assert_close(out["nll_single_order"], singles.mean(1))
    assert (out["nll_single_order"] >= out["nll"] - 1e-12).all()  # Jensen
    assert set(out) == {"nll", "nll_single_order"} and objective.monitor == "nll"

    torch.manual_seed(11)  # training: one mask per update, drawn from the global RNG
    loss, terms = objective.loss(model, Batch(x, torch.zeros(len(x), dtype=torch.long)))
    torch.manual_seed(11)
    k = int(torch.randint(4, (1,)))
    torch.testing.assert_close(loss, -model.log_prob(x, order=k).mean())
    assert terms["loss"] == loss.detach()


def test_objective_bits_per_dim_of_256_levels():
    model = _pixelcnn((1, 4, 4), likelihood="categorical")
    with torch.no_grad():  # all-zero logits: uniform over 256 levels, 8 bits per pixel
        model.head[-1].weight.zero_()
        model.head[-1].bias.zero_()
    x = torch.randint(0, 256, (3, 1, 4, 4), generator=torch.Generator().manual_seed(0)) / 255
    out = AutoregressiveNLL().evaluate(model, Batch(x.double(), torch.zeros(3, dtype=torch.long)))
    torch.testing.assert_close(
        out["nll"], torch.full((3,), 16 * math.log(256), dtype=torch.float64)
    )
    torch.testing.assert_close(out["bits_per_dim"], torch.full((3,), 8.0, dtype=torch.float64))


def test_data_off_the_models_grid_is_refused():
    objective = AutoregressiveNLL()
    grey = torch.rand(2, 1, 3, 3, generator=torch.Generator().manual_seed(0)).double()
    labels = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="binary data"):
        objective.evaluate(_made(), Batch(grey, labels))
    with pytest.raises(ValueError, match="binary data"):
        AutoregressiveNLL().loss(_pixelcnn(), Batch(grey, labels))
    with pytest.raises(ValueError, match="k / 255"):  # dequantized values are not levels
        objective.evaluate(_pixelcnn(likelihood="categorical"), Batch(grey, labels))
    with pytest.raises(TypeError, match="autoregressive image model"):
        objective.check_model(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError):
        AutoregressiveSampler().check_model(torch.nn.Linear(2, 2))


# --------------------------------------------------------------------------- the sampler


def _total_variation_check(samples: torch.Tensor, p: torch.Tensor) -> tuple[float, float]:
    """(TV distance between the empirical distribution of ``samples`` (binary images, rows
    of the 512 toy images) and ``p``, tolerance). The tolerance is 3x the expected TV of N
    draws from ``p`` itself, ``0.5 sum_i sqrt(2 p_i (1 - p_i) / (pi N))`` (mean absolute
    deviation of a binomial frequency, normal approximation)."""
    n = samples.shape[0]
    weights = 2 ** torch.arange(samples[0].numel() - 1, -1, -1)
    index = (samples.flatten(1).long() * weights).sum(1)
    freq = torch.bincount(index, minlength=p.numel()).double() / n
    tv = 0.5 * float((freq - p).abs().sum())
    expected = 0.5 * float(torch.sqrt(2 * p * (1 - p) / (math.pi * n)).sum())
    return tv, 3 * expected


@pytest.mark.parametrize("name", ["made_4_masks_random_orders", "pixelcnn", "pixelcnn_3_colours"])
def test_sampler_draws_from_the_models_distribution(name):
    """20,000 samples of the 3x3 toy: their frequencies match the exact probabilities (TV
    within 3x its sampling noise), and not those of another model of the same kind (for the
    ensemble: its first mask alone), so the check can fail."""
    model = _sharpen(MODELS[name](), 3.0)
    x = _all_binary_images(
        model.image_shape
    )  # in the sampler's index order (first pixel most significant)
    with torch.no_grad():
        p = model.log_prob(x).exp()
        if model.n_orders > 1:
            wrong = model.log_prob(x, order=0).exp()
        else:
            wrong = _sharpen(MODELS[name](seed=1), 3.0).log_prob(x).exp()
    samples = AutoregressiveSampler().sample(model, 20_000, torch.Generator().manual_seed(0))
    assert set(samples.unique().tolist()) <= {0.0, 1.0}
    tv, tol = _total_variation_check(samples, p)
    assert tv < tol, (tv, tol)
    tv_wrong, _ = _total_variation_check(samples, wrong)
    assert tv_wrong > tol, (tv_wrong, tol)


def test_sampler_draws_256_level_pixels_from_their_marginals():
    """100,000 two-pixel grey images: each pixel's 256 level frequencies match its exact
    marginal (TV within 3x its sampling noise; a temperature of 0.8 gives 4.7x and 10x)."""
    model = _sharpen(_pixelcnn((1, 1, 2), likelihood="categorical"), 3.0)
    levels = torch.tensor(list(itertools.product(range(256), repeat=2)), dtype=torch.float64)
    with torch.no_grad():
        joint = model.log_prob((levels / 255).view(-1, 1, 1, 2)).exp().view(256, 256)
    samples = AutoregressiveSampler().sample(model, 100_000, torch.Generator().manual_seed(0))
    k = (samples.flatten(1) * 255).round().long()
    torch.testing.assert_close(k.double() / 255, samples.flatten(1))  # on the grid k / 255
    n = samples.shape[0]
    for pixel, marginal in ((0, joint.sum(1)), (1, joint.sum(0))):
        freq = torch.bincount(k[:, pixel], minlength=256).double() / n
        tv = 0.5 * float((freq - marginal).abs().sum())
        noise = 0.5 * float(torch.sqrt(2 * marginal * (1 - marginal) / (math.pi * n)).sum())
        assert tv < 3 * noise, (pixel, tv, noise)


def test_sampler_step_logits_equal_the_full_pass():
    """What the sampler computes per step (PixelCNN: a crop of the image; MADE: the rows of
    the output layer) equals the full pass's logits there."""
    for model in (
        _pixelcnn((2, 9, 8), first_kernel=5),
        _pixelcnn((1, 7, 6), likelihood="categorical", gated=True),
        _made((1, 4, 5), n_layers=2, n_masks=2, order="random"),
    ):
        x = torch.bernoulli(torch.full((3, *model.image_shape), 0.5, dtype=torch.float64))
        with torch.no_grad():
            for k in range(model.n_orders):
                full = model.logits(x, k)
                full = full.flatten(1) if model.n_levels == 2 else full.flatten(2)
                for dims in model.generation_steps(k):
                    torch.testing.assert_close(model.step_logits(x, k, dims), full[..., dims])
