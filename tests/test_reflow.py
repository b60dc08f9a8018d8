"""Reflow (issue 30, item 3; Liu, Gong & Liu 2023, Sec. 2.2-2.3): the ODE map
``ProbabilityFlowODE.integrate``, the pairs file of ``dgm-reflow-pairs``, training on the
pairs (``dataset=reflow_pairs``, ``objective.coupling=pairs``), the warm start
``trainer.init_from`` and the straightness metric, checked against closed forms:

* a deterministic linear coupling ``x0 = A eps`` (A symmetric positive definite) has the
  straight velocity field ``v(x, t) = (I - A) M(t)^-1 x``, ``M(t) = (1 - t) A + t I``, along
  which one Euler step from ``eps`` lands on ``A eps`` exactly, the straightness is 0 and
  the pairs' flow-matching loss is 0;
* Gaussian data ``N(mu, s^2 I)`` under independent coupling flows along
  ``x_t = (1 - t) mu + sqrt(V(t)) z``, ``V = (1 - t)^2 s^2 + t^2``, so its straightness is
  ``d (int_0^1 ((sqrt V)')^2 dt - (1 - s)^2)``.
"""

from __future__ import annotations

import copy
import errno
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from scipy.integrate import quad
from torch import nn

from dgm_runner.build import apply_init_weights, build_model, read_init_weights
from dgm_runner.cli import reflow_pairs as cli
from dgm_runner.config import ConfigError, check_mandatory, validate
from dgm_runner.data.base import DataError, DataSplits
from dgm_runner.data.reflow import (
    FORMAT,
    check_reflow_pairs,
    load_pairs,
    load_reflow_pairs,
    real_dataset_config,
    save_pairs,
)
from dgm_runner.data.toy2d import load_toy2d
from dgm_runner.io.atomic import WriteError, is_temp_file
from dgm_runner.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dgm_runner.loop import train
from dgm_runner.metrics.straightness import straightness, straightness_values
from dgm_runner.models.oracle import GaussianOracle
from dgm_runner.models.score import DiffusionModel, ScoreUNet
from dgm_runner.objectives.base import Batch
from dgm_runner.objectives.flow_matching import FlowMatching
from dgm_runner.samplers.diffusion import ProbabilityFlowODE, model_device, ode_time_grid
from dgm_runner.sdes import LinearPath
from dgm_runner.testing import compose_train
from tests.helpers import SMALL, needs_mnist, one_line_error
from tests.resume_check import assert_resume_is_bit_exact
from tests.test_flow_matching import SignallingFlowMatching

TOY2D = {
    "_target_": "dgm_runner.data.toy2d.load_toy2d",
    "name": "two_moons",
    "n_train": 50,
    "n_test": 40,
    "noise": 0.05,
    "seed": 3,
    "subset": None,
    "test_subset": None,
}


class VelocityMLP(DiffusionModel):
    """A small velocity field on ``(B, d)`` points under the linear path (rectified flow)."""

    parameterization = "velocity"

    def __init__(self, d: int = 2, hidden: int = 64) -> None:
        super().__init__()
        self.sde, self.image_shape = LinearPath(), (d,)
        self.net = nn.Sequential(
            nn.Linear(d + 1, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, d),
        )

    def predict_velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, t[:, None].to(x.dtype)], 1))


class LinearCouplingFlow(DiffusionModel):
    """The exact rectified flow of the deterministic coupling ``x0 = A eps``: on the linear
    path ``x_t = M(t) eps`` with ``M(t) = (1 - t) A + t I`` (invertible for A symmetric
    positive definite), and the velocity ``eps - x0 = (I - A) eps`` is constant along each
    line, so ``v(x, t) = (I - A) M(t)^-1 x``."""

    parameterization = "velocity"

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.sde, self.image_shape = LinearPath(), (a.shape[0],)
        self.register_buffer("a", a)

    def predict_velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(self.a.shape[0], dtype=x.dtype)
        m = (1 - t)[:, None, None] * self.a + t[:, None, None] * eye  # (B, d, d)
        eps = torch.linalg.solve(m, x)
        return eps @ (eye - self.a).T


A = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)


def _meta(**extra) -> dict:
    return {
        "run_dir": "/nowhere/run",
        "checkpoint": "/nowhere/run/checkpoints/last.pt",
        "sampler": "ode euler 1 steps (uniform grid)",
        "nfe": 1,
        "seed": 0,
        "n": 0,
        "dataset": dict(TOY2D),
        "centered": False,
        **extra,
    }


# ------------------------------------------------------------------------ (1) integrate()


def _sample_as_before(sampler: ProbabilityFlowODE, model, n: int, generator) -> torch.Tensor:
    """ProbabilityFlowODE.sample as it was before integrate() existed (commit f01d086)."""
    device = model_device(model)
    sampler.nfe = 0
    grid = sampler.times(model, device)
    x = model.sde.prior_sample((n, *model.image_shape), generator, device)
    for i in range(sampler.steps):
        t, s = grid[i], grid[i + 1]
        h = s - t
        v = sampler._v(model, x, t)
        if sampler.method == "euler":
            x = x + h * v
        elif sampler.method == "midpoint":
            x = x + h * sampler._v(model, x + 0.5 * h * v, t + 0.5 * h)
        else:
            x_euler = x + h * v
            x = x_euler if s == 0 else x + 0.5 * h * (v + sampler._v(model, x_euler, s))
    return model.decode(x)


@pytest.mark.parametrize(
    "method, grid, t_min",
    [("euler", "uniform", 0.0), ("midpoint", "logit", 0.0), ("heun", "karras", 0.0)]
    + [("heun", "uniform", 0.05)],
)
def test_integrate_is_the_map_sample_applies(method, grid, t_min):
    """sample() is decode(integrate(prior draw)) and equals today's loop (an inline copy)
    bit for bit, NFE included, for a real U-Net (velocity) on images."""
    torch.manual_seed(0)
    model = ScoreUNet((1, 8, 8), LinearPath(), preconditioning="velocity", centered=True).eval()
    sampler = ProbabilityFlowODE(method=method, steps=3, grid=grid, t_min=t_min)
    new = sampler.sample(model, 5, torch.Generator().manual_seed(7))
    nfe = sampler.nfe
    old = _sample_as_before(ProbabilityFlowODE(method, 3, grid, t_min=t_min), model, 5,
                            torch.Generator().manual_seed(7))  # fmt: skip
    assert torch.equal(new, old) and nfe == sampler.expected_nfe(t_min)
    z = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    end = sampler.integrate(model, z)
    assert torch.equal(model.decode(end), new) and sampler.nfe == nfe
    assert end.min() < -0.0 or end.max() > 1.0  # model space: not decoded (centred model)


# -------------------------------------------------------------- (2) exactness: straight pairs


@pytest.mark.parametrize("method, steps", [("euler", 1), ("euler", 4), ("midpoint", 2)])
def test_the_straight_flow_of_a_linear_coupling_lands_on_its_pairs(method, steps):
    """x0 = A eps: one Euler step (or any) from eps gives A eps exactly (float64 rounding),
    the straightness of the flow is 0 and the pairs' CFM loss at this velocity is 0."""
    model = LinearCouplingFlow(A)
    eps = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x0 = eps @ A.T
    out = ProbabilityFlowODE(method=method, steps=steps).integrate(model, eps)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-12)
    grid = ode_time_grid(LinearPath(), 16, "uniform", 0.0).double()
    assert float(straightness_values(model, grid, eps).max()) < 1e-20
    loss = FlowMatching(coupling="pairs").paired_per_example(model, x0, eps)
    assert float(loss.max()) < 1e-20


