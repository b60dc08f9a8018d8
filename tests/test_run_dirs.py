"""Run directories are never overwritten (issue 9): dgm-train (in-process and through the
CLI) refuses a directory that holds a run, and two launches in the same second get two
directories."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dgm_runner.cli import sample
from dgm_runner.cli import train as train_cli
from dgm_runner.config import ConfigError, validate
from dgm_runner.io.checkpoint import CheckpointError
from dgm_runner.io.layout import RunPaths
from dgm_runner.io.lock import LOCK_NAME
from dgm_runner.io.run_dir import check_run_dir
from dgm_runner.loop import train
from tests.helpers import SMALL, VAE, needs_mnist
from tests.helpers import cli as _cli
from tests.helpers import error_lines as _error_lines
from tests.helpers import snapshot as _snapshot


@needs_mnist
def test_train_refuses_a_directory_that_holds_a_run(cli_run, compose_cfg):
    before = _snapshot(cli_run)
    cfg = compose_cfg("experiment=vae_mlp", *SMALL, "logger=none")
    with pytest.raises(ConfigError) as err:
        train(cfg, cli_run)
    message = str(err.value)
    assert (
        "already holds a run" in message
        and f"trainer.resume={cli_run}" in message
        and "\n" not in message
    )
    other = compose_cfg(
        "experiment=vae_mlp", *SMALL, "logger=none", f"trainer.resume={cli_run.parent}"
    )
    with pytest.raises(ConfigError, match="is another directory"):
        train(other, cli_run)
    assert _snapshot(cli_run) == before
    check_run_dir(cli_run, str(cli_run))  # resuming it is allowed
    check_run_dir(cli_run, "auto")
    check_run_dir(cli_run.parent / "fresh", None)


@needs_mnist
def test_cli_refuses_a_directory_that_holds_a_run(cli_run):
    before = _snapshot(cli_run)
    proc = _cli("experiment=vae_mlp", *SMALL, "logger=none", f"hydra.run.dir={cli_run}")
    assert proc.returncode == 2
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and "already holds a run" in errors[0]
    assert _snapshot(cli_run) == before  # Hydra did not rewrite .hydra/ either


_AT = textwrap.dedent(
    """
    import sys, time
    from dgm_runner.cli.train import main  # the slow part: imports
    target = float(sys.argv[1])
    late = time.time() > target
    time.sleep(max(0.0, target - time.time()))
    print("late" if late else "on time", file=sys.stderr, flush=True)
    sys.argv = ["dgm-train", *sys.argv[2:]]
    main()
    """
)


@pytest.mark.serial  # wall-clock seconds: alone, not beside another test worker
def test_launches_in_the_same_second_get_two_directories(tmp_path):
    """Two CLI launches that compose their config in the same second (both wait, after
    their imports, for the same instant just past a second boundary) get two run dirs."""
    target = math.ceil(time.time()) + 8.05
    # a tiny run that completes (a refused launch leaves no directory to count: issue 25)
    run = ["experiment=vae_mlp", *SMALL, "logger=none", "~sample_metrics.fid", "dataset.subset=64"]
    args = [sys.executable, "-c", _AT, str(target), *run]
    procs = [
        subprocess.Popen(
            args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    stderr = [p.communicate(timeout=120)[1] for p in procs]
    for p, err in zip(procs, stderr):
        assert p.returncode == 0, err[-2000:]
    dirs = sorted((tmp_path / "outputs" / "vae_mlp").iterdir())
    assert len(dirs) == 2, dirs
    for d in dirs:
        assert RunPaths(d).config_yaml.is_file()
        assert json.loads(RunPaths(d).metrics.read_text())["status"] == "completed"
    # the claim needs both to have named their directories in the same second: a machine too
    # slow to import in 8 s, or so busy (another test worker) that composing the config took
    # them into the next second, did not test it
    if not all("on time" in err for err in stderr) or dirs[0].name[:19] != dirs[1].name[:19]:
        pytest.skip("the two launches did not name their directories in the same second")
    assert dirs[0].name != dirs[1].name  # the same second, told apart by microseconds


# --- issue 25, finding 3 and item 2: what marks a run is its run-directory contract -------

#: The overrides the ``cli_run`` fixture was trained with (a resume must repeat them).
CLI_RUN = ["experiment=vae_mlp", *SMALL, "logger=none"]


@pytest.fixture
def run_copy(cli_run, tmp_path):
    """A copy of the finished ``cli_run`` (without its lock), for a test to change."""
    copy = tmp_path / "run"
    shutil.copytree(cli_run, copy, ignore=shutil.ignore_patterns(LOCK_NAME))
    return copy


def _invoke(main, argv: list[str], capsys) -> tuple[int | None, list[str]]:
    """Run a console entry point in-process under ``argv``: (exit status, stderr lines)."""
    saved, sys.argv = sys.argv, argv
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.argv = saved
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@needs_mnist
def test_a_run_whose_checkpoints_were_deleted_is_not_written_over(run_copy, compose_cfg):
    """Finding 3: results without ``checkpoints/`` are still a run: a new launch into it is
    refused, and a resume (explicit or ``auto``) says the checkpoint is gone."""
    shutil.rmtree(RunPaths(run_copy).checkpoints)
    before = _snapshot(run_copy)
    with pytest.raises(ConfigError) as err:
        train(compose_cfg(*CLI_RUN), run_copy)
    assert "already holds a run" in str(err.value) and RunPaths.METRICS_LOG in str(err.value)
    for resume in ("auto", str(run_copy)):
        with pytest.raises(CheckpointError) as err:
            train(compose_cfg(*CLI_RUN, f"trainer.resume={resume}"), run_copy)
        assert str(RunPaths.relative().last) in str(err.value) and "\n" not in str(err.value)
    assert _snapshot(run_copy) == before


@needs_mnist
def test_cli_refuses_results_without_checkpoints_and_any_non_empty_directory(
    run_copy, tmp_path, monkeypatch, capsys
):
    """Finding 3: neither a run without ``checkpoints/`` nor a directory of other files
    (a run was written into ``configs/experiment/``) gets a new run; nothing is written
    there (not even Hydra's ``.hydra/``, nor a lock among the other files). Resuming the
    run without checkpoints is one CheckpointError line."""
    shutil.rmtree(RunPaths(run_copy).checkpoints)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.yaml").write_text("mine: 1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(train_cli.DRIVER_ENV, "")
    cases = (
        ([f"hydra.run.dir={run_copy}"], 2, "ConfigError", "already holds a run"),
        ([f"hydra.run.dir={notes}"], 2, "ConfigError", "holds no run"),
        ([f"trainer.resume={run_copy}"], 1, "CheckpointError", str(RunPaths.relative().last)),
    )
    for args, status, kind, says in cases:
        target = Path(args[0].split("=", 1)[1])
        names = sorted(p.name for p in target.iterdir())
        before = _snapshot(target)
        code, errors = _invoke(train_cli.main, ["dgm-train", *CLI_RUN, *args], capsys)
        assert code == status and len(errors) == 1, errors
        assert errors[0].startswith(f"dgm-train: error: {kind}: ") and says in errors[0]
        assert _snapshot(target) == before
        new = {p.name for p in target.iterdir()} - set(names)
        assert new <= ({LOCK_NAME} if target == run_copy else set())  # a run's lock is its own


@needs_mnist
def test_leftovers_of_a_refused_launch_count_as_empty(tmp_path, compose_cfg):
    """A directory holding only a lock and an empty ``.hydra/`` (what a refused launch may
    leave) takes a new run."""
    run_dir = tmp_path / "run"
    RunPaths(run_dir).hydra.mkdir(parents=True)
    RunPaths(run_dir).lock.touch()
    final = train(compose_cfg(*VAE), run_dir)
    assert final["status"] == "completed"


# --- issue 25, finding 4: a quoted ~ is the home directory, for every path option ---------


@needs_mnist
def test_a_quoted_tilde_is_the_home_directory(run_copy, tmp_path, monkeypatch, capsys):
    """``trainer.resume='~/R'`` resumes ``$HOME/R`` (here: nothing left to do) instead of
    creating a literal ``./~/R`` skeleton; dgm-sample's ``run_dir`` and ``out`` too."""
    home = tmp_path / "home"
    home.mkdir()
    run_copy.rename(home / "R")
    monkeypatch.setenv("HOME", str(home))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv(train_cli.DRIVER_ENV, "")
    code, errors = _invoke(train_cli.main, ["dgm-train", *CLI_RUN, "trainer.resume='~/R'"], capsys)
    assert code == 0, errors
    code, errors = _invoke(
        sample.main, ["dgm-sample", "~/R", "n=4", "out='~/grid.png'", "device=cpu"], capsys
    )
    assert code == 0, errors
    assert (home / "grid.png").is_file()
    assert list(cwd.iterdir()) == []  # no ./~ skeleton, no log


def test_every_path_option_of_a_config_expands_a_leading_tilde(compose_cfg, tmp_path, monkeypatch):
    """The composed config, as ``train()`` validates it: ``~`` is expanded in every path
    value (``dataset.root``, ``trainer.resume``, a FID classifier), once, at validation."""
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = compose_cfg(
        "experiment=vae_mlp",
        "dataset.root='~/data'",
        "trainer.resume='~/R'",
        "sample_metrics.fid.classifier='~/clf.pt'",
    )
    validate(cfg)
    assert cfg.dataset.root == str(tmp_path / "data")
    assert cfg.trainer.resume == str(tmp_path / "R")
    assert cfg.sample_metrics.fid.classifier == str(tmp_path / "clf.pt")
