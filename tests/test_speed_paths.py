"""Correctness of the fast paths of issue 8 (no timing assertions: see scripts/bench.py)."""

from __future__ import annotations

import pytest
import torch

from dgm_runner.build import make_optimizer, optimizer_config
from dgm_runner.config import ConfigError
from dgm_runner.distributions import sample_bernoulli
from dgm_runner.loop import train
from dgm_runner.models import RBM
from dgm_runner.objectives import Batch, ContrastiveDivergence
from tests.helpers import SMALL, needs_mnist


def _node(name: str = "adam"):
    """configs/optimizer/NAME.yaml with lr 1e-2 (and momentum 0.5 where it has one)."""
    node = optimizer_config(name)
    node.lr = 1e-2
    if "momentum" in node:
        node.momentum = 0.5
    return node


def _fit(name: str, impl: str, steps: int = 20) -> list[torch.Tensor]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    opt = make_optimizer(net.parameters(), _node(name), impl)
    x, y = torch.randn(32, 7), torch.randn(32, 3)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "adagrad", "adamw"])
def test_fused_foreach_and_for_loop_optimizers_agree(optimizer):
    ref = _fit(optimizer, "for_loop")
    for impl in ("auto", "foreach"):
        for a, b in zip(_fit(optimizer, impl), ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_auto_takes_the_fused_kernel_where_supported_and_falls_back(monkeypatch):
    try:
        torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], fused=True)
        fused_ok = True
    except RuntimeError:
        fused_ok = False
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(3))], _node())
    assert bool(opt.param_groups[0]["fused"]) == fused_ok

    class NoFusedAdam(torch.optim.Adam):  # a torch build / device without the fused kernel
        def __init__(self, params, **kw):
            if kw.get("fused"):
                raise RuntimeError(
                    "`fused=True` requires all the params to be floating point Tensors "
                    "of supported devices"
                )
            super().__init__(params, **kw)

    monkeypatch.setattr(torch.optim, "Adam", NoFusedAdam)
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(3))], _node())
    assert not opt.param_groups[0]["fused"] and opt.param_groups[0]["foreach"]
    with pytest.raises(ConfigError, match="optimizer_impl=fused"):
        make_optimizer([torch.nn.Parameter(torch.zeros(3))], _node(), "fused")


