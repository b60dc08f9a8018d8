"""VQ-VAE and its PixelCNN prior (issue 5; seed 003 programming question 1): gradients of
the straight-through estimator, codebook and commitment losses, nearest-code
quantization, perplexity, EMA codebook, masked convolutions, the autoregressive sampler,
and smoke runs of both stages."""

import json
import math

import pytest
import torch

from dgm_runner.build import load_run_model, restore_run
from dgm_runner.loop import train
from dgm_runner.models.pixelcnn import MaskedConv2d, PixelCNNPrior
from dgm_runner.models.vqvae import VQVAE, code_usage
from dgm_runner.objectives.base import Batch
from dgm_runner.objectives.code_prior import CodePriorNLL
from dgm_runner.objectives.vq import VQObjective
from dgm_runner.samplers.autoregressive import AutoregressiveSampler
from dgm_runner.samplers.vq_uniform import UniformCodeSampler
from tests.helpers import SMALL, needs_fashion


def _vqvae(seed: int = 0, **kwargs) -> VQVAE:
    torch.manual_seed(seed)
    args = {"n_codes": 16, "code_dim": 4, "hidden": 8, **kwargs}
    return VQVAE((1, 28, 28), **args)


def _images(n: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def _grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_straight_through_gradients_reach_the_encoder():
    model = _vqvae()
    x = _images()
    logits, _ = model(x)
    (torch.sigmoid(logits) - x).pow(2).sum().backward()  # the reconstruction loss alone
    for name, p in model.encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # the reconstruction gradient bypasses the codebook (z_q = u + sg[z - u])
    assert model.codebook.weight.grad is None or not model.codebook.weight.grad.any()


def test_codebook_loss_moves_only_the_codebook_and_commitment_only_the_encoder():
    model = _vqvae()
    x = _images()
    model.quantize(model.encode(x)).codebook_loss.sum().backward()
    assert model.codebook.weight.grad is not None and model.codebook.weight.grad.abs().sum() > 0
    assert _grad_norm(model.encoder) == 0.0 and _grad_norm(model.decoder) == 0.0

    model.zero_grad(set_to_none=True)
    model.quantize(model.encode(x)).commitment_loss.sum().backward()
    assert model.codebook.weight.grad is None or not model.codebook.weight.grad.any()
    for name, p in model.encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_quantization_picks_the_nearest_code_and_losses_are_the_squared_distance():
    model = _vqvae(n_codes=32, code_dim=5)
    u = torch.randn(4, 5, 7, 7, generator=torch.Generator().manual_seed(2)) * 0.05
    q = model.quantize(u)
    flat = u.permute(0, 2, 3, 1).reshape(-1, 5)
    brute = torch.cdist(flat.double(), model.codebook.weight.double()).argmin(1).reshape(4, 7, 7)
    assert torch.equal(q.indices, brute)
    z = model.codebook.weight[brute].permute(0, 3, 1, 2)
    torch.testing.assert_close(q.z_q, z)  # forward value of the straight-through output
    expected = (u - z).pow(2).flatten(1).sum(1)
    torch.testing.assert_close(q.codebook_loss, expected)
    torch.testing.assert_close(q.commitment_loss, expected)
    assert torch.equal(
        model.encode_indices(_images(2)), model.quantize(model.encode(_images(2))).indices
    )


def test_perplexity_of_a_uniform_histogram_is_the_number_of_codes_used():
    for k_used in (1, 3, 10):
        idx = torch.arange(k_used).repeat_interleave(7)[torch.randperm(7 * k_used)]
        perplexity, used = code_usage(idx, 16)
        assert perplexity.item() == pytest.approx(k_used, rel=1e-5)
        assert used.item() == pytest.approx(k_used / 16)
    perplexity, _ = code_usage(torch.tensor([0, 0, 1, 2]), 16)  # p = (1/2, 1/4, 1/4)
    assert perplexity.item() == pytest.approx(math.exp(1.5 * math.log(2)), rel=1e-5)


def test_vq_objective_combines_the_terms_and_drops_the_codebook_loss_with_ema():
    x = _images()
    batch = Batch(x, torch.zeros(6, dtype=torch.long))
    for ema in (False, True):
        model = _vqvae(ema=ema).eval()  # eval: no EMA update, the terms below see one codebook
        objective = VQObjective(beta=0.4)
        terms = objective.terms(model, batch)
        expected = terms["recon"] + 0.4 * terms["commitment"] + (0 if ema else terms["codebook"])
        torch.testing.assert_close(terms["loss"], expected)
        torch.testing.assert_close(terms["recon_mse"] * 784, terms["recon_mse_sum"])
        out = objective.evaluate(model, batch)
        assert set(out) >= {"recon_mse", "perplexity", "codes_used"}
        assert all(v.shape == (6,) for v in out.values())
    with pytest.raises(ValueError):
        VQObjective(beta=-1.0)


def test_ema_codebook_has_no_gradient_and_converges_to_the_cluster_means():
    model = _vqvae(ema=True, ema_decay=0.9, restart_after=0)
    x = _images()
    before = model.codebook.weight.clone()
    with torch.no_grad():
        model.train()
        model(x)  # no_grad: evaluation, no update
        model.eval()
    assert torch.equal(model.codebook.weight, before)
    model.train()
    loss, _ = VQObjective().loss(model, Batch(x, torch.zeros(6, dtype=torch.long)))
    loss.backward()
    assert model.codebook.weight.grad is None and not torch.equal(model.codebook.weight, before)
    # Repeated updates on fixed encoder outputs: e_k -> mean of the vectors assigned to k.
    u = torch.randn(8, 4, 7, 7, generator=torch.Generator().manual_seed(3))
    model.codebook.weight.data.copy_(u.permute(0, 2, 3, 1).reshape(-1, 4)[:16])
    model.ema_sum.copy_(model.codebook.weight)
    for _ in range(400):
        idx = model.quantize(u).indices
    flat, idx = u.permute(0, 2, 3, 1).reshape(-1, 4), idx.flatten()
    for k in idx.unique():
        torch.testing.assert_close(
            model.codebook.weight[k], flat[idx == k].mean(0), atol=1e-3, rtol=0
        )


def test_dead_codes_are_restarted_from_encoder_outputs():
    model = _vqvae(restart_after=3).train()
    u = (
        torch.randn(2, 4, 7, 7, generator=torch.Generator().manual_seed(4)) + 5.0
    )  # far from every code
    used = set(model.nearest(u).unique().tolist())
    assert len(used) < 16
    for step in range(3):
        before = model.codebook.weight.clone()
        model.quantize(u)  # training mode, gradients enabled: updates the restart counters
        if step < 2:  # not yet "a while": the codebook is left alone
            assert torch.equal(model.codebook.weight, before)
    flat = u.permute(0, 2, 3, 1).reshape(-1, 4)
    restarted = {k for k in range(16) if (flat == model.codebook.weight[k]).all(1).any()}
    assert restarted == set(range(16)) - used  # every unused code now sits on an encoder output
    assert code_usage(model.quantize(u).indices, 16)[1] > len(used) / 16


def test_constructor_values_are_checked():
    with pytest.raises(ValueError, match="divisible by 4"):
        VQVAE((1, 30, 30))
    with pytest.raises(ValueError):
        VQVAE((1, 28, 28), ema_decay=1.0)
    with pytest.raises(ValueError, match="odd"):
        MaskedConv2d(2, 2, 4, "A")
    with pytest.raises(ValueError, match="must be a VQVAE"):
        PixelCNNPrior((1, 28, 28), vqvae=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="vqvae.run_dir"):
        load_run_model(None)
    with pytest.raises(ValueError):
        AutoregressiveSampler(temperature=0.0)


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_masked_convolution_sees_only_earlier_positions(mask_type):
    torch.manual_seed(0)
    conv = MaskedConv2d(3, 4, 5, mask_type)
    with torch.no_grad():
        conv.weight.normal_()
    h = w = 6
    for r in range(h):
        for c in range(w):
            x = torch.randn(1, 3, h, w, requires_grad=True)
            conv(x)[0, :, r, c].sum().backward()
            dep = x.grad[0].abs().sum(0)  # (h, w): does output (r, c) depend on input there?
            i = r * w + c
            order = torch.arange(h * w).reshape(h, w)
            later = order > i if mask_type == "B" else order >= i
            assert not dep[later].any(), (r, c)
            if mask_type == "B":
                assert dep[r, c] > 0
            if c > 0:
                assert dep[r, c - 1] > 0  # the left neighbour is seen
            if r > 0:
                assert dep[r - 1, c] > 0  # so is the one above


def _prior(monkeypatch, ema: bool = False, **kwargs) -> PixelCNNPrior:
    """A PixelCNNPrior around an untrained in-memory VQ-VAE (no stage-1 run needed)."""
    vq = _vqvae(ema=ema)
    torch.manual_seed(1)
    return PixelCNNPrior((1, 28, 28), vqvae=vq, channels=16, n_layers=2, **kwargs)


@pytest.mark.parametrize("gated", [False, True])
def test_prior_logits_at_a_position_do_not_depend_on_later_codes(monkeypatch, gated):
    prior = _prior(monkeypatch, gated=gated).eval()
    codes = torch.randint(0, 16, (1, 7, 7), generator=torch.Generator().manual_seed(5))
    base = prior(codes)
    for j in (0, 10, 24, 48):
        changed = codes.clone()
        changed.view(-1)[j] = (changed.view(-1)[j] + 1) % 16
        diff = (prior(changed) - base).abs().sum(1).flatten()  # (49,) per position
        assert not diff[: j + 1].any(), j  # positions <= j see only codes < j... or none
        if j < 48:
            assert diff[j + 1 :].any(), j  # the change propagates to later positions


def test_prior_keeps_the_vqvae_frozen(monkeypatch):
    prior = _prior(monkeypatch, ema=True)
    frozen = {k: v.clone() for k, v in prior.vqvae.state_dict().items()}
    prior.train()
    assert not prior.vqvae.training
    assert not any(p.requires_grad for p in prior.vqvae.parameters())
    (params,) = CodePriorNLL().param_groups(prior).values()
    assert {id(p) for p in params} == {
        id(p) for n, p in prior.named_parameters() if not n.startswith("vqvae.")
    }
    opt = torch.optim.Adam(
        prior.parameters(), lr=1e-2
    )  # all of them: requires_grad=False must hold
    batch = Batch(_images(8), torch.zeros(8, dtype=torch.long))
    loss, _ = CodePriorNLL().loss(prior, batch)
    loss.backward()
    opt.step()
    for k, v in prior.vqvae.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    assert all(k.startswith("vqvae.") for k in prior.state_dict() if "codebook" in k)


def test_prior_bits_per_code_is_the_code_nll_in_bits(monkeypatch):
    prior = _prior(monkeypatch).eval()
    with torch.no_grad():  # a prior with all-zero logits is uniform: log2 K bits per code
        prior.head[-1].weight.zero_()
        prior.head[-1].bias.zero_()
    out = CodePriorNLL().evaluate(prior, Batch(_images(3), torch.zeros(3, dtype=torch.long)))
    torch.testing.assert_close(out["prior_bits_per_code"], torch.full((3,), math.log2(16)))


def test_autoregressive_sampler_follows_the_prior(monkeypatch):
    """(Shape, range and determinism given the generator: test_contracts.py.)"""
    prior = _prior(monkeypatch).eval()
    sampler = AutoregressiveSampler()
    a = sampler.sample(prior, 5, torch.Generator().manual_seed(7))
    codes = sampler.sample_codes(prior, 5, torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, prior.decode_codes(codes))  # the images decode the sampled codes
    with torch.no_grad():  # a prior that puts (almost) all mass on code 11
        prior.head[-1].weight.zero_()
        prior.head[-1].bias.copy_(torch.nn.functional.one_hot(torch.tensor(11), 16) * 50.0)
    assert (sampler.sample_codes(prior, 3, torch.Generator().manual_seed(0)) == 11).all()
    with pytest.raises(TypeError):
        sampler.check_model(_vqvae())
    with pytest.raises(TypeError):
        UniformCodeSampler().check_model(prior)


def test_two_stage_script_commands(tmp_path):
    from dgm_runner.cli import vqvae as script  # the dgm-vqvae console script

    s1, s2 = script.stage_commands(
        tmp_path / "r", ["trainer.epochs=2"], ["model.ema=true"], ["model.gated=true"]
    )
    root = (tmp_path / "r").resolve()
    assert s1[-4:] == [
        "experiment=vqvae_fashion",
        f"hydra.run.dir={root / 'stage1'}",
        "trainer.epochs=2",
        "model.ema=true",
    ]
    assert s2[-5:] == [
        "experiment=vqvae_fashion_prior",
        f"model.vqvae.run_dir={root / 'stage1'}",
        f"hydra.run.dir={root / 'stage2'}",
        "trainer.epochs=2",
        "model.gated=true",
    ]


@needs_fashion
def test_both_stages_train_and_the_prior_loads_stage_one(compose_cfg, tmp_path):
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    small = [*SMALL, "logger=none"]
    final1 = train(
        compose_cfg(
            "experiment=vqvae_fashion", *small, "model.n_codes=32", "model.restart_after=2"
        ),
        stage1,
    )
    assert final1["status"] == "completed"
    assert 0 < final1["test/recon_mse"] < 1 and 1 <= final1["test/perplexity"] <= 32
    assert 0 < final1["test/codes_used"] <= 1
    assert final1["test/recon_mse_sum"] == pytest.approx(784 * final1["test/recon_mse"], rel=1e-4)
    for name in (
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "metrics.jsonl",
        "samples/final.png",
        "figures/reconstructions.png",
    ):
        assert (stage1 / name).is_file(), name
    assert json.loads((stage1 / "metrics.json").read_text())["status"] == "completed"

    final2 = train(
        compose_cfg("experiment=vqvae_fashion_prior", *small, f"model.vqvae.run_dir={stage1}"),
        stage2,
    )
    assert final2["status"] == "completed" and 0 < final2[
        "test/prior_bits_per_code"
    ] < 2 * math.log2(32)
    assert (stage2 / "samples" / "final.png").is_file()
    # the prior's checkpoint carries the unchanged stage-1 weights and restores on its own
    _, comps1, _ = restore_run(stage1, device="cpu")
    _, comps2, _ = restore_run(stage2, device="cpu")
    for k, v in comps1.model.state_dict().items():
        assert torch.equal(comps2.model.vqvae.state_dict()[k], v), k
    x = comps2.data.test_x[:4]
    assert torch.equal(comps2.model.codes_of(x), comps1.model.encode_indices(x))
