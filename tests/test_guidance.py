"""Class-conditional diffusion and classifier-free guidance (issue 31) against closed forms:
every guided sampler draws the tilted Gaussian of an exact conditional oracle; the guided
network output is Ho & Salimans' formula; label dropout happens at its rate and never
makes a real label null; bad labels and guidance are one line; resume stays bit-exact."""

from __future__ import annotations

import math

import pytest
import torch

from dgm_runner.config import ConfigError
from dgm_runner.models.oracle import ConditionalGaussianOracle
from dgm_runner.models.score import ScoreUNet
from dgm_runner.objectives.base import Batch
from dgm_runner.objectives.dsm import DiffusionDSM
from dgm_runner.objectives.flow_matching import FlowMatching
from dgm_runner.objectives.guidance import training_labels
from dgm_runner.samplers import DDIM, DDPMAncestral, HeunODE
from dgm_runner.samplers.base import draw_samples, sample_labels
from dgm_runner.samplers.diffusion import ProbabilityFlowODE
from dgm_runner.samplers.score import EulerMaruyama
from dgm_runner.samplers.solvers import RK45ODE, DPMSolverPP2M, EulerAncestral
from dgm_runner.sdes import VPSDE, EDMProcess, LinearPath
from tests.helpers import SMALL, needs_mnist
from tests.resume_check import assert_resume_is_bit_exact

MEANS = torch.tensor([[1.0, -0.5], [-1.0, 0.5], [0.0, 1.5]])
NULL_MEAN = MEANS.mean(0)
STD = 0.5
N = 6000

NOISE_SAMPLERS = {
    "heun": lambda w: HeunODE(steps=40, guidance=w),
    "ddim": lambda w: DDIM(steps=200, guidance=w),
    "ddpm": lambda w: DDPMAncestral(steps=400, guidance=w),
    "euler_maruyama": lambda w: EulerMaruyama(steps=1000, guidance=w),
    "dpmpp_2m": lambda w: DPMSolverPP2M(steps=30, guidance=w),
    "euler_ancestral": lambda w: EulerAncestral(steps=400, guidance=w),
    "rk45": lambda w: RK45ODE(guidance=w),
}
VELOCITY_SAMPLERS = {
    "ode_midpoint": lambda w: ProbabilityFlowODE("midpoint", steps=40, guidance=w),
    "rk45": lambda w: RK45ODE(guidance=w),
}


def _check_tilted(x: torch.Tensor, label: int, w: float) -> None:
    """Samples of class ``label`` at weight ``w`` are N(m_w, STD^2 I) with
    ``m_w = mu_c + w (mu_c - mu_null)`` (ConditionalGaussianOracle's closed form): mean
    within 5 standard errors + 0.02, variance within 10 % (relative se sqrt(2 / N) = 1.8 %)."""
    target = MEANS[label] + w * (MEANS[label] - NULL_MEAN)
    tol = 5 * STD / math.sqrt(x.shape[0]) + 0.02
    assert torch.allclose(x.mean(0), target, atol=tol), (x.mean(0), target)
    assert torch.allclose(x.var(0), torch.full((2,), STD**2), rtol=0.1), x.var(0)


def _draw(model, sampler, label: int) -> torch.Tensor:
    sampler.labels = [label]
    return draw_samples(model, sampler, N, 0, torch.device("cpu"))


@pytest.mark.parametrize("name", NOISE_SAMPLERS)
def test_every_guided_noise_sampler_draws_the_tilted_gaussian(name):
    process = VPSDE(0.1, 20.0) if name == "euler_maruyama" else EDMProcess(0.002, 80.0, 7.0)
    model = ConditionalGaussianOracle(process, MEANS, NULL_MEAN, STD)
    _check_tilted(_draw(model, NOISE_SAMPLERS[name](2.0), 0), 0, 2.0)


@pytest.mark.parametrize("name", VELOCITY_SAMPLERS)
@pytest.mark.parametrize("w", [0.0, 1.5])
def test_guided_flow_matching_samplers_draw_the_tilted_gaussian(name, w):
    model = ConditionalGaussianOracle(LinearPath(), MEANS, NULL_MEAN, STD, "velocity")
    _check_tilted(_draw(model, VELOCITY_SAMPLERS[name](w), 1), 1, w)