def test_straightness_of_gaussian_data_is_the_closed_form():
    """Independent coupling of N(mu, s^2 I) data: the Euler estimate on a fine grid is the
    closed form d (int ((sqrt V)')^2 dt - (1 - s)^2) (here ~0.17), within 1%."""
    s, mu = 0.5, torch.tensor([1.0, -0.5], dtype=torch.float64)
    oracle = GaussianOracle(LinearPath(), mu, s, parameterization="velocity").double()

    def speed2(t: float) -> float:  # ((sqrt V)')^2, V = (1 - t)^2 s^2 + t^2
        v, dv = (1 - t) ** 2 * s**2 + t**2, -2 * (1 - t) * s**2 + 2 * t
        return (dv / (2 * math.sqrt(v))) ** 2

    exact = mu.numel() * (quad(speed2, 0, 1)[0] - (1 - s) ** 2)
    grid = ode_time_grid(LinearPath(), 400, "uniform", 0.0).double()
    x_T = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    values = straightness_values(oracle, grid, x_T)
    # every trajectory is z times the same curve: the per-trajectory value is S |z|^2 / d
    assert abs(float(values.mean()) - exact) < 5 * float(values.std()) / math.sqrt(2000) + 1e-3
    per_z = values / x_T.pow(2).sum(1) * mu.numel()
    torch.testing.assert_close(per_z, torch.full_like(per_z, exact), rtol=1e-2, atol=0)
    mean, se = straightness(oracle, grid, 500, torch.Generator().manual_seed(4), batch_size=200)
    assert abs(mean - exact) < 5 * se and se > 0
    with pytest.raises(ValueError, match="decreasing"):
        straightness_values(oracle, grid.flip(0), x_T)


# ------------------------------------------------------------------- (3) coupling = pairs


def test_pairs_coupling_uses_the_batch_noise_exactly():
    """loss = mean ||v(x_t, t) - (noise - x0)||^2 with x_t = (1 - t) x0 + t noise, t the
    one draw of the loop's RNG (uniform), the noise the batch's own: no noise is drawn."""
    torch.manual_seed(0)
    model = VelocityMLP()
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(32, 2, generator=torch.Generator().manual_seed(2))
    objective = FlowMatching(coupling="pairs")
    torch.manual_seed(123)
    loss, terms = objective.loss(model, Batch(x, torch.zeros(32, dtype=torch.long), noise))
    after = torch.get_rng_state()
    torch.manual_seed(123)
    t = torch.rand(32)
    assert torch.equal(torch.get_rng_state(), after)  # t only
    x_t = (1 - t)[:, None] * x + t[:, None] * noise
    expected = (model.velocity(x_t, t) - (noise - x)).pow(2).sum(1).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    assert terms["fm_loss"] == loss.detach() and objective.data_parallel
    # the test loss draws independent noise (real test images have no pairs)
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    test = objective.evaluate(model, Batch(x, torch.zeros(32, dtype=torch.long)), gen_a)
    independent = FlowMatching().evaluate(model, Batch(x, torch.zeros(32)), gen_b)
    assert torch.equal(test["fm_loss"], independent["fm_loss"])


def test_pairs_coupling_without_pairs_is_a_one_line_config_error():
    model, objective = VelocityMLP(), FlowMatching(coupling="pairs")
    with pytest.raises(ConfigError, match="dataset=reflow_pairs") as info:
        objective.loss(model, Batch(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)))
    assert "\n" not in str(info.value)
    data = load_toy2d("two_moons", 20, 10)
    with pytest.raises(ConfigError, match="dataset=reflow_pairs") as info:
        objective.check_data(model, data)
    assert "toy2d/two_moons" in str(info.value) and "\n" not in str(info.value)
    FlowMatching().check_data(model, data)  # the other couplings need no pairs


# ------------------------------------------------------------- (4) the pairs file and data


