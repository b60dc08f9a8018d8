"""Score matching and diffusion (issue 4) against closed forms: Gaussian data have an exact
noise-conditional / time-conditional score, so objectives and samplers can be checked."""

import json
import math
from functools import partial

import pytest
import torch
from torch import nn

from dgm_runner.data import sample_toy2d
from dgm_runner.loop import train
from dgm_runner.metrics.sample_distance import mmd_rbf, sliced_wasserstein
from dgm_runner.models.oracle import GaussianOracle
from dgm_runner.models.score import NoiseConditionalScoreMLP, ScoreUNet, geometric_sigmas
from dgm_runner.models.unet import UNet
from dgm_runner.objectives import Batch
from dgm_runner.objectives.dsm import DenoisingScoreMatching, DiffusionDSM, dsm_per_example
from dgm_runner.samplers import AnnealedLangevin, EulerMaruyama, PredictorCorrector
from dgm_runner.samplers.score import langevin_step
from dgm_runner.sdes import VESDE, VPSDE
from tests.helpers import SMALL, needs_mnist

MU, STD = torch.tensor([1.0, -2.0]), 0.5  # data ~ N(MU, STD^2 I)


class GaussianNCSN(nn.Module):
    """Exact noise-conditional score of N(MU, STD^2 I) perturbed by N(0, sigma^2 I)."""

    def __init__(self, shift: float = 0.0, scale: float = 1.0) -> None:
        super().__init__()
        self.image_shape = (2,)
        self.register_buffer("sigmas", geometric_sigmas(5.0, 0.01, 10))
        self.shift, self.scale = shift, scale

    def score(self, x, sigma):
        return -self.scale * (x - MU - self.shift) / (STD**2 + sigma[:, None] ** 2)


def GaussianSDEScore(sde):  # noqa: N802
    """Exact score of p_t for N(MU, STD^2 I) data under a VE or VP SDE."""
    return GaussianOracle(sde, MU, STD)


def test_dsm_loss_is_smallest_at_the_exact_score():
    x = MU + STD * torch.randn(200_000, 2, generator=torch.Generator().manual_seed(0))
    batch = Batch(x, torch.zeros(200_000, dtype=torch.long))
    losses = {}
    for name, model in {
        "exact": GaussianNCSN(),
        "shifted": GaussianNCSN(shift=0.3),
        "scaled": GaussianNCSN(scale=1.3),
    }.items():
        per = DenoisingScoreMatching("sigma2").evaluate(
            model, batch, torch.Generator().manual_seed(1)
        )["dsm_loss"]
        losses[name] = (per.mean(), per.std() / math.sqrt(per.numel()))
    for other in ("shifted", "scaled"):
        assert losses["exact"][0] + 5 * losses["exact"][1] < losses[other][0]


def test_dsm_weightings():
    score, noise, sigma = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0.1, 0.5, 1.0, 2.0])
    weighted = dsm_per_example(score, noise, sigma, "sigma2")
    unweighted = dsm_per_example(score, noise, sigma, "none")
    torch.testing.assert_close(weighted, 0.5 * sigma**2 * unweighted)
    target = -noise / sigma[:, None]  # grad log N(x~; x, sigma^2 I) at x~ = x + sigma noise
    torch.testing.assert_close(dsm_per_example(target, noise, sigma, "none"), torch.zeros(4))


def test_annealed_langevin_step_size_convention():
    sigmas = geometric_sigmas(5.0, 0.01, 10)
    assert sigmas[0] == pytest.approx(5.0) and sigmas[-1] == pytest.approx(0.01)  # largest first
    alphas = AnnealedLangevin(step_size=2e-5).step_sizes(sigmas)
    assert alphas[-1] == pytest.approx(2e-5)  # alpha_L = step_size at the smallest level
    torch.testing.assert_close(alphas, 2e-5 * sigmas**2 / 0.01**2)


def _check_moments(samples: torch.Tensor, var_tol: float = 0.05) -> None:
    n = samples.shape[0]
    se = STD / math.sqrt(n)
    assert (samples.mean(0) - MU).abs().max() < 5 * se, samples.mean(0)
    assert (samples.var(0) / STD**2 - 1).abs().max() < var_tol, samples.var(0)


def test_annealed_langevin_samples_a_gaussian_given_its_exact_score():
    sampler = AnnealedLangevin(step_size=5e-5, steps_per_level=100)
    _check_moments(sampler.sample(GaussianNCSN(), 20_000, torch.Generator().manual_seed(2)))


@pytest.mark.parametrize("sde", [VESDE(0.01, 50.0), VPSDE(0.1, 20.0)], ids=["ve", "vp"])
@pytest.mark.parametrize(
    "sampler", [EulerMaruyama(steps=500), PredictorCorrector(steps=500, snr=0.16)], ids=["em", "pc"]
)
def test_reverse_sde_samplers_sample_a_gaussian_given_its_exact_score(sde, sampler):
    _check_moments(
        sampler.sample(GaussianSDEScore(sde), 20_000, torch.Generator().manual_seed(3)),
        var_tol=0.06,
    )


