"""Normalizing flows (issue 29): RealNVP and Glow, their layers, objective=flow_nll and
sampler=flow, checked against closed forms: inverses, autograd Jacobians, exact Gaussian and
uniform densities, the units of bits/dim, and a bit-exact resume."""

from __future__ import annotations

import math
import threading

import pytest
import torch
from torch import nn

from dgm_runner.data.protocols import dequantize_levels, pixel_levels
from dgm_runner.loop import train
from dgm_runner.metrics.flow_precision import float64_gap
from dgm_runner.metrics.units import LN2, LN256
from dgm_runner.models.flows import (
    ActNorm,
    AffineCoupling,
    BatchNormFlow,
    CenterTransform,
    ConditionalSplitPrior,
    FlowLayer,
    FlowSequence,
    Glow,
    InvertibleConv1x1,
    LogitTransform,
    MultiScaleFlow,
    RealNVP,
    Squeeze,
    data_dependent_init,
)
from dgm_runner.objectives.base import Batch
from dgm_runner.objectives.flow import FlowNLL
from dgm_runner.samplers.flow import FlowSampler
from dgm_runner.testing import compose_train
from tests.helpers import SMALL, needs_mnist
from tests.resume_check import assert_resume_is_bit_exact

SHAPES = [(1, 4, 4), (2, 4, 4), (1, 8, 8), (3, 8, 8)]