def test_pairs_file_round_trip_and_the_data_it_makes(tmp_path):
    """save -> load gives the tensors and meta back; the dataset trains on the pairs
    (model.encode(train_x) = x0 to float rounding, nothing clamped, noise row by row) and
    tests on the real test split of the recorded dataset."""
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(30, 2, generator=gen)
    x0 = 1.5 * torch.randn(30, 2, generator=gen)
    x0[0] = torch.tensor([3.0, -2.5])  # outside [-1, 1]: kept
    for centered in (False, True):
        path = tmp_path / f"pairs_{centered}.pt"
        save_pairs(path, noise, x0, _meta(centered=centered, n=30))
        obj = load_pairs(path)
        assert obj["format"] == FORMAT and obj["meta"] == _meta(centered=centered, n=30)
        assert torch.equal(obj["noise"], noise) and torch.equal(obj["x0"], x0)
        data = load_reflow_pairs(str(path), subset=20, test_subset=15)
        assert isinstance(data, DataSplits) and torch.equal(data.train_noise, noise[:20])
        encoded = 2.0 * data.train_x - 1.0 if centered else data.train_x
        assert float((encoded - x0[:20]).abs().max()) <= 1e-6 * float(x0.abs().max())
        if not centered:
            assert torch.equal(data.train_x, x0[:20])
        real = load_toy2d(**{k: v for k, v in TOY2D.items() if k != "_target_"})
        assert torch.equal(data.test_x, real.test_x[:15]) and data.name == real.name
        assert data.train_transform is None and not bool(data.train_y.any())
    # a pairs file made from a reflow run names the real data behind it
    nested = {"_target_": "dgm_runner.data.reflow.load_reflow_pairs", "pairs": str(path)}
    assert real_dataset_config(nested) == TOY2D
    with pytest.raises(DataError, match="larger than the 30 pairs"):
        load_reflow_pairs(str(path), subset=31)


def test_the_pairs_model_space_must_be_the_model_s(tmp_path):
    path = tmp_path / "pairs.pt"
    save_pairs(path, torch.zeros(3, 2), torch.zeros(3, 2), _meta(centered=True))
    check_reflow_pairs({"centered": True}, str(path))
    with pytest.raises(ValueError, match="model.centered=true"):
        check_reflow_pairs({"centered": False}, str(path))
    check_reflow_pairs({}, str(tmp_path / "missing.pt"))  # left to the loader
    check_reflow_pairs({}, "???")


@pytest.mark.parametrize("kind", ["missing", "directory", "text", "foreign", "truncated"])
def test_a_missing_or_corrupt_pairs_file_is_one_line_naming_it(tmp_path, kind):
    path = tmp_path / "pairs.pt"
    if kind == "directory":
        path.mkdir()
    elif kind == "text":
        path.write_text("not a pairs file\n")
    elif kind == "foreign":
        torch.save({"noise": torch.zeros(2, 2)}, path)
    elif kind == "truncated":
        save_pairs(path, torch.zeros(100, 2), torch.zeros(100, 2), _meta())
        path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(DataError) as info:
        load_reflow_pairs(str(path))
    message = str(info.value)
    assert "\n" not in message and f"dataset.pairs={path}" in message


