"""The bench's ``unet`` section (:mod:`dgm_runner.bench.unet`, issue 30) at a tiny size: its
contenders run and give finite positive rates, the diffusers models are within the stated
parameter tolerance of ours, and a missing diffusers is a skipped row, not a crash. No
timing is asserted (the bench itself runs in `make bench` / scripts/bench.py)."""

from __future__ import annotations

import importlib.util
import math
import sys

import pytest
import torch

from dgm_runner.bench import unet
from dgm_runner.bench.harness import Bench
from tests.helpers import needs_mnist

#: Tiny sizes: 64 images in batches of 32, i.e. 2 updates per epoch.
N, BS = 64, 32


def _bench() -> Bench:
    return Bench(torch.device("cpu"), quick=True, repeats=1)


def _tiny_cfg():
    cfg = unet.fm_cfg()
    cfg.trainer.batch_size = BS
    return cfg


def _finite_positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


def test_our_unet_has_the_documented_parameter_count():
    info = unet.model_info(unet.fm_cfg())
    assert info["ours"]["params"] == 272_737
    assert _finite_positive(info["ours"]["fwd_mflops_per_image"])


def test_diffusers_models_are_within_the_parameter_tolerance_of_ours():
    pytest.importorskip("diffusers")
    info = unet.model_info(unet.fm_cfg())
    for name in unet.DIFFUSERS:
        assert abs(info[name]["params"] / info["ours"]["params"] - 1) <= unet.PARAM_TOLERANCE
        assert abs(info[name]["params_vs_ours"]) <= unet.PARAM_TOLERANCE
        assert _finite_positive(info[name]["fwd_mflops_per_image"])
    # 28x28 in, 28x28 out, unpadded
    out = unet.diffusers_forward(unet.diffusers_unet(), torch.rand(2, 1, 28, 28), torch.rand(2))
    assert out.shape == (2, 1, 28, 28)


@needs_mnist
def test_plain_loop_gives_a_finite_positive_rate():
    r = unet.plain_fm_epoch(_bench(), _tiny_cfg(), N)
    assert r["updates"] == 2 and r["images"] == N
    assert _finite_positive(r["updates_per_s"]) and _finite_positive(r["time"])
    assert math.isfinite(r["loss"])


@needs_mnist
def test_diffusers_loop_gives_a_finite_positive_rate():
    pytest.importorskip("diffusers")
    for name in unet.DIFFUSERS:
        r = unet.diffusers_fm_epoch(_bench(), _tiny_cfg(), N, name)
        assert r["updates"] == 2
        assert _finite_positive(r["updates_per_s"]) and math.isfinite(r["loss"])


@needs_mnist
def test_unet_section_runs_ours_and_the_baselines_with_ratios():
    bench = _bench()
    out = unet.unet_study(bench, images=N, batch_size=BS, experiments=(unet.FM_EXPERIMENT,))
    assert bench.results["unet"][unet.FM_EXPERIMENT] is out
    assert out["updates"] == 2 and out["batch_size"] == BS
    expected = {"ours", "plain_torch"}
    if importlib.util.find_spec("diffusers") is not None:
        expected |= set(unet.DIFFUSERS)
    assert set(out["contenders"]) == expected
    for s in out["contenders"].values():
        assert _finite_positive(s["updates_per_s"])
    for name in expected - {"ours"}:
        assert _finite_positive(out["ratios"][name])
    lines = unet.unet_table(bench.results)
    assert any(line.startswith("| **ours** | 272,737 |") for line in lines)
    assert any(line.startswith("| plain_torch | 272,737 |") for line in lines)


def test_without_diffusers_its_contenders_are_skipped_with_a_one_line_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ImportError
    bench = _bench()
    fake = {"time": 1.0, "epochs": [1.0], "peak_mem_mb": None, "images": N, "threads": 1}
    monkeypatch.setattr(bench, "runner_epoch", lambda overrides: dict(fake))
    monkeypatch.setattr(unet, "plain_fm_epoch", lambda *a, **k: dict(fake, updates=2))
    out = unet.unet_study(bench, images=N, batch_size=BS, experiments=(unet.FM_EXPERIMENT,))
    assert set(out["contenders"]) == {"ours", "plain_torch"}
    for name in unet.DIFFUSERS:
        assert "\n" not in out["skipped"][name] and "diffusers" in out["skipped"][name]
        assert "skipped" in out["models"][name]
    lines = unet.unet_table(bench.results)
    assert any(line.startswith("| diffusers | | | skipped: ") for line in lines)