def _perturb(module: nn.Module, seed: int, scale: float = 0.2) -> nn.Module:
    """Add ``scale * N(0, 1)`` noise to every parameter (zero-initialised last convolutions
    would make every coupling the identity) and give batch-norm layers non-trivial running
    statistics; eval mode (batch norm as one fixed affine map)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for m in module.modules():
            if isinstance(m, (BatchNormFlow, nn.BatchNorm2d)):
                m.running_mean.add_(0.3 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.mul_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return module.eval()


def _layers(shape: tuple[int, int, int]) -> dict[str, FlowLayer]:
    """One of every flow layer that takes ``(C, H, W)`` inputs, randomised."""
    c = shape[0]
    torch.manual_seed(0)
    layers: dict[str, FlowLayer] = {
        "squeeze": Squeeze(),
        "actnorm": ActNorm(c),
        "conv1x1": InvertibleConv1x1(c),
        "batchnorm": BatchNormFlow(c),
        "logit": LogitTransform(0.05),
        "center": CenterTransform(),
    }
    for parity in (0, 1):
        for norm in ("batchnorm", "actnorm", "none"):
            layers[f"checkerboard{parity}_{norm}"] = AffineCoupling(
                c, "checkerboard", parity, 8, 1, norm
            )
        if c >= 2:
            layers[f"channel{parity}"] = AffineCoupling(c, "channel", parity, 8, 1, "batchnorm")
    if c >= 2:
        layers["split_prior"] = ConditionalSplitPrior(c)
    for i, layer in enumerate(layers.values()):
        _perturb(layer, seed=i)
    return layers


def _flows(shape: tuple[int, int, int]) -> dict[str, MultiScaleFlow]:
    """RealNVP and Glow variants that take ``(C, H, W)``, randomised, in eval mode."""
    torch.manual_seed(1)
    h = shape[1]
    flows: dict[str, MultiScaleFlow] = {
        "realnvp_2": RealNVP(shape, n_scales=2, channels=8, n_blocks=1),
        "realnvp_actnorm": RealNVP(
            shape, n_scales=2, channels=8, norm="actnorm", flow_norm="actnorm"
        ),
        "glow_1": Glow(shape, n_levels=1, depth=2, channels=8),
        "glow_2": Glow(shape, n_levels=2, depth=2, channels=8, preprocessing="logit"),
    }
    if h >= 8:
        flows["realnvp_3"] = RealNVP(shape, n_scales=3, channels=8, n_blocks=1)
        flows["glow_standard"] = Glow(
            shape, n_levels=3, depth=1, channels=8, split_prior="standard"
        )
    for i, flow in enumerate(flows.values()):
        _perturb(flow, seed=10 + i, scale=0.05)
    return flows


def _inputs(shape: tuple[int, ...], b: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    """``(b, *shape)`` values in [0.02, 0.98] (data of every layer, the logit's too)."""
    g = torch.Generator().manual_seed(seed)
    return (0.02 + 0.96 * torch.rand(b, *shape, generator=g)).to(dtype)


# ----------------------------------------------------------------------------- invertibility


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_layer_and_flow_inverts_its_forward(shape):
    """``inverse(forward(x)) == x`` within 1e-5 in float32, and the log-determinant is one
    finite value per example."""
    x = _inputs(shape, 3, seed=0)
    for name, layer in _layers(shape).items():
        with torch.no_grad():
            y, log_det = layer(x)
            back = layer.inverse(y)
        assert log_det.shape == (3,) and torch.isfinite(log_det).all(), name
        assert (back - x).abs().max() < 1e-5, (name, float((back - x).abs().max()))
    for name, flow in _flows(shape).items():
        with torch.no_grad():
            eps, log_det = flow(x)
            back = flow.inverse(eps)
        assert eps.shape == (3, math.prod(shape)) and log_det.shape == (3,), name
        assert (back - x).abs().max() < 1e-5, (name, float((back - x).abs().max()))


def test_squeeze_moves_each_2x2_block_into_channels():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    y, log_det = Squeeze()(x)
    assert y.shape == (1, 8, 2, 2) and torch.equal(log_det, torch.zeros(1))
    # channel 4c + 2i + j of pixel (r, s) is channel c of pixel (2r + i, 2s + j)
    for c in range(2):
        for i in range(2):
            for j in range(2):
                assert torch.equal(y[0, 4 * c + 2 * i + j], x[0, c, i::2, j::2])
    with pytest.raises(ValueError, match="even"):
        Squeeze()(torch.zeros(1, 1, 3, 4))


# ----------------------------------------------------------------------------- log-determinants


def _jacobian_log_det(fn, x: torch.Tensor) -> torch.Tensor:
    """``log |det J|`` of ``fn`` at one example ``x`` ``(1, ...)`` from its autograd Jacobian
    (float64), the output flattened."""
    jac = torch.autograd.functional.jacobian(lambda v: fn(v).flatten(), x)
    return torch.linalg.slogdet(jac.reshape(jac.shape[0], -1))[1]


@pytest.mark.parametrize(
    "shape", [(1, 4, 4), (2, 4, 4), (3, 4, 4)], ids=lambda s: "x".join(map(str, s))
)
def test_every_log_det_is_the_slogdet_of_the_jacobian(shape):
    """Each layer's and each whole flow's log-determinant equals ``slogdet`` of its autograd
    Jacobian (float64, two examples each), to 1e-8 relative; colour images (3x4x4) too:
    checkerboard masks over 3 channels, channel masks of the 12 channels after a squeeze,
    half of them factored out, two levels of Glow."""
    for name, layer in [*_layers(shape).items(), *_flows(shape).items()]:
        layer = layer.double()
        for seed in (0, 1):
            x = _inputs(shape, 1, seed=seed, dtype=torch.float64)
            _, log_det = layer(x)
            exact = _jacobian_log_det(lambda v, m=layer: m(v)[0], x)
            assert torch.allclose(log_det[0], exact, rtol=1e-8, atol=1e-8), (name, log_det, exact)


def test_the_lu_convolution_log_det_is_slogdet_of_its_weight_times_h_w():
    torch.manual_seed(3)
    conv = _perturb(InvertibleConv1x1(5), seed=3).double()
    sign, logabs = torch.linalg.slogdet(conv.weight())
    assert sign != 0
    x = torch.randn(2, 5, 3, 7, dtype=torch.float64)
    _, log_det = conv(x)
    assert torch.allclose(log_det, (logabs * 3 * 7).expand(2), rtol=1e-12, atol=1e-12)
    # W = P L (U + diag(sign(s) exp(log|s|))): the permutation and the signs are buffers
    assert {"permutation", "sign_s"} <= set(conv.state_dict())
    assert not {"permutation", "sign_s"} & {n for n, _ in conv.named_parameters()}


# ----------------------------------------------------------------------------- actnorm


def test_actnorm_data_init_gives_zero_mean_unit_variance_and_is_kept():
    g = torch.Generator().manual_seed(0)
    x = 3.0 + 2.5 * torch.randn(16, 3, 5, 5, generator=g)
    layer = ActNorm(3)
    assert not bool(layer.initialized)
    assert data_dependent_init(layer, lambda: layer(x)) == 1
    y, _ = layer(x)
    mean, var = y.mean((0, 2, 3)), y.var((0, 2, 3), unbiased=False)
    assert torch.allclose(mean, torch.zeros(3), atol=1e-5)
    assert torch.allclose(var, torch.ones(3), atol=1e-4)
    state = layer.state_dict()
    assert bool(state["initialized"]) and {"bias", "log_scale"} <= set(state)
    fresh = ActNorm(3)
    fresh.load_state_dict(state)  # a checkpoint carries the flag: never initialised again
    before = fresh.log_scale.detach().clone()
    assert data_dependent_init(fresh, lambda: fresh(x * 10)) == 0
    assert torch.equal(fresh.log_scale, before)


def test_actnorms_are_initialised_in_order_each_from_its_own_input():
    """In ``actnorm -> 1x1 conv -> actnorm`` the second layer is set from the first's
    normalised output: the sequence's output has zero mean and unit variance too."""
    torch.manual_seed(0)
    seq = FlowSequence([ActNorm(4), _perturb(InvertibleConv1x1(4), seed=0), ActNorm(4)])
    x = 5.0 + 3.0 * torch.randn(32, 4, 3, 3)
    assert data_dependent_init(seq, lambda: seq(x)) == 2
    y, _ = seq(x)
    assert torch.allclose(y.mean((0, 2, 3)), torch.zeros(4), atol=1e-5)
    assert torch.allclose(y.var((0, 2, 3), unbiased=False), torch.ones(4), atol=1e-4)


class _ThreadSum:
    """An all-reduce (sum) between ``n`` threads, each a 'process' of a data-parallel run:
    every thread gets the same sums, added in the same order."""

    def __init__(self, n: int) -> None:
        self.barrier = threading.Barrier(n)
        self.slots: list = [None] * n

    def reduce_for(self, rank: int):
        def reduce(tensors: list[torch.Tensor]) -> None:
            self.slots[rank] = [t.clone() for t in tensors]
            self.barrier.wait()
            sums = [sum(parts[1:], parts[0]) for parts in zip(*self.slots)]
            self.barrier.wait()
            for t, s in zip(tensors, sums):
                t.copy_(s)

        return reduce


def test_data_parallel_actnorm_init_matches_one_process_on_the_whole_batch():
    """Two 'processes' (threads with an all-reduce), each initialising its copy of a Glow on
    its shard (6 / 5 examples): both end with the same parameters, those of one process
    initialised on all 11 examples (up to float summation order)."""
    torch.manual_seed(0)
    single = Glow((1, 8, 8), n_levels=2, depth=2, channels=8)
    copies = [Glow((1, 8, 8), n_levels=2, depth=2, channels=8) for _ in range(2)]
    for c in copies:
        c.load_state_dict(single.state_dict())
    x = _inputs((1, 8, 8), 11, seed=5)
    assert single.data_init(x) == 12  # 2 levels x 2 steps x (flow actnorm + 2 in the network)
    shards, sums = [x[:6], x[6:]], _ThreadSum(2)
    threads = [
        threading.Thread(target=c.data_init, args=(s, sums.reduce_for(r)))
        for r, (c, s) in enumerate(zip(copies, shards))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a, b, one = (m.state_dict() for m in (*copies, single))
    for key in one:
        assert torch.equal(a[key], b[key]), key
        assert torch.allclose(a[key].float(), one[key].float(), rtol=1e-4, atol=1e-5), key


# ----------------------------------------------------------------------------- densities


def test_an_affine_flow_learns_a_gaussian_to_its_exact_log_density():
    """actnorm -> 1x1 conv -> coupling -> actnorm -> 1x1 conv on 4-D Gaussian data of known mean
    and covariance, 400 Adam steps on fresh samples: on 20 000 new samples the model's mean
    log-density is the Gaussian's exact one within 0.005 nats (the expected gap is
    -KL(p || q) <= 0; the Monte Carlo standard error of the paired difference is 0.0002
    nats). Measured: -0.0007 after 400 steps; -0.009 after 40 (fails)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    mean = torch.tensor([1.0, -2.0, 0.5, 3.0])
    a = torch.tensor(
        [[1.0, 0.0, 0.0, 0.0], [0.8, 0.6, 0.0, 0.0], [-0.5, 0.3, 0.4, 0.0], [0.2, -0.7, 0.1, 1.5]]
    )
    gauss = torch.distributions.MultivariateNormal(mean, scale_tril=a)

    def draw(n: int) -> torch.Tensor:
        return (mean + torch.randn(n, 4, generator=g) @ a.T).view(n, 4, 1, 1)

    flow = FlowSequence(
        [
            ActNorm(4),
            InvertibleConv1x1(4),
            AffineCoupling(4, "channel", 0, 8, 0, "none"),
            ActNorm(4),
            InvertibleConv1x1(4),
        ]
    )

    def log_q(x: torch.Tensor) -> torch.Tensor:
        z, log_det = flow(x)
        return torch.distributions.Normal(0.0, 1.0).log_prob(z).flatten(1).sum(1) + log_det

    data_dependent_init(flow, lambda: flow(draw(512)))
    opt = torch.optim.Adam(flow.parameters(), lr=0.02)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 400)
    for _ in range(400):
        opt.zero_grad()
        (-log_q(draw(256)).mean()).backward()
        opt.step()
        sched.step()
    x = draw(20000)
    with torch.no_grad():
        gap = log_q(x) - gauss.log_prob(x.view(-1, 4))
    assert abs(float(gap.mean())) < 0.005, float(gap.mean())


class _NormalQuantile(FlowLayer):
    """``z = Phi^{-1}(x)`` per dimension: maps U(0, 1) to N(0, 1), log-determinant
    ``-log N(z; 0, 1)`` per dimension, so a flow of it alone has the uniform density on
    [0, 1)^D: ``log p(x) = 0``."""

    def forward(self, x):
        z = math.sqrt(2.0) * torch.erfinv(2.0 * x - 1.0)
        log_n = -0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)
        return z, -log_n.flatten(1).sum(1)

    def inverse(self, z):
        return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))


def _fixed_flow(shape, preprocess: FlowLayer) -> MultiScaleFlow:
    """A flow of ``preprocess`` alone (no level layers)."""
    return MultiScaleFlow(shape, preprocess, [FlowSequence([])], [], [shape])


def test_bits_per_dim_of_known_densities():
    """The uniform density on [0, 1)^D is 8 bits/dim exactly (0 nats, offset ln 256); the
    flow ``x - 0.5 ~ N(0, I)`` gives ``(-log N(y - 0.5) / D + ln 256) / ln 2`` of the test
    images dequantized with the evaluation's generator, ``y = (k + u) / 256``."""
    shape, objective = (1, 6, 6), FlowNLL()
    d = 36
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (5, *shape), generator=g).float() / 255.0  # stored test images
    batch = Batch(x, torch.zeros(5, dtype=torch.long))
    uniform = _fixed_flow(shape, _NormalQuantile()).double()
    out = objective.evaluate(
        uniform, batch._replace(x=x.double()), torch.Generator().manual_seed(3)
    )
    assert torch.allclose(out["nll"], torch.zeros(5, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(out["bits_per_dim"], torch.full((5,), 8.0, dtype=torch.float64))
    centred = _fixed_flow(shape, CenterTransform())
    out = objective.evaluate(centred, batch, torch.Generator().manual_seed(3))
    y = dequantize_levels(pixel_levels(x), torch.Generator().manual_seed(3))
    assert ((y >= pixel_levels(x) / 256) & (y <= (pixel_levels(x) + 1) / 256)).all()
    nll = 0.5 * (y - 0.5).pow(2).flatten(1).sum(1) + 0.5 * d * math.log(2 * math.pi)
    assert torch.allclose(out["nll"], nll, rtol=1e-6)
    assert torch.allclose(out["bits_per_dim"], (nll / d + LN256) / LN2, rtol=1e-6)
    assert objective.monitor == "bits_per_dim"
    assert set(objective.standard_errors()) == {"nll", "bits_per_dim"}
    # the training loss is the batch mean in nats, its bits/dim logged with the same offset
    loss, terms = objective.loss(centred, Batch(y, batch.y))
    assert torch.allclose(loss, nll.mean()) and torch.allclose(
        terms["bits_per_dim"], (nll.mean() / d + LN256) / LN2
    )


def test_float64_and_float32_log_probs_agree_within_0_005_bits_per_dim():
    shape = (1, 8, 8)
    x = _inputs(shape, 4, seed=2)
    for name, flow in _flows(shape).items():
        with torch.no_grad():
            lp32 = flow.log_prob(x)
            lp64 = flow.double().log_prob(x.double())
        gap = (lp32.double() - lp64).abs().max() / (math.prod(shape) * LN2)
        assert gap < 0.005, (name, float(gap))


def test_float64_gap_evaluates_the_objectives_test_images_in_both_precisions():
    """``float64_gap`` (scripts/flow_precision.py): its float32 bits/dim is the objective's
    test bits/dim of the same seeded dequantization, its float64 one that of a float64 copy;
    the model stays float32."""
    shape = (1, 8, 8)
    x = torch.randint(0, 256, (6, *shape), generator=torch.Generator().manual_seed(4)) / 255.0
    for name, flow in _flows(shape).items():
        flow.eval()
        out = float64_gap(flow, x, batch_size=4, seed=5)
        gen = torch.Generator().manual_seed(5)
        with torch.no_grad():
            first = FlowNLL().evaluate(flow, Batch(x[:4], torch.zeros(4)), gen)["bits_per_dim"]
            rest = FlowNLL().evaluate(flow, Batch(x[4:], torch.zeros(2)), gen)["bits_per_dim"]
            y = dequantize_levels(pixel_levels(x), torch.Generator().manual_seed(5))
            bpd64 = (-flow.double().log_prob(y.double()) / 64 + LN256) / LN2
        flow.float()
        assert out["bits_per_dim_float32"] == pytest.approx(
            torch.cat([first, rest]).mean().item(), rel=1e-6
        ), name
        assert out["bits_per_dim_float64"] == pytest.approx(bpd64.mean().item(), rel=1e-12), name
        assert 0 < out["max_abs_gap"] < 0.005 and out["n_images"] == 6, name
        assert next(flow.parameters()).dtype == torch.float32


# ----------------------------------------------------------------------------- models


def test_models_refuse_shapes_they_cannot_squeeze_and_points():
    with pytest.raises(ValueError, match="divisible by 4"):
        RealNVP((1, 6, 6), n_scales=3)
    with pytest.raises(ValueError, match="divisible by 8"):
        Glow((1, 28, 28), n_levels=3)
    with pytest.raises(ValueError, match=r"\(C, H, W\) images"):
        Glow((2,))
    assert Glow((3, 8, 8), n_levels=3, depth=1, channels=4).n_dims == 192  # any channel count


def test_the_sampler_draws_eps_times_the_temperature_through_the_inverse():
    """Through the flow ``x = 0.5 + eps``, ``sampler.temperature=0.1`` draws ``N(0.5, 0.01)``
    pixels (no clamping at that spread); the same seed gives the same samples."""
    flow = _fixed_flow((1, 8, 8), CenterTransform())
    sampler = FlowSampler(temperature=0.1)
    sampler.check_model(flow)
    x = sampler.sample(flow, 500, torch.Generator().manual_seed(0))
    assert x.shape == (500, 1, 8, 8)
    assert abs(float(x.mean()) - 0.5) < 0.002 and abs(float(x.std()) - 0.1) < 0.002
    assert torch.equal(x, sampler.sample(flow, 500, torch.Generator().manual_seed(0)))
    with pytest.raises(TypeError, match="MultiScaleFlow"):
        sampler.check_model(nn.Linear(2, 2))
    with pytest.raises(ValueError):
        FlowSampler(temperature=0.0)


def test_the_objective_initialises_the_actnorms_on_the_first_batch_only():
    torch.manual_seed(0)
    flow, objective = Glow((1, 8, 8), n_levels=2, depth=1, channels=8), FlowNLL()
    x = _inputs((1, 8, 8), 16, seed=0)
    assert not flow.actnorms_initialized()
    objective.loss(flow, Batch(x, torch.zeros(16, dtype=torch.long)))
    assert flow.actnorms_initialized() and not flow.data_init_pending
    with pytest.raises(ValueError, match=r"data in \[0, 1\]"):
        FlowNLL().loss(Glow((1, 8, 8), n_levels=1, depth=1), Batch(x + 1, x[:, 0, 0, 0]))


# ----------------------------------------------------------------------------- training

FLOW_RUN = [
    *SMALL,
    "logger=none",
    "~sample_metrics.fid",
    "trainer.export_name=null",
    "trainer.num_threads=1",
    "trainer.epochs=2",
    "figures={}",
    "objective._target_=tests.components.SignallingFlowNLL",
]


@needs_mnist
@pytest.mark.parametrize(
    "overrides",
    [
        ["experiment=glow_mnist", "model.depth=2", "model.channels=8"],
        ["experiment=realnvp_mnist", "model.n_scales=2", "model.channels=8"],
    ],
    ids=["glow", "realnvp"],
)
def test_training_resumed_mid_epoch_is_bit_exact(tmp_path, monkeypatch, overrides):
    """SIGTERM before step 6 of 8 (epoch 2 of 2, 4 batches each, dequantized MNIST); resumed,
    the run ends with the uninterrupted run's parameters, buffers (actnorm flags, batch-norm
    statistics) and metrics to the last bit, and the actnorms were initialised once."""
    straight, b = assert_resume_is_bit_exact(tmp_path, monkeypatch, [*overrides, *FLOW_RUN])
    flags = [k for k in b if k.endswith("initialized")]
    assert all(bool(b[k]) for k in flags) and (flags or "realnvp" in str(overrides))
    assert math.isfinite(straight["test/bits_per_dim"]) and straight["test/bits_per_dim_se"] > 0


@needs_mnist
@pytest.mark.serial
def test_two_processes_initialise_the_actnorms_as_one_process_does(tmp_path):
    """2 processes (gloo, CPU), the first global batch of 63 split 32 / 31: the actnorms'
    statistics are all-reduced, so the run (learning rate 1e-12: the weights stay where the
    initialisation put them) ends with the 1-process run's parameters up to float summation
    order (without the all-reduce, each process initialising from its own shard, the first
    actnorm's bias differs and the test fails)."""
    from tests.test_ddp import _params, _spawn

    overrides = [
        "experiment=glow_mnist",
        "model.depth=2",
        "model.channels=8",
        *FLOW_RUN[:-1],
        "trainer.epochs=1",
        "trainer.dist_timeout_s=120",
        "trainer.batch_size=63",
        "optimizer.lr=1e-12",
    ]
    results = _spawn(tmp_path, [("glow", overrides, tmp_path / "ddp", {})])
    assert all("error" not in r for r in results["glow"]), results
    train(compose_train(overrides), tmp_path / "one")
    ddp, one = _params(tmp_path / "ddp"), _params(tmp_path / "one")
    flags = [k for k in one if k.endswith("initialized")]
    assert flags and all(bool(ddp[k]) and bool(one[k]) for k in flags)
    for key, value in one.items():
        if value.is_floating_point():
            assert torch.allclose(ddp[key], value, rtol=1e-5, atol=1e-6), key