def _fake_run(tmp_path: Path, monkeypatch, model, fail_at: int | None = None) -> Path:
    """A run directory whose restore gives ``model`` with an ode sampler (euler, 2 steps),
    without a real training run: ``restore_run`` of the pairs generator is replaced."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"weights")
    sampler = ProbabilityFlowODE("euler", 2)
    if fail_at is not None:
        calls = []
        integrate = sampler.integrate

        def failing(model, x_T):
            calls.append(1)
            if len(calls) == fail_at:
                raise KeyboardInterrupt
            return integrate(model, x_T)

        sampler.integrate = failing
    cfg = OmegaConf.create(
        {"dataset": TOY2D, "sampler": {"_target_": "x.Ode", "method": "euler", "steps": 2}}
    )
    comps = type("Comps", (), {"model": model, "sampler": sampler})()

    def restore(run_dir, checkpoint, device, overrides):
        assert overrides["dataset.test_subset"] == 1
        return cfg, comps, {"ema": None, "epoch": 3}

    monkeypatch.setattr(cli, "restore_run", restore)
    return run


def test_the_generator_draws_seeded_noise_and_writes_its_endpoints(tmp_path, monkeypatch):
    """The file holds n seeded prior draws (one generator, batch after batch) and their
    ODE endpoints, with the meta that rebuilds the test split."""
    torch.manual_seed(0)
    model = VelocityMLP()
    run = _fake_run(tmp_path, monkeypatch, model)
    meta = cli.reflow_pairs(run, tmp_path / "a.pt", n=10, seed=4, batch_size=4)
    cli.reflow_pairs(run, tmp_path / "b.pt", n=10, seed=4, batch_size=10)
    a, b = load_pairs(tmp_path / "a.pt"), load_pairs(tmp_path / "b.pt")
    gen = torch.Generator().manual_seed(4)
    z = torch.cat([torch.randn(k, 2, generator=gen) for k in (4, 4, 2)])
    assert torch.equal(a["noise"], z)
    assert torch.equal(b["noise"], torch.randn(10, 2, generator=torch.Generator().manual_seed(4)))
    expected = ProbabilityFlowODE("euler", 2).integrate(model, z)
    torch.testing.assert_close(a["x0"], expected, rtol=0, atol=1e-6)
    assert (meta["n"], meta["seed"], meta["nfe"], meta["batch_size"]) == (10, 4, 2, 4)
    assert meta["dataset"] == TOY2D and meta["centered"] is False and meta["weights"] == "model"
    assert meta["run_dir"] == str(run.resolve()) and len(meta["checkpoint_sha256"]) == 64
    assert {"commit", "version"} <= set(meta["code"]) and meta["epoch"] == 3
    assert torch.equal(load_reflow_pairs(str(tmp_path / "a.pt")).train_noise, z)


def test_a_failure_mid_way_leaves_no_file(tmp_path, monkeypatch):
    """Stopped in the second batch, or failing inside the write (a full disk): no pairs
    file, no temp file, and an existing file untouched."""
    run = _fake_run(tmp_path, monkeypatch, VelocityMLP(), fail_at=2)
    out = tmp_path / "out" / "pairs.pt"
    out.parent.mkdir()
    with pytest.raises(KeyboardInterrupt):
        cli.reflow_pairs(run, out, n=10, batch_size=4)
    assert list(out.parent.iterdir()) == []
    run = _fake_run(tmp_path / "again", monkeypatch, VelocityMLP())
    out.write_bytes(b"old pairs")
    real_save = torch.save

    def save_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("dgm_runner.data.reflow.torch.save", save_then_fail)
    with pytest.raises(WriteError, match="cannot write"):
        cli.reflow_pairs(run, out, n=10, batch_size=4, overwrite=True)
    assert out.read_bytes() == b"old pairs"
    assert not [p for p in out.parent.iterdir() if is_temp_file(p)]


@pytest.mark.parametrize(
    "arg, says",
    [
        (None, "out= is required"),
        ("out=dir", "is a directory"),
        ("out=exists", "overwrite=true"),
        ("n=0", "n=0"),
        ("batch_size=0", "batch_size=0"),
    ],
)
def test_bad_n_or_out_fails_before_any_work_in_one_line(tmp_path, monkeypatch, capsys, arg, says):
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "dir").mkdir()
    (tmp_path / "exists").write_bytes(b"x")
    monkeypatch.setattr(cli, "restore_run", lambda *a, **k: pytest.fail("work started"))
    argv = ["dgm-reflow-pairs", str(run)]
    if arg is not None and arg.startswith("out="):
        argv.append(f"out={tmp_path / arg[4:]}")
    elif arg is not None:
        argv += [arg, f"out={tmp_path / 'new.pt'}"]
    one_line_error(cli.main, argv, "ConfigError", says, monkeypatch, capsys)
    assert not (tmp_path / "new.pt").exists()


# ------------------------------------------------------------------ (5) reflow straightens


def _train(model, objective, steps: int, gen, pairs=None, bs: int = 256):
    """``steps`` Adam updates of ``objective`` on two Gaussian blobs at (+-2, 0) (std 0.2),
    or on ``pairs = (noise, x0)``."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    centres = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
    for _ in range(steps):
        if pairs is None:
            x = centres[torch.randint(0, 2, (bs,), generator=gen)]
            batch = Batch(x + 0.2 * torch.randn(bs, 2, generator=gen), torch.zeros(bs))
        else:
            idx = torch.randint(0, pairs[0].shape[0], (bs,), generator=gen)
            batch = Batch(pairs[1][idx], torch.zeros(bs), pairs[0][idx])
        loss, _ = objective.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_reflow_straightens_a_toy_flow():
    """Two Gaussian blobs: the 1-rectified flow (independent coupling, 600 updates) bends
    (straightness ~1.0-1.1 over seeds 0-2); the flow trained on its own (noise, endpoint)
    pairs from its weights (600 updates) is ~50 times straighter (~0.02-0.03), and one
    Euler step of it lands near its 50-step endpoint where the first flow's does not."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    first = _train(VelocityMLP(), FlowMatching(), 600, gen)
    z = torch.randn(4000, 2, generator=gen)
    x0 = ProbabilityFlowODE("euler", 50).integrate(first, z)
    second = _train(copy.deepcopy(first), FlowMatching(coupling="pairs"), 600, gen, (z, x0))
    grid = ode_time_grid(LinearPath(), 50, "uniform", 0.0)
    s1, se1 = straightness(first, grid, 2000, torch.Generator().manual_seed(9))
    s2, se2 = straightness(second, grid, 2000, torch.Generator().manual_seed(9))
    assert s1 > 0.5 and s2 < 0.2 * s1 and s2 + 5 * se2 < s1 - 5 * se1, (s1, s2)
    probe = torch.randn(1000, 2, generator=torch.Generator().manual_seed(7))

    def one_step_error(model) -> float:
        one = ProbabilityFlowODE("euler", 1).integrate(model, probe)
        fine = ProbabilityFlowODE("euler", 50).integrate(model, probe)
        return float((one - fine).pow(2).sum(1).mean())

    assert one_step_error(second) < 0.2 * one_step_error(first)


# ------------------------------------------------------------------- (6) trainer.init_from


def _unet_cfg(*extra: str):
    return compose_train(["experiment=fm_mnist_cpu", *TINY_NET, *extra])


TINY_NET = ["model.net.channels=[8,16,16]", "model.net.groups=4", "model.net.emb_dim=16"]


def _checkpoint(path: Path, cfg, ema: bool = True, seed: int = 0) -> dict:
    """A run checkpoint of ``cfg``'s model (random weights; an EMA that differs from them)."""
    torch.manual_seed(seed)
    model = build_model(cfg, (1, 28, 28), 10)
    payload = {"model": model.state_dict(), "config": {}, "epoch": 2, "step": 8, "ema": None}
    if ema:
        averaged = torch.optim.swa_utils.AveragedModel(model)
        with torch.no_grad():
            for p in averaged.module.parameters():
                p.add_(0.5)
        payload["ema"] = averaged.state_dict()
    save_checkpoint(path, payload)
    return payload


