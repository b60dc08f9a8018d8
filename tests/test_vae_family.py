"""Bernoulli VAE family (issue 3): likelihood building blocks, ELBO variants, IWAE
against exact log-likelihoods, conditional VAE, and the seed experiments' figures."""

import json
import math

import pytest
import torch
from PIL import Image
from torch import nn
from torch.distributions import Bernoulli

from dgm_runner.distributions import kl_normal_std, log_bernoulli, sample_bernoulli
from dgm_runner.loop import train
from dgm_runner.models.vae import VAEMLP, GaussianVAE
from dgm_runner.objectives import ELBO, Batch
from dgm_runner.objectives.elbo import iwae_log_likelihood
from tests.helpers import SMALL, needs_mnist


def test_log_bernoulli_matches_torch_and_survives_saturation():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 20, generator=g) * 3
    x = torch.bernoulli(torch.full((8, 20), 0.5), generator=g)
    torch.testing.assert_close(
        log_bernoulli(x, logits), Bernoulli(logits=logits).log_prob(x).sum(-1)
    )
    saturated = torch.tensor([[200.0, -200.0]])
    out = log_bernoulli(torch.tensor([[0.0, 1.0]]), saturated)  # log(1 - sigmoid(200)) etc.
    assert torch.isfinite(out).all() and out.item() == pytest.approx(-400.0)


def test_sample_bernoulli_frequency():
    probs = torch.tensor([0.1, 0.5, 0.9]).expand(100_000, 3)
    freq = sample_bernoulli(probs, torch.Generator().manual_seed(1)).mean(0)
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.5, 0.9]), atol=0.005, rtol=0)


class _TinyVAE(GaussianVAE):
    """D binary pixels, latent_dim 1 or 2, a one-layer decoder: small enough to integrate."""

    def __init__(self, d: int = 5, latent_dim: int = 1, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.image_shape, self.latent_dim = (1, 1, d), latent_dim
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(d, 8), nn.Tanh())
        self.fc_mu, self.fc_logvar = nn.Linear(8, latent_dim), nn.Linear(8, latent_dim)
        self.decoder = nn.Sequential(nn.Linear(latent_dim, d), nn.Unflatten(1, (1, 1, d)))
        with torch.no_grad():
            self.decoder[0].weight.mul_(4.0)


def _exact_log_px(
    model: _TinyVAE, x: torch.Tensor, half_width: float = 8.0, n: int = 801
) -> torch.Tensor:
    """log p(x) = log ∫ p(x|z) N(z; 0, I) dz by the trapezoid rule on a grid (1-D or 2-D)."""
    t = torch.linspace(-half_width, half_width, n, dtype=torch.float64)
    if model.latent_dim == 1:
        z, w = t[:, None], torch.full((n,), t[1] - t[0], dtype=torch.float64)
        w[[0, -1]] /= 2
    else:
        z = torch.cartesian_prod(t, t)
        w1 = torch.full((n,), float(t[1] - t[0]), dtype=torch.float64)
        w1[[0, -1]] /= 2
        w = (w1[:, None] * w1[None, :]).flatten()
    with torch.no_grad():
        logits = model.decode_logits(z.float()).flatten(1).double()
    log_prior = -0.5 * (z.pow(2).sum(1) + model.latent_dim * math.log(2 * math.pi))
    ll = log_bernoulli(x.flatten(1).double()[:, None, :], logits[None]) + log_prior + torch.log(w)
    return torch.logsumexp(ll, dim=1)


@pytest.mark.parametrize("latent_dim, n", [(1, 4001), (2, 401)])
def test_iwae_converges_to_the_exact_log_likelihood(latent_dim, n):
    model = _TinyVAE(latent_dim=latent_dim, seed=latent_dim)
    x = torch.bernoulli(torch.full((6, 1, 1, 5), 0.5), generator=torch.Generator().manual_seed(3))
    exact = _exact_log_px(model, x, n=n)
    gen = torch.Generator().manual_seed(4)
    estimate = iwae_log_likelihood(model, x, None, 20_000, "bernoulli", generator=gen).double()
    torch.testing.assert_close(estimate, exact, atol=0.02, rtol=0)
    # ELBO <= IWAE_1 (= ELBO in expectation) <= IWAE_k <= log p(x)
    elbo = (
        torch.stack(
            [
                ELBO(iwae_k=0).terms(model, Batch(x, torch.zeros(6, dtype=torch.long)), gen)["elbo"]
                for _ in range(2000)
            ]
        )
        .mean(0)
        .double()
    )
    assert (elbo <= exact + 1e-3).all() and (elbo <= estimate + 1e-3).all()


