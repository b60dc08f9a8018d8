"""The one-line contract (issue 15, items 2, 9, 10), table-driven over every error kind:
each bad input to ``dgm-train`` / ``dgm-eval`` / ``dgm-sample`` gives exactly one
``<tool>: error: <Kind>: ...`` line naming the key or path, a non-zero exit status, no
traceback, and nothing written into an existing run. Commands run in-process (their
``main()`` under a patched ``sys.argv``), which keeps the table fast."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch
from omegaconf import OmegaConf

from dgm_runner.cli import eval as evaluate
from dgm_runner.cli import sample
from dgm_runner.cli import train as train_cli
from dgm_runner.data import vision
from dgm_runner.io.checkpoint import FORMAT, load_checkpoint
from dgm_runner.loop import train
from tests.helpers import SMALL, VAE, needs_mnist, one_line_error, snapshot

pytestmark = needs_mnist

RBM = [
    "experiment=rbm_cdk",
    *SMALL,
    "logger=none",
    "~sample_metrics.fid",
    "~sample_metrics.ais",
    "sampler.steps=20",
    "trainer.export_name=null",
]
MAINS: dict[str, Callable[[], None]] = {
    "dgm-train": train_cli.main,
    "dgm-eval": evaluate.main,
    "dgm-sample": sample.main,
}
LOGS = ("eval.log", "sample.log")  # the apps' own job logs, which also get the error line


def _trained(compose_cfg, run_dir: Path, overrides: list[str]) -> Path:
    cfg = compose_cfg(*overrides)
    train(cfg, run_dir)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))  # as Hydra writes it
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished VAE and RBM run, and broken copies of the VAE run (a checkpoint with no
    config, one whose weights do not fit), made once for the table."""
    from hydra import compose, initialize_config_dir

    from dgm_runner import CONFIG_DIR

    def compose_cfg(*overrides):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose("train", overrides=list(overrides))

    root = tmp_path_factory.mktemp("runs")
    vae = _trained(compose_cfg, root / "vae", VAE)
    rbm = _trained(compose_cfg, root / "rbm", RBM)
    ckpt = load_checkpoint(vae / "checkpoints" / "last.pt")
    no_config = root / "no_config"
    (no_config / "checkpoints").mkdir(parents=True)
    torch.save({"format": FORMAT, "model": ckpt["model"]}, no_config / "checkpoints" / "last.pt")
    small = compose_cfg(*VAE, "model.latent_dim=3")
    train(small, root / "small")
    misfit = root / "misfit"
    shutil.copytree(vae, misfit)
    other = load_checkpoint(root / "small" / "checkpoints" / "last.pt")
    torch.save({**ckpt, "model": other["model"]}, misfit / "checkpoints" / "last.pt")
    placed = root / "placed"  # a VAE checkpoint dropped into an RBM run
    shutil.copytree(rbm, placed)
    shutil.copy(vae / "checkpoints" / "last.pt", placed / "checkpoints" / "best.pt")
    a_file = root / "a_file.txt"
    a_file.write_text("not a directory")
    (root / "empty").mkdir()
    return {
        "vae": vae,
        "rbm": rbm,
        "no_config": no_config,
        "misfit": misfit,
        "placed": placed,
        "file": a_file,
        "empty": root / "empty",
        "missing": root / "missing",
        "root": root,
    }