def test_init_from_loads_the_ema_weights_and_refuses_another_model(tmp_path):
    cfg = _unet_cfg()
    run = tmp_path / "run"
    saved = _checkpoint(run / "checkpoints" / "last.pt", cfg)
    torch.manual_seed(1)
    model = build_model(cfg, (1, 28, 28), 10)
    for spec in (run, run / "checkpoints" / "last.pt"):  # a run directory, or its file
        state, info = read_init_weights(str(spec))
        apply_init_weights(model, state, info)
        ema = {k[len("module.") :]: v for k, v in saved["ema"].items() if k.startswith("module.")}
        assert model.state_dict().keys() == ema.keys()
        assert all(torch.equal(model.state_dict()[k], ema[k]) for k in ema)
        assert info["weights"] == "ema" and (info["epoch"], info["step"]) == (2, 8)
        assert info["path"] == str((run / "checkpoints" / "last.pt").resolve())
    plain = _checkpoint(tmp_path / "plain.pt", cfg, ema=False, seed=3)
    apply_init_weights(model, *read_init_weights(str(tmp_path / "plain.pt")))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in plain["model"].items())
    wider = build_model(_unet_cfg("model.net.channels=[8,16,32]"), (1, 28, 28), 10)
    with pytest.raises(CheckpointError, match="do not fit this run's model") as info:
        apply_init_weights(wider, *read_init_weights(str(run)))
    assert "\n" not in str(info.value) and "trainer.init_from=" in str(info.value)
    for bad, says in ((tmp_path / "nothing", "does not exist"), (tmp_path, "holds no run")):
        with pytest.raises(CheckpointError, match=says) as info:
            read_init_weights(str(bad))
        assert "\n" not in str(info.value) and f"trainer.init_from={bad}" in str(info.value)