@pytest.mark.parametrize("sde", [VESDE(0.01, 50.0), VPSDE(0.1, 20.0)], ids=["ve", "vp"])
def test_sde_marginal_variance_solves_the_forward_variance_ode(sde):
    # For dx = f dt + g dw with linear f = -b(t)/2 x, Var_t obeys dV/dt = -b(t) V + g(t)^2.
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-5
    var = lambda s: sde.marginal(torch.zeros(len(s), 1, dtype=torch.float64), s)[1] ** 2  # noqa: E731
    dvar = (var(t + h) - var(t - h)) / (2 * h)
    b = sde.beta(t) if isinstance(sde, VPSDE) else torch.zeros_like(t)
    torch.testing.assert_close(dvar, -b * var(t) + sde.diffusion(t) ** 2, rtol=1e-4, atol=1e-6)


def test_score_of_an_affine_transform_drives_langevin_to_the_right_moments():
    # Seed 003 written Q3: y = a x + b has score s_y(y) = s_x((y - b) / a) / a.
    a, b, m, v = -2.0, 3.0, 1.5, 0.25
    s_x = lambda x: -(x - m) / v  # noqa: E731
    s_y = lambda y: s_x((y - b) / a) / a  # noqa: E731
    gen = torch.Generator().manual_seed(5)
    y = torch.randn(20_000, 1, generator=gen) * 5
    for _ in range(2000):
        y = langevin_step(y, s_y(y), 0.01, gen)
    assert float(y.mean()) == pytest.approx(a * m + b, abs=5 * math.sqrt(a * a * v / 20_000))
    assert float(y.var()) == pytest.approx(a * a * v, rel=0.05)  # step 0.01 << a^2 v = 1


def test_distances_separate_matching_and_mismatched_samples():
    gen = torch.Generator().manual_seed(6)
    a, b = sample_toy2d("rings", 2000, gen), sample_toy2d("rings", 2000, gen)
    noise = torch.randn(2000, 2, generator=gen) * 5  # the annealed-Langevin start, sigma_1 = 5
    assert sliced_wasserstein(a, b) < 0.2 * sliced_wasserstein(noise, b)
    assert mmd_rbf(a, b) < 0.1 * mmd_rbf(noise, b)
    assert abs(mmd_rbf(a, b)) < 0.01


def test_score_networks_shapes():
    mlp = NoiseConditionalScoreMLP((2,))
    assert mlp.score(torch.randn(7, 2), mlp.sigmas[:7]).shape == (7, 2)
    unet = ScoreUNet((1, 28, 28), VESDE(), partial(UNet, channels=(8, 16, 16), groups=4))
    assert unet.score(torch.randn(3, 1, 28, 28), torch.rand(3)).shape == (3, 1, 28, 28)
    with pytest.raises(ValueError, match="divisible by 4"):
        ScoreUNet((1, 30, 30), VESDE())
    loss, _ = DiffusionDSM().loss(
        unet, Batch(torch.rand(3, 1, 28, 28), torch.zeros(3, dtype=torch.long))
    )
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_toy_experiment_beats_the_noise_baseline(compose_cfg, tmp_path):
    """The seed-literal default (unweighted loss, Algorithm 1 without a denoising step, the
    tuned noise levels) at its full 500 epochs, on 500 samples."""
    cfg = compose_cfg(
        "experiment=dsm_toy2d",
        "trainer.eval_every=500",
        "trainer.n_samples=500",
        "sample_metrics.distance.n=500",
        "trainer.progress=false",
        "logger=none",
    )
    final = train(cfg, tmp_path)
    assert final["test/swd_floor"] < final["test/swd"] < 0.4 * final["test/swd_noise"]
    assert final["test/mmd"] < 0.4 * final["test/mmd_noise"]
    for rel in (
        "figures/data.png",
        "figures/score_field.png",
        "samples/final.png",
        "checkpoints/last.pt",
    ):
        assert (tmp_path / rel).is_file(), rel


@needs_mnist
def test_score_sde_mnist_smoke_run_with_ema(compose_cfg, tmp_path):
    cfg = compose_cfg(
        "experiment=score_sde_mnist",
        *SMALL,
        "model.net.channels=[8,16,16]",
        "model.net.groups=4",
        "sampler.steps=5",
        "trainer.ema_decay=0.9",
    )
    final = train(cfg, tmp_path)
    assert math.isfinite(final["test/dsm_loss"])
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["ema"] is not None and "n_averaged" in ckpt["ema"]
    assert (tmp_path / "samples" / "final.png").is_file()
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "completed"


def test_ema_warms_up_then_decays_at_the_configured_rate():
    from dgm_runner.build import make_ema

    model = nn.Linear(1, 1, bias=False)
    ema = make_ema(model, 0.999)
    expected = 0.0
    for n in range(1, 400):
        value = float(n % 7)
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update_parameters(model)
        if n == 1:  # the first update copies the weights
            expected = value
        else:  # n - 1 updates averaged so far
            d = min(0.999, n / (9 + n))
            expected = d * expected + (1 - d) * value
        assert float(ema.module.weight) == pytest.approx(expected, rel=1e-5)
    assert 0.97 < d < 0.999  # still warming up: the 0.999 cap is reached after ~9000 updates
