"""Nothing NaN is written as a result (issue 25, item 4): weights holding NaN are refused in
one line by ``dgm-eval`` and ``dgm-sample``, non-finite samples never reach FID's matrix
square root (LAPACK), and ``dgm-eval`` writes no record with a non-finite metric."""

from __future__ import annotations

import math
import shutil
import sys

import pytest
import torch

from dgm_runner.cli import eval as evaluate
from dgm_runner.cli import sample
from dgm_runner.io.checkpoint import load_checkpoint
from dgm_runner.metrics import fid as fid_module
from dgm_runner.samplers.base import Sampler
from tests.helpers import needs_mnist, snapshot

MAINS = {"dgm-eval": evaluate.main, "dgm-sample": sample.main}


def _run_one(tool: str, args: list[str], monkeypatch, capsys) -> list[str]:
    """Run ``tool`` in-process; its stderr lines (the exit status must be non-zero)."""
    monkeypatch.setattr(sys, "argv", [tool, *args])
    with pytest.raises(SystemExit) as exit_:
        MAINS[tool]()
    err = capsys.readouterr().err
    assert exit_.value.code not in (0, None), err
    return [line for line in err.splitlines() if line.strip()]


@needs_mnist
@pytest.mark.parametrize("tool", ["dgm-eval", "dgm-sample"])
def test_nan_weights_are_one_line_and_nothing_is_written(
    cli_run, tmp_path, monkeypatch, capsys, tool
):
    run = tmp_path / "nan_run"
    shutil.copytree(cli_run, run)
    path = run / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(path)
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][name][..., 0] = float("nan")
    torch.save(ckpt, path)
    before = snapshot(run)
    monkeypatch.chdir(tmp_path)
    lines = _run_one(tool, [str(run)], monkeypatch, capsys)
    assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: CheckpointError: "), lines
    assert "NaN or infinite" in lines[0] and name in lines[0]
    after = {k: v for k, v in snapshot(run).items() if not k.endswith(".log")}
    assert after == {k: v for k, v in before.items() if not k.endswith(".log")}
    assert not (run / "eval").exists()


@needs_mnist
def test_dgm_eval_writes_no_record_with_a_non_finite_metric(cli_run, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    real = evaluate.all_test_metrics

    def one_nan(*args, **kwargs):
        return {**real(*args, **kwargs), "test/elbo": float("nan")}

    monkeypatch.setattr(evaluate, "all_test_metrics", one_nan)
    monkeypatch.chdir(tmp_path)
    lines = _run_one("dgm-eval", [str(run), "~fid"], monkeypatch, capsys)
    assert len(lines) == 1 and lines[0].startswith("dgm-eval: error: NonFiniteError: "), lines
    assert "test/elbo=nan" in lines[0]
    assert not (run / "eval").exists()


class _NaNSampler(Sampler):
    """Samples of a diverged model: every pixel NaN."""

    def sample(self, model, n, generator):
        return torch.full((n, 1, 28, 28), float("nan"))


@needs_mnist
def test_fid_of_non_finite_samples_is_nan_without_reaching_lapack(monkeypatch, caplog):
    from dgm_runner.data.vision import load_vision_dataset

    def never(*args, **kwargs):
        raise AssertionError("non-finite features reached the Frechet distance")

    monkeypatch.setattr(fid_module, "frechet_distance", never)
    monkeypatch.setattr(fid_module, "kernel_distance", never)
    data = load_vision_dataset("mnist", test_subset=100)
    out = fid_module.classifier_fid(
        torch.nn.Linear(1, 1), _NaNSampler(), data, 0, final=True, n_samples=50, batch_size=50
    )
    assert math.isnan(out["fid"]) and out["fid_n_samples"] == 50.0
    assert "not finite" in caplog.text