def test_the_tilted_check_can_fail():
    """Guidance applied with the wrong sign lands elsewhere: the check rejects it."""
    model = ConditionalGaussianOracle(EDMProcess(0.002, 80.0, 7.0), MEANS, NULL_MEAN, STD)
    x = _draw(model, HeunODE(steps=40, guidance=2.0), 0)
    with pytest.raises(AssertionError):
        _check_tilted(x, 0, 0.0)


def _unet(n_classes: int = 10) -> ScoreUNet:
    torch.manual_seed(0)
    net = ScoreUNet((1, 8, 8), EDMProcess(), preconditioning="edm", conditional=True)
    assert net.n_classes == n_classes and net.net.label_emb.num_embeddings == n_classes + 1
    return net


def test_guided_network_output_is_ho_and_salimans_formula_and_w0_is_the_conditional_model():
    model = _unet()
    with torch.no_grad():  # label embeddings away from their shared initialisation scale
        model.net.label_emb.weight.normal_(0.0, 1.0)
    x, t = torch.randn(5, 1, 8, 8), torch.rand(5) * 0.9 + 0.05
    labels = torch.tensor([0, 3, 9, 3, 1])
    null = torch.full((5,), 10)
    with torch.no_grad():
        f_c, f_u = model.net(x, t, labels), model.net(x, t, null)
        with model.conditioned(labels, 0.0):
            assert torch.equal(model.network(x, t), f_c)  # w = 0: one plain pass
            eps0 = model.predict_noise(x, t)
        for w in (0.5, 3.0):
            with model.conditioned(labels, w):
                guided = model.network(x, t)
                eps_w = model.predict_noise(x, t)
            torch.testing.assert_close(guided, (1 + w) * f_c - w * f_u, rtol=1e-5, atol=1e-6)
            with model.conditioned(null, 0.0):
                eps_u = model.predict_noise(x, t)
            # guiding the network output is guiding eps (EDM preconditioning is affine in F)
            torch.testing.assert_close(eps_w, (1 + w) * eps0 - w * eps_u, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(f_c, f_u)  # the label matters
        assert torch.equal(model.network(x, t), f_u)  # nothing set: the null class


def test_an_unconditional_unet_is_unchanged_and_refuses_labels():
    torch.manual_seed(0)
    a = ScoreUNet((1, 8, 8), EDMProcess())
    torch.manual_seed(0)
    b = ScoreUNet((1, 8, 8), EDMProcess(), conditional=False)
    assert a.n_classes == 0 and not a.conditional and "net.label_emb.weight" not in a.state_dict()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    with pytest.raises(ValueError, match="not class-conditional"):
        with a.conditioned(torch.zeros(2, dtype=torch.long)):
            pass
    model = _unet()
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\]"):
        with model.conditioned(torch.tensor([11])):
            pass
    with pytest.raises(ValueError, match="guidance must be >= 0"):
        with model.conditioned(None, -1.0):
            pass


def test_label_dropout_rate_and_the_null_class_is_never_a_real_label():
    model = _unet()
    y = torch.arange(200_000) % 10
    gen = torch.Generator().manual_seed(0)
    for p in (0.1, 0.3):
        labels = training_labels(model, y, p, gen)
        dropped = labels == 10
        # binomial: 5 standard errors of the rate
        assert abs(dropped.double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / y.numel())
        assert torch.equal(labels[~dropped], y[~dropped])  # kept labels are the real ones
    assert not (training_labels(model, y, 0.0, gen) == 10).any()
    assert (training_labels(model, y, 1.0, gen) == 10).all()
    assert int(y.max()) < model.n_classes  # real labels never reach the null index
    assert training_labels(ScoreUNet((1, 8, 8), EDMProcess()), y, 0.5, gen) is None