# ------------------------------------------------------------- (7) the runs, on real MNIST


def _pairs_for_mnist(path: Path, n: int, cfg) -> None:
    """``n`` random pairs in [-1, 1]-ish model space, recorded as made from MNIST; each
    noise is minus its endpoint (:class:`RecordingFlowMatching` checks the pairing)."""
    gen = torch.Generator().manual_seed(0)
    x0 = (torch.rand(n, 1, 28, 28, generator=gen) * 2 - 1) * 1.1
    noise = -x0
    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    save_pairs(path, noise, x0, _meta(dataset=dataset, centered=True, n=n))


class RecordingFlowMatching(SignallingFlowMatching):
    """``objective=flow_matching`` (with the stop signal of the resume test) that checks each
    training batch of :func:`_pairs_for_mnist`'s pairs: the loop gathered every row's own
    noise (``noise = -x0``, ``x0 = model.encode(x)``), whatever the permutation."""

    batches = 0

    def loss(self, model, batch):
        assert batch.noise is not None and batch.noise.shape == batch.x.shape
        torch.testing.assert_close(batch.noise, -model.encode(batch.x), rtol=0, atol=1e-6)
        RecordingFlowMatching.batches += 1
        return super().loss(model, batch)


REFLOW_RUN = [
    "experiment=fm_mnist_reflow_cpu",
    *SMALL,
    *TINY_NET,
    "logger=none",
    "~sample_metrics.fid",
    "~sample_metrics.bpd",
    "trainer.num_threads=1",
]


def test_the_reflow_experiment_needs_its_pairs(compose_cfg):
    cfg = compose_cfg("experiment=fm_mnist_reflow_cpu")
    validate(cfg)  # composes and validates as shipped
    assert cfg.objective.coupling == "pairs" and cfg.dataset._target_.endswith("load_reflow_pairs")
    assert (cfg.sampler.method, cfg.sampler.steps) == ("euler", 1)
    with pytest.raises(ConfigError, match="dataset.pairs is required") as info:
        check_mandatory(cfg)
    assert "\n" not in str(info.value)