def _disk_full(monkeypatch) -> None:
    def torch_save_on_a_full_disk(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        raise RuntimeError(
            "[enforce fail at inline_container.cc:664] . unexpected pos 6912 vs 6806"
        )

    monkeypatch.setattr("dgm_runner.io.checkpoint.torch.save", torch_save_on_a_full_disk)


def _unwritable_cache(monkeypatch) -> None:
    blocker = Path(str(monkeypatch.tmp)) / "a_file"
    blocker.write_text("x")
    monkeypatch.setenv(
        "DGM_CACHE_DIR", str(blocker / "cache")
    )  # a path under a file: not creatable
    vision._load_uint8.cache_clear()


# (id, tool, args (with {name} for the runs' paths), kind, what the line says,
#  runs that must not change, setup)
CASES = [
    (
        "key typo",
        "dgm-train",
        ["trainr.epochs=2"],
        "ConfigError",
        "did you mean trainer.epochs",
        [],
        None,
    ),
    (
        "nested key typo",
        "dgm-train",
        [*VAE, "trainer.epoch=2"],
        "ConfigError",
        "did you mean trainer.epochs",
        [],
        None,
    ),
    (
        "resume a file",
        "dgm-train",
        [*VAE, "trainer.resume={file}"],
        "ConfigError",
        "is a file",
        [],
        None,
    ),
    (
        "resume an empty dir",
        "dgm-train",
        [*VAE, "trainer.resume={empty}"],
        "ConfigError",
        "holds no run",
        ["empty"],
        None,
    ),
    (
        "resume a missing dir",
        "dgm-train",
        [*VAE, "trainer.resume={missing}"],
        "ConfigError",
        "no such directory",
        [],
        None,
    ),
    (
        "run dir a file",
        "dgm-train",
        [*VAE, "hydra.run.dir={file}"],
        "ConfigError",
        "is a file, not a directory",
        [],
        None,
    ),
    (
        "missing dataset.root",
        "dgm-train",
        [*VAE, "dataset.root={missing}", "hydra.run.dir={root}/r1"],
        "DataError",
        "dataset.root=",
        [],
        None,
    ),
    (
        "subset too large",
        "dgm-train",
        [*VAE, "dataset.subset=70000", "hydra.run.dir={root}/r2"],
        "DataError",
        "is larger than the 60000",
        [],
        None,
    ),
    (
        "score_field level out of range",
        "dgm-train",
        ["experiment=dsm_toy2d", "model.n_levels=10", "hydra.run.dir={root}/levels"],
        "ConfigError",
        "figures.score_field: levels [0, 9, 19] out of range for the model's 10 noise levels",
        [],
        None,
    ),
    (
        "export_name a path",
        "dgm-train",
        [*VAE, "trainer.export_name=checkpoints/last.pt", "hydra.run.dir={root}/r3"],
        "ConfigError",
        "plain file name",
        [],
        None,
    ),
    (
        "n_samples unbounded",
        "dgm-train",
        [*VAE, "trainer.n_samples=1000000", "hydra.run.dir={root}/r4"],
        "ConfigError",
        "trainer.n_samples=1000000 is invalid",
        [],
        None,
    ),
    (
        "rbm on toy points",
        "dgm-train",
        ["experiment=rbm_cdk", "dataset=toy2d", "logger=none", "hydra.run.dir={root}/r5"],
        "ConfigError",
        "model=rbm needs (C, H, W) images",
        [],
        None,
    ),
    (
        "checkpoint without config",
        "dgm-train",
        [*VAE, "trainer.resume={no_config}"],
        "CheckpointError",
        "lacks",
        ["no_config"],
        None,
    ),
    (
        "wrong-shape weights",
        "dgm-train",
        [*VAE, "trainer.epochs=2", "trainer.resume={misfit}"],
        "CheckpointError",
        "does not fit the model",
        ["misfit"],
        None,
    ),
    (
        "full disk",
        "dgm-train",
        [*VAE, "trainer.epochs=2", "trainer.resume={vae}"],
        "WriteError",
        "last.pt",
        ["vae:results"],
        _disk_full,
    ),
    (
        "unwritable cache",
        "dgm-train",
        [*VAE, "hydra.run.dir={root}/r6"],
        "DataError",
        "cache",
        [],
        _unwritable_cache,
    ),
    (
        "eval bad value",
        "dgm-eval",
        ["{vae}", "test_subset=-5"],
        "ConfigError",
        "test_subset=-5 is invalid",
        ["vae"],
        None,
    ),
    (
        "eval key typo",
        "dgm-eval",
        ["{vae}", "test_subst=5"],
        "ConfigError",
        "did you mean test_subset",
        ["vae"],
        None,
    ),
    (
        "eval another run's checkpoint",
        "dgm-eval",
        ["{rbm}", "checkpoint={vae}/checkpoints/last.pt"],
        "CheckpointError",
        "different model config",
        ["rbm", "vae"],
        None,
    ),
    (
        "eval a checkpoint placed in a run",
        "dgm-eval",
        ["{placed}", "checkpoint=best"],
        "CheckpointError",
        "different model config",
        ["placed"],
        None,
    ),
    (
        "eval a missing run",
        "dgm-eval",
        ["{missing}"],
        "CheckpointError",
        "does not exist",
        [],
        None,
    ),
    (
        "sample bad sampler value",
        "dgm-sample",
        ["{rbm}", "sampler.steps=-5"],
        "ConfigError",
        "sampler.steps=-5 is invalid",
        ["rbm"],
        None,
    ),
    (
        "sample bad n",
        "dgm-sample",
        ["{vae}", "n=0"],
        "ConfigError",
        "n=0 is invalid",
        ["vae"],
        None,
    ),
    (
        "sample a class of an unconditional model",
        "dgm-sample",
        ["{vae}", "label=3"],
        "ConfigError",
        "is not a conditional model",
        ["vae"],
        None,
    ),
    (
        "sample a missing run",
        "dgm-sample",
        ["{missing}"],
        "CheckpointError",
        "does not exist",
        [],
        None,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_error_is_one_line_and_writes_nothing(case, runs, monkeypatch, capsys, tmp_path):
    _, tool, args, kind, says, unchanged, setup = case
    monkeypatch.chdir(tmp_path)  # new run directories land here
    monkeypatch.tmp = tmp_path
    if setup is not None:
        setup(monkeypatch)
    args = [a.format(**{k: str(v) for k, v in runs.items()}) for a in args]
    before = {name: _files(runs, name) for name in unchanged}
    status = one_line_error(MAINS[tool], [tool, *args], kind, says, monkeypatch, capsys)
    if tool == "dgm-train" and kind == "ConfigError":
        assert status == 2
    for name in unchanged:
        assert _files(runs, name) == before[name], name
    assert not runs["missing"].exists()
    if setup is _unwritable_cache:
        vision._load_uint8.cache_clear()


def _files(runs: dict[str, Path], name: str) -> dict:
    """The files of run ``name`` but the apps' job logs; ``name:results``: its results only
    (checkpoints, metrics, grids: on a full disk the epoch's train_history lines and log
    lines stay, beyond last.pt, and the next resume drops them)."""
    run_name, _, only = name.partition(":")
    files = {k: v for k, v in snapshot(runs[run_name]).items() if Path(k).name not in LOGS}
    if only == "results":
        files = {
            k: v
            for k, v in files.items()
            if k.startswith(("checkpoints/", "samples/", "metrics.json"))
        }
    return files