@pytest.mark.parametrize("kind", ["edm", "flow_matching"])
def test_an_unconditional_loss_draws_nothing_more_and_a_conditional_one_sees_its_labels(kind):
    """The label dropout draws come after t and the noise, and only for conditional models:
    an unconditional model's loss is the same draw for draw as before issue 31."""
    if kind == "edm":
        objective, key = DiffusionDSM(weighting="edm", time_sampling="lognormal"), "dsm_loss"
        process, precond = EDMProcess(), "edm"
    else:
        objective, key, process, precond = FlowMatching(), "fm_loss", LinearPath(), "velocity"
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6)
    torch.manual_seed(0)
    plain = ScoreUNet((1, 8, 8), process, preconditioning=precond)
    gen = torch.Generator().manual_seed(1)
    loss = objective.evaluate(plain, Batch(x, y), gen)[key]
    gen = torch.Generator().manual_seed(1)
    x0 = plain.encode(x)
    t = objective.sample_t(plain, 6, gen, x.device)
    noise = torch.randn(x0.shape, generator=gen)
    torch.testing.assert_close(loss, objective.per_example(plain, x0, t, noise), rtol=0, atol=0)
    torch.manual_seed(0)
    model = ScoreUNet((1, 8, 8), process, preconditioning=precond, conditional=True)
    with torch.no_grad():
        model.net.label_emb.weight.normal_(0.0, 1.0)
    objective.p_uncond = 0.0
    a = objective.evaluate(model, Batch(x, y), torch.Generator().manual_seed(1))[key]
    b = objective.evaluate(model, Batch(x, (y + 1) % 10), torch.Generator().manual_seed(1))
    assert not torch.allclose(a, b[key])
    objective.p_uncond = 1.0  # every label dropped: the labels no longer matter
    a = objective.evaluate(model, Batch(x, y), torch.Generator().manual_seed(1))[key]
    b = objective.evaluate(model, Batch(x, (y + 1) % 10), torch.Generator().manual_seed(1))
    assert torch.equal(a, b[key])


def test_sample_labels_cycle_the_classes_across_batches_or_repeat_the_asked_ones():
    model, sampler = _unet(), HeunODE(steps=2)
    assert sample_labels(model, sampler, 0, 12, torch.device("cpu")).tolist() == [
        *range(10),
        0,
        1,
    ]
    assert sample_labels(model, sampler, 7, 4, torch.device("cpu")).tolist() == [7, 8, 9, 0]
    sampler.labels = [3, 5]
    assert sample_labels(model, sampler, 1, 3, torch.device("cpu")).tolist() == [5, 3, 5]
    plain = ScoreUNet((1, 8, 8), EDMProcess())
    assert sample_labels(plain, sampler, 0, 3, torch.device("cpu")) is None


COND_RUN = [
    "experiment=edm_mnist_cond_cpu",
    *SMALL,
    "model.net.channels=[8,16,16]",
    "model.net.groups=4",
    "model.net.emb_dim=16",
    "logger=none",
    "trainer.num_threads=1",
    "trainer.epochs=2",
    "sampler.steps=2",
    "sample_metrics.fid.n_samples=40",
    "sample_metrics.fid.batch_size=20",
    "sample_metrics.fid.kid_subset_size=20",
    "~sample_metrics.bpd",
    "objective._target_=tests.components.SignallingDSM",
]


@needs_mnist
def test_conditional_run_resumes_bit_exact_and_reports_class_accuracy(tmp_path, monkeypatch):
    """Label dropout goes through the per-example draws: a run stopped mid-epoch and resumed
    ends bit-identical; the final FID (the default metric, small) reports the class
    accuracy of the cycled classes at guidance 0."""
    straight, state = assert_resume_is_bit_exact(tmp_path, monkeypatch, COND_RUN)
    assert "net.label_emb.weight" in state
    assert 0.0 <= straight["test/class_accuracy"] <= 1.0 and straight["test/guidance"] == 0.0
    assert straight["test/fid_n_samples"] == 40


@needs_mnist
def test_guidance_and_labels_are_one_line_errors(tmp_path):
    from dgm_runner.build import build_components
    from dgm_runner.cli.sample import _labels
    from dgm_runner.testing import compose_train

    cfg = compose_train(["experiment=edm_mnist_cpu", *SMALL, "sampler.guidance=2"])
    with pytest.raises(ConfigError, match="needs a class-conditional model"):
        build_components(cfg, torch.device("cpu"))
    cfg = compose_train([*COND_RUN[:2], "dataset.test_subset=4"])
    comps = build_components(cfg, torch.device("cpu"))
    for bad in (10, -1, [3, 12]):
        with pytest.raises(ConfigError, match=r"labels must be classes in \[0, 10\)"):
            _labels(bad, comps)
    assert _labels([0, 9], comps) == [0, 9] and comps.sampler.labels == [0, 9]