def test_sample_bernoulli_is_exact_at_the_edges_and_deterministic():
    probs = torch.tensor([0.0, 1.0]).expand(10_000, 2)
    out = sample_bernoulli(probs, torch.Generator().manual_seed(0))
    assert out.dtype == probs.dtype and torch.equal(out.mean(0), torch.tensor([0.0, 1.0]))
    p = torch.rand(50, 40, generator=torch.Generator().manual_seed(1))
    a = sample_bernoulli(p, torch.Generator().manual_seed(2))
    b = sample_bernoulli(p, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and set(a.unique().tolist()) <= {0.0, 1.0}


def test_sample_bernoulli_integer_path_draws_independent_pairs():
    """Large float32 CPU draws take two 24-bit uniforms from each 64-bit integer: the two
    halves must be independent (joint frequencies of neighbours 1/4 each at p = 1/2)."""
    x = sample_bernoulli(torch.full((400_000,), 0.5), torch.Generator().manual_seed(4)).view(-1, 2)
    joint = torch.stack(
        [((x[:, 0] == a) & (x[:, 1] == b)).double().mean() for a in (0, 1) for b in (0, 1)]
    )
    n = x.shape[0]
    torch.testing.assert_close(
        joint,
        torch.full((4,), 0.25, dtype=torch.float64),
        atol=5 * (0.25 * 0.75 / n) ** 0.5,
        rtol=0,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_sample_bernoulli_mean(dtype):
    p = torch.tensor([0.02, 0.3, 0.5, 0.97], dtype=dtype)
    freq = sample_bernoulli(p.expand(200_000, 4), torch.Generator().manual_seed(3)).double().mean(0)
    # 5 standard errors of a Bernoulli mean over 200 000 draws
    torch.testing.assert_close(freq, p.double(), atol=5 * 0.5 / 200_000**0.5, rtol=0)
    assert sample_bernoulli(p).dtype == dtype


def _rbm(seed: int = 0) -> RBM:
    torch.manual_seed(seed)
    rbm = RBM((1, 3, 4), hidden_dim=5, init_std=0.5)
    with torch.no_grad():
        rbm.b.normal_(0, 0.5)
        rbm.c.normal_(0, 0.5)
    return rbm.double()


def test_free_energy_gap_gradient_is_the_autograd_gradient():
    """The hand-written CD gradient equals autograd through RBM.free_energy."""
    rbm = _rbm()
    x = torch.bernoulli(torch.full((16, 1, 3, 4), 0.4, dtype=torch.float64))
    cd = ContrastiveDivergence(k=3)
    torch.manual_seed(5)
    loss, terms = cd.loss(rbm, Batch(x, torch.zeros(16, dtype=torch.long)))
    grads = torch.autograd.grad(loss, [rbm.W, rbm.b, rbm.c])
    # the same chain again (same global RNG state), now through autograd
    torch.manual_seed(5)
    v0 = x.reshape(16, -1)
    with torch.no_grad():
        vk, _ = rbm.gibbs_chain(v0, 3)
    ref_loss = rbm.free_energy(v0).mean() - rbm.free_energy(vk).mean()
    ref = torch.autograd.grad(ref_loss, [rbm.W, rbm.b, rbm.c])
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(terms["free_energy"], rbm.free_energy(v0).mean())
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r)
    # the loop's update (closed-form gradient into .grad, no loss) is the same gradient
    torch.manual_seed(5)
    ((group, no_loss, step_terms),) = cd.steps(rbm, Batch(x, torch.zeros(16, dtype=torch.long)), 0)
    assert group == "model" and no_loss is None
    for p, r in zip((rbm.W, rbm.b, rbm.c), ref):
        torch.testing.assert_close(p.grad, r)
    torch.testing.assert_close(step_terms["loss"], ref_loss.detach())


def test_closed_form_cd_update_trains_like_autograd_with_an_optimizer():
    """Ten SGD-with-momentum updates through steps() (grads written by the objective, the
    loop skips backward) land on the same weights as ten through loss().backward()."""
    from dgm_runner.epoch import train_step

    x = torch.bernoulli(torch.full((32, 1, 3, 4), 0.4, dtype=torch.float64))
    batch = Batch(x, torch.zeros(32, dtype=torch.long))
    out = []
    for manual in (True, False):
        rbm, cd = _rbm(4), ContrastiveDivergence(k=2)
        opt = torch.optim.SGD(rbm.parameters(), lr=0.1, momentum=0.5)
        torch.manual_seed(9)
        for step in range(10):
            if manual:
                train_step(rbm, cd, {"model": opt}, batch, step)
            else:
                opt.zero_grad()
                cd.loss(rbm, batch)[0].backward()
                opt.step()
        out.append([p.detach().clone() for p in rbm.parameters()])
    for a, b in zip(*out):
        torch.testing.assert_close(a, b)


def test_free_energy_with_precomputed_hidden_logits():
    rbm = _rbm(1)
    v = torch.bernoulli(torch.full((6, 12), 0.5, dtype=torch.float64))
    torch.testing.assert_close(
        rbm.free_energy(v, hidden_logits=rbm.hidden_logits(v)), rbm.free_energy(v)
    )


def test_gibbs_chain_is_repeated_gibbs_steps():
    rbm = _rbm(2)
    v = torch.bernoulli(torch.full((8, 12), 0.5, dtype=torch.float64))
    a, pa = rbm.gibbs_chain(v, 4, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    b = v
    for _ in range(4):
        b, pb = rbm.gibbs_step(b, g)
    assert torch.equal(a, b) and torch.equal(pa, pb)


def test_cd_logs_its_terms_every_log_every_steps():
    rbm = _rbm(3)
    x = torch.bernoulli(torch.full((4, 1, 3, 4), 0.5, dtype=torch.float64))
    batch = Batch(x, torch.zeros(4, dtype=torch.long))
    cd = ContrastiveDivergence(k=1, log_every=3)
    logged = [sorted(next(iter(cd.steps(rbm, batch, step)))[2]) for step in range(6)]
    full = ["free_energy", "loss", "recon_error"]
    assert logged == [full, [], [], full, [], []]
    assert sorted(cd.loss(rbm, batch)[1]) == full


def _compile_run(compose_cfg, tmp_path, experiment: str, *extra: str) -> tuple[dict, dict]:
    common = [f"experiment={experiment}", *SMALL, "logger=none", "trainer.export_name=null", *extra]
    common += [f"~sample_metrics.{k}" for k in compose_cfg(*common).get("sample_metrics") or {}]
    eager = train(compose_cfg(*common), tmp_path / "eager")
    compiled = train(compose_cfg(*common, "trainer.compile=true"), tmp_path / "compiled")
    return eager, compiled


@needs_mnist
@pytest.mark.parametrize(
    "experiment, extra, key",
    [
        ("vae_mlp", ("model.hidden_dim=32", "model.latent_dim=2"), "test/elbo_loss"),
    ],
)
def test_compiled_training_runs(compose_cfg, tmp_path, monkeypatch, experiment, extra, key):
    """trainer.compile=true traces the loss (dynamo + AOTAutograd: the custom CD gradient
    too) and trains; the aot_eager backend keeps this fast (no C++ code generation)."""
    real_compile = torch.compile
    monkeypatch.setattr(
        torch, "compile", lambda fn, **kw: real_compile(fn, **{**kw, "backend": "aot_eager"})
    )
    eager, compiled = _compile_run(compose_cfg, tmp_path, experiment, *extra)
    assert compiled["status"] == "completed"
    # same data order and initial weights; the compiled graph draws its own noise: only close
    assert abs(compiled[key] - eager[key]) < 0.1 * abs(eager[key])


@needs_mnist
@pytest.mark.slow
def test_compiled_training_with_inductor(compose_cfg, tmp_path):
    """The real backend (C++ code generation on CPU: tens of seconds)."""
    eager, compiled = _compile_run(
        compose_cfg, tmp_path, "vae_mlp", "model.hidden_dim=32", "model.latent_dim=2"
    )
    assert compiled["status"] == "completed"
    assert abs(compiled["test/elbo_loss"] - eager["test/elbo_loss"]) < 0.1 * abs(
        eager["test/elbo_loss"]
    )


@needs_mnist
@pytest.mark.parametrize(
    "experiment, extra, key",
    [
        ("vae_cnn", ("model.latent_dim=2",), "test/recon_mse_sum"),
        (
            "gan_mnist",
            ("model.g_channels=8", "model.d_channels=8", "objective.loss=wgan_gp"),
            "test/d_loss",
        ),
        (
            "score_sde_mnist",
            ("model.net.channels=[8,16,16]", "model.net.groups=4", "sampler.steps=5"),
            "test/dsm_loss",
        ),
        (
            "rbm_cdk",
            ("objective=pcd", "model.hidden_dim=16", "sampler.steps=5"),
            "test/free_energy",
        ),
    ],
)
def test_bf16_autocast_with_channels_last_trains_the_conv_models(
    compose_cfg, tmp_path, experiment, extra, key
):
    """trainer.precision=bf16 runs the forward passes under torch.autocast (here on CPU),
    trainer.channels_last=true stores the conv weights NHWC; weights, optimiser state and
    metrics stay float32, and the run matches a float32 run to bf16 accuracy. The RBM's
    closed-form CD update (PCD: float32 chains in the checkpoint) works under autocast too."""
    common = [f"experiment={experiment}", *SMALL, "logger=none", "trainer.export_name=null", *extra]
    common += [f"~sample_metrics.{k}" for k in compose_cfg(*common).get("sample_metrics") or {}]
    ref = train(compose_cfg(*common), tmp_path / "fp32")
    low = train(
        compose_cfg(*common, "trainer.precision=bf16", "trainer.channels_last=true"),
        tmp_path / "bf16",
    )
    assert low["status"] == "completed" and set(low) == set(ref)
    ckpt = torch.load(tmp_path / "bf16" / "checkpoints" / "last.pt", weights_only=True)
    weights = list(ckpt["model"].values())
    assert all(w.dtype == torch.float32 for w in weights if w.is_floating_point())
    if experiment != "rbm_cdk":  # the conv models
        assert any(
            w.dim() == 4
            and w.is_contiguous(memory_format=torch.channels_last)
            and not w.is_contiguous()
            for w in weights
        )
    else:
        assert ckpt["objective"]["chains"].dtype == torch.float32
    assert abs(low[key] - ref[key]) <= 0.1 * abs(ref[key]) + 0.05


def test_train_step_runs_the_forward_under_autocast_and_the_update_in_float32():
    from dgm_runner.epoch import Averager as _Averager
    from dgm_runner.epoch import train_step
    from dgm_runner.objectives.base import Objective

    seen = []

    class Probe(Objective):
        def loss(self, model, batch):
            out = model(batch.x)
            seen.append((out.dtype, torch.is_autocast_enabled("cpu")))
            loss = out.float().pow(2).mean()
            return loss, {"loss": out.pow(2).mean().detach()}

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    averager = _Averager()
    batch = Batch(torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
    train_step(net, Probe(), {"model": opt}, batch, 0, averager, torch.bfloat16)
    assert seen == [(torch.bfloat16, True)]
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in net.parameters())
    assert averager.sums["loss"].dtype == torch.float32  # bf16 terms are summed in float32
    train_step(net, Probe(), {"model": opt}, batch, 1)
    assert seen[-1] == (torch.float32, False)
