"""Learning-rate schedules (lr_schedule=constant|burda|cosine; dgm_runner/lr_schedules.py):
the factors against the papers' closed forms, the rate the optimiser gets in each epoch, a
run stopped inside an epoch and resumed is bit-exact with a schedule, the constant default
never touches the optimiser, and bad values fail before any work."""

from __future__ import annotations

import math

import pytest
import torch

from dgm_runner.config import ConfigError, validate
from dgm_runner.io.checkpoint import load_checkpoint
from dgm_runner.io.signals import StopRequested
from dgm_runner.loop import train
from dgm_runner.lr_schedules import (
    Constant,
    Cosine,
    GeometricStages,
    apply_lr_schedule,
    remember_base_lr,
)
from dgm_runner.testing import compose_train
from tests.helpers import SMALL, needs_mnist


def test_burdas_schedule_is_3_to_the_i_epochs_at_10_to_the_minus_i_over_7():
    """Burda et al. (2016), Appendix: stage i = 0..7 of 3^i epochs at 1e-3 * 10^(-i/7),
    3280 epochs in all; the last rate stays after them."""
    cfg = compose_train(["experiment=vae_burda", "lr_schedule=burda"])
    from hydra.utils import instantiate

    schedule = instantiate(cfg.lr_schedule)
    epoch = 0
    for i in range(8):
        for _ in range(3**i):
            epoch += 1
            assert schedule.stage(epoch) == i, epoch
            assert schedule.factor(epoch, 3280) == pytest.approx(10 ** (-i / 7), rel=1e-12)
    assert epoch == 3280
    assert schedule.stage(3281) == 7 and schedule.stage(10**6) == 7
    assert 1e-3 * schedule.factor(3280, 3280) == pytest.approx(1e-4, rel=1e-12)


def test_cosine_anneals_from_one_to_its_minimum_symmetrically():
    schedule = Cosine(min_factor=0.1)
    epochs = 10
    assert schedule.factor(1, epochs) == 1.0
    assert schedule.factor(epochs + 1, epochs) == pytest.approx(0.1, abs=1e-15)
    assert schedule.factor(6, epochs) == pytest.approx(0.55, abs=1e-15)  # halfway: the mean
    factors = [schedule.factor(e, epochs) for e in range(1, epochs + 1)]
    assert all(a > b for a, b in zip(factors, factors[1:]))


def test_the_optimiser_gets_base_times_factor_in_every_group():
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]
    opt = torch.optim.Adam([{"params": params[:1], "lr": 0.01}, {"params": params[1:], "lr": 0.5}])
    optimizers = {"g": opt}
    remember_base_lr(optimizers)
    schedule = GeometricStages(growth=2, decay=0.5, n_stages=3)
    for epoch, factor in [(1, 1.0), (2, 0.5), (3, 0.5), (4, 0.25), (7, 0.25), (8, 0.25)]:
        assert apply_lr_schedule(schedule, optimizers, epoch, 8) == factor
        assert [g["lr"] for g in opt.param_groups] == [0.01 * factor, 0.5 * factor]
    opt.param_groups[0]["lr"] = 123.0
    assert apply_lr_schedule(Constant(), optimizers, 5, 8) == 1.0
    assert opt.param_groups[0]["lr"] == 123.0  # the constant default touches nothing


@pytest.mark.parametrize(
    "override, says",
    [
        ("lr_schedule.decay=0", "lr_schedule.decay=0 is invalid"),
        ("lr_schedule.decay=1.5", "lr_schedule.decay=1.5 is invalid"),
        ("lr_schedule.growth=0", "lr_schedule.growth=0 is invalid"),
        ("+lr_schedule.warmup=3", "warmup"),
    ],
)
def test_bad_schedule_values_fail_before_any_work(override, says):
    cfg = compose_train(["experiment=vae_burda", "lr_schedule=burda", override])
    with pytest.raises(ConfigError, match=says):
        validate(cfg)
    with pytest.raises(ConfigError, match="min_factor=2"):
        validate(compose_train(["lr_schedule=cosine", "lr_schedule.min_factor=2"]))


RUN = [
    "experiment=vae_bce",
    *SMALL,
    "model.hidden_dim=32",
    "logger=none",
    "~sample_metrics.fid",
    "trainer.export_name=null",
    "trainer.epochs=3",
    "lr_schedule=burda",
    "objective._target_=tests.components.SignallingELBO",
]


@needs_mnist
def test_a_scheduled_run_resumed_mid_epoch_is_bit_exact_and_follows_the_schedule(
    tmp_path, monkeypatch, caplog
):
    """SIGTERM inside epoch 2 (a scaled rate); resumed, the run ends with the uninterrupted
    run's parameters and metrics to the last bit; the rates were 1e-3 then 1e-3 * 10^(-1/7);
    the same run without the schedule ends elsewhere."""
    straight = train(compose_train(RUN), tmp_path / "straight")
    ckpt = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    groups = next(iter(ckpt["optimizers"].values()))["param_groups"]
    assert groups[0]["lr"] == pytest.approx(1e-3 * 10 ** (-1 / 7), rel=1e-12)
    cut = tmp_path / "cut"
    monkeypatch.setenv("DGM_TEST_SIGNAL_AT", "0:6")  # step 6 of 3 x 4: inside epoch 2
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(StopRequested):
        train(compose_train(RUN), cut)
    monkeypatch.delenv("DGM_TEST_SIGNAL_AT")
    with caplog.at_level("INFO", logger="dgm_runner"):
        resumed = train(compose_train([*RUN, f"trainer.resume={cut}"]), cut)
    assert "optimizer.lr changed on resume" not in caplog.text  # the scaled rate is no change
    times = ("time_per_epoch_s", "train_time_s", "eval_time_s", "finished")
    assert {k: v for k, v in resumed.items() if k not in times} == {
        k: v for k, v in straight.items() if k not in times
    }
    a = load_checkpoint(cut / "checkpoints" / "last.pt")["model"]
    b = ckpt["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)
    constant = train(compose_train([*RUN, "lr_schedule=constant"]), tmp_path / "constant")
    assert not math.isclose(constant["train/loss"], straight["train/loss"], rel_tol=1e-9)