def test_elbo_iwae_k_and_2k_are_ordered_on_a_trained_model():
    torch.manual_seed(0)
    model = VAEMLP((1, 4, 4), latent_dim=2, hidden_dim=32)
    x = (torch.rand(512, 1, 4, 4) > 0.5).float()
    x[:256, :, :2] = 1.0  # two clusters, so the posterior is not the prior
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    objective = ELBO()
    batch = Batch(x, torch.zeros(512, dtype=torch.long))
    for _ in range(300):
        loss, _ = objective.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        elbo = torch.stack([objective.terms(model, batch, gen)["elbo"] for _ in range(50)]).mean()
    l5, l50, l100 = (
        iwae_log_likelihood(model, x, None, k, generator=gen).mean() for k in (5, 50, 100)
    )
    assert elbo < l5 < l50 < l100


def test_mc_kl_is_an_unbiased_estimate_of_the_analytic_kl():
    model = _TinyVAE(latent_dim=2)
    x = torch.bernoulli(torch.full((4, 1, 1, 5), 0.5), generator=torch.Generator().manual_seed(5))
    batch = Batch(x.repeat(20_000, 1, 1, 1), torch.zeros(80_000, dtype=torch.long))
    with torch.no_grad():
        mc = (
            ELBO(kl="mc")
            .terms(model, batch, torch.Generator().manual_seed(6))["kl"]
            .reshape(20_000, 4)
        )
        mu, logvar = model.encode(x)
    se = mc.std(0) / math.sqrt(20_000)
    assert ((mc.mean(0) - kl_normal_std(mu, logvar)).abs() < 4 * se + 1e-4).all()


def test_n_samples_averages_the_reconstruction_term():
    model = _TinyVAE()
    x = torch.ones(3, 1, 1, 5)
    b = Batch(x, torch.zeros(3, dtype=torch.long))
    one = [
        ELBO(n_samples=1).terms(model, b, torch.Generator().manual_seed(s))["recon"]
        for s in range(2)
    ]
    two = ELBO(n_samples=2).terms(model, b, torch.Generator().manual_seed(0))["recon"]
    # the 2-sample term is the mean of the two 1-sample terms drawn from the same stream
    gen = torch.Generator().manual_seed(0)
    mu, logvar = model.encode(x)
    z1 = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)
    z2 = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)
    r = [-log_bernoulli(x.flatten(1), model.decode_logits(z).flatten(1)) for z in (z1, z2)]
    torch.testing.assert_close(two, (r[0] + r[1]) / 2)
    assert one[0].shape == (3,)


VAE_EXPERIMENTS = {
    "vae_bernoulli_2d": {
        "prior_samples_10x2": (2, 10),
        "latent_scatter": None,
        "interpolation": (11, 3),
    },
    "vae_kingma_14x14": {"elbo_curves": None, "reconstructions": (8, 2)},
    "vae_bce": {"reconstructions": (8, 2)},
    "cvae": {"class_grid": (8, 10), "reconstructions": (8, 2)},
}


@needs_mnist
@pytest.mark.parametrize("experiment", sorted(VAE_EXPERIMENTS))
def test_vae_experiment_smoke_run_writes_metrics_and_figures(compose_cfg, tmp_path, experiment):
    cfg = compose_cfg(
        f"experiment={experiment}",
        *SMALL,
        "trainer.epochs=2",
        "trainer.eval_every=1",
        "objective.iwae_k=10",
        "trainer.val_every_steps=2",
        "trainer.val_size=100",
    )
    final = train(cfg, tmp_path)
    for key in ("test/elbo", "test/recon", "test/kl", "test/nll_iwae_k10"):
        assert math.isfinite(final[key]), key
    assert final["test/elbo"] == pytest.approx(-(final["test/recon"] + final["test/kl"]))
    assert final["test/nll_iwae_k10"] <= -final["test/elbo"] + 1.0  # IWAE bound is (nearly) tighter
    if experiment == "cvae":
        assert final["test/celbo"] == final["test/elbo"]
    side = 14 if experiment == "vae_kingma_14x14" else 28
    for name, layout in VAE_EXPERIMENTS[experiment].items():
        img = Image.open(tmp_path / "figures" / f"{name}.png")
        if layout is not None:  # columns x rows of side-px images with 2-px padding
            cols, rows = layout
            assert img.size == (cols * side + (cols + 1) * 2, rows * side + (rows + 1) * 2), name
    if experiment == "vae_kingma_14x14":
        history = [
            json.loads(s) for s in (tmp_path / "train_history.jsonl").read_text().splitlines()
        ]
        assert [r["step"] for r in history if "train/recon" in r] == list(
            range(1, 9)
        )  # every update
        assert [r["step"] for r in history if "val/recon" in r] == [2, 4, 6, 8]


def test_every_vae_experiment_sweeps_latent_dim():
    from hydra import compose, initialize_config_dir

    from dgm_runner import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for experiment in [*VAE_EXPERIMENTS, "vae_mlp", "vae_cnn"]:
            cfg = compose(
                "train",
                overrides=[f"experiment={experiment}", "sweep=latent_dim"],
                return_hydra_config=True,
            )
            assert cfg.hydra.sweeper.params["model.latent_dim"] == "2,5,10,20"
            assert "latent_dim" in cfg.model