@needs_mnist
def test_a_missing_pairs_file_or_init_run_fails_before_training(tmp_path):
    cfg = compose_train([*REFLOW_RUN, f"dataset.pairs={tmp_path / 'none.pt'}"])
    with pytest.raises(DataError, match="none.pt does not exist"):
        train(cfg, tmp_path / "a")
    _pairs_for_mnist(tmp_path / "pairs.pt", 64, _unet_cfg())
    cfg = compose_train(
        [*REFLOW_RUN, f"dataset.pairs={tmp_path / 'pairs.pt'}", f"trainer.init_from={tmp_path}"]
    )
    with pytest.raises(CheckpointError, match="holds no run"):
        train(cfg, tmp_path / "b")
    assert [p.name for p in (tmp_path / "b").iterdir()] == [".lock"]  # nothing written
    with pytest.raises(ConfigError, match="dataset=reflow_pairs"):
        train(_unet_cfg(*SMALL, "logger=none", "objective.coupling=pairs"), tmp_path / "c")


@needs_mnist
def test_reflow_recipe_end_to_end(tmp_path, monkeypatch, capsys):
    """dgm-train fm_mnist_cpu -> dgm-reflow-pairs -> dgm-train fm_mnist_reflow_cpu from its
    weights, at smoke size: the pairs are the first run's ODE map, the second run starts from
    its EMA weights (recorded in metrics.json) and tests on the real MNIST test split."""
    first = tmp_path / "first"
    train(_unet_cfg(*SMALL, "logger=none", "~sample_metrics.fid", "~sample_metrics.bpd"), first)
    out = tmp_path / "pairs.pt"
    monkeypatch.setattr(
        "sys.argv",
        ["dgm-reflow-pairs", str(first), "n=48", f"out={out}", "batch_size=32",
         "sampler.method=euler", "sampler.steps=3", "device=cpu"],
    )  # fmt: skip
    cli.main()
    assert f"wrote {out} (48 pairs, ode euler 3 steps" in capsys.readouterr().out
    pairs = load_pairs(out)
    assert pairs["meta"]["nfe"] == 3 and pairs["meta"]["weights"] == "ema"
    assert pairs["meta"]["dataset"]["_target_"].endswith("load_vision_dataset")
    one_line_error(
        cli.main,
        ["dgm-reflow-pairs", str(first), "n=4", f"out={tmp_path / 'x.pt'}", "sampler=ddim"],
        "ConfigError",
        "has no integrate()",
        monkeypatch,
        capsys,
    )
    second = tmp_path / "second"
    inputs = [f"dataset.pairs={out}", "dataset.subset=null", f"trainer.init_from={first}"]
    final = train(compose_train([*REFLOW_RUN, *inputs]), second)
    assert final["status"] == "completed" and final["init_from"]["weights"] == "ema"
    assert final["init_from"]["path"] == str((first / "checkpoints" / "last.pt").resolve())
    assert math.isfinite(final["test/fm_loss"]) and final["test/straightness"] >= 0
    assert load_checkpoint(second / "checkpoints" / "last.pt")["init_from"] == final["init_from"]


@needs_mnist
def test_training_on_pairs_resumed_mid_epoch_is_bit_exact(tmp_path, monkeypatch):
    """SIGTERM before step 6 of 8 (epoch 2 of 2, 4 batches of 64 pairs), warm-started; the
    resumed run ends with the uninterrupted run's weights and metrics to the last bit, and
    every batch of the three runs holds its rows' own noise."""
    cfg = _unet_cfg()
    _pairs_for_mnist(tmp_path / "pairs.pt", 256, cfg)
    _checkpoint(tmp_path / "init.pt", cfg)
    overrides = [
        *REFLOW_RUN,
        "~sample_metrics.straightness",
        f"dataset.pairs={tmp_path / 'pairs.pt'}",
        f"trainer.init_from={tmp_path / 'init.pt'}",
        "trainer.epochs=2",
        "objective._target_=tests.test_reflow.RecordingFlowMatching",
    ]
    RecordingFlowMatching.batches = 0
    straight, _ = assert_resume_is_bit_exact(tmp_path, monkeypatch, overrides)
    assert RecordingFlowMatching.batches == 8 + 6 + 2  # straight, cut before step 6, resumed
    assert straight["init_from"]["weights"] == "ema" and math.isfinite(straight["test/fm_loss"])