@pytest.mark.parametrize("param", ["exp", "softplus"])
def test_learned_decoder_std_floor_holds_and_loss_stays_finite(param):
    model = VAEMLP(
        (1, 4, 4),
        latent_dim=2,
        hidden_dim=8,
        decoder_std="learned",
        std_param=param,
        std_floor=0.05,
    )
    with torch.no_grad():  # drive the raw std output to -1e4: sigma would be ~0 without the floor
        model.std_net[-1].bias.fill_(-1e4)
        model.std_net[-1].weight.zero_()
    z = torch.randn(6, 2)
    std = model.decode_std(z)
    assert std.shape == (6,) and (std >= 0.05 - 1e-7).all()
    x = torch.rand(6, 1, 4, 4)
    terms = ELBO(likelihood="gaussian_learned").terms(
        model, Batch(x, torch.zeros(6, dtype=torch.long))
    )
    assert all(torch.isfinite(v).all() for v in terms.values())
    unguarded = VAEMLP(
        (1, 4, 4), latent_dim=2, hidden_dim=8, decoder_std="learned", std_param="exp", std_floor=0.0
    )
    with torch.no_grad():
        unguarded.std_net[-1].bias.fill_(-200.0)
        unguarded.std_net[-1].weight.zero_()
    assert float(unguarded.decode_std(z).max()) < 1e-80  # the collapse the floor prevents


def test_gaussian_reconstruction_gradient_scales_as_one_over_sigma_squared():
    # d/dmu [ ||x - mu||^2 / (2 sigma^2) ] = (mu - x) / sigma^2: vanishes as sigma grows.
    from dgm_runner.objectives.elbo import log_likelihood

    x = torch.rand(1, 1, 2, 2)
    logits = torch.zeros(1, 1, 2, 2, requires_grad=True)  # mean 0.5
    grads = []
    for sigma in (0.1, 1.0, 10.0):
        (g,) = torch.autograd.grad(
            -log_likelihood("gaussian_learned", x, logits, torch.tensor([sigma])).sum(), logits
        )
        grads.append(g)
        torch.testing.assert_close(g, (0.5 - x) * 0.25 / sigma**2)  # chain rule: sigmoid'(0) = 1/4
    # sigma 0.1 -> 1 -> 10: the gradient shrinks 100-fold at each step (exactly, up to rounding)
    torch.testing.assert_close(grads[0], 100 * grads[1])
    torch.testing.assert_close(grads[1], 100 * grads[2])


@needs_mnist
def test_vae_learned_var_smoke_run_logs_the_decoder_std(compose_cfg, tmp_path):
    cfg = compose_cfg(
        "experiment=vae_learned_var", *SMALL, "trainer.epochs=2", "trainer.log_every=1"
    )
    final = train(cfg, tmp_path)
    assert final["train/decoder_std"] >= 0.05 and math.isfinite(final["test/elbo"])
    history = [json.loads(s) for s in (tmp_path / "train_history.jsonl").read_text().splitlines()]
    assert len([r for r in history if "train/decoder_std" in r]) == 8
    assert (tmp_path / "figures" / "training_curves.png").is_file()


def test_ancestral_labels_draw_the_chosen_classes_from_the_same_z():
    """Seed 004 Q3, generation per class: ``labels=[3]`` decodes every z with class 3,
    ``[3, 5]`` alternates, the default cycles 0..9; an unconditional model or a class
    outside [0, n_classes) is refused."""
    from dgm_runner.samplers.ancestral import AncestralSampler

    torch.manual_seed(0)
    model = VAEMLP((1, 28, 28), latent_dim=4, hidden_dim=16, conditional=True, n_classes=10)
    model.eval()
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(7))
    for labels, want in (
        ([3], [3] * 6),
        ([3, 5], [3, 5, 3, 5, 3, 5]),
        (None, [0, 1, 2, 3, 4, 5]),
    ):
        sampler = AncestralSampler(labels)
        sampler.check_model(model)
        got = sampler.sample(model, 6, torch.Generator().manual_seed(7))
        assert torch.equal(got, model.decode(z, torch.tensor(want))), labels
    with pytest.raises(TypeError, match="not a conditional model"):
        AncestralSampler([3]).check_model(VAEMLP((1, 28, 28), latent_dim=4, hidden_dim=16))
    with pytest.raises(TypeError, match=r"\[0, 10\)"):
        AncestralSampler([10]).check_model(model)


@needs_mnist
def test_dgm_sample_label_writes_a_grid_of_one_class(compose_cfg, tmp_path):
    import subprocess

    from tests.helpers import script

    run_dir = tmp_path / "cvae"
    train(compose_cfg("experiment=cvae", *SMALL, "logger=none", "~sample_metrics.fid"), run_dir)
    proc = subprocess.run(
        [script("dgm-sample"), str(run_dir), "n=16", "label=3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run_dir / "samples" / "sample_label3_n16_seed0.png").is_file()
    bad = subprocess.run(
        [script("dgm-sample"), str(run_dir), "label=[3,12]"], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "[0, 10)" in bad.stderr.strip().splitlines()[-1]
