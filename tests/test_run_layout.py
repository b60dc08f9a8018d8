"""A run directory's entries are what the contract says (issue 25, finding 7 and item 8):
``checkpoints``, ``samples``, ``tb``, ``.hydra``, ``eval`` and ``figures`` are directories
inside the run, and ``.lock`` is a plain file, or dgm-train, dgm-eval and dgm-sample refuse
the run in one line before any work, writing nothing outside it. The contract is one class,
:class:`RunPaths` (issue 27, item 3): its entries are exactly the contract's, every one is
checked, and a finished run holds nothing it does not name."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from dgm_runner import config, loop
from dgm_runner.cli import eval as evaluate
from dgm_runner.cli import sample
from dgm_runner.cli import train as train_cli
from dgm_runner.io.atomic import WriteError
from dgm_runner.io.layout import DIRECTORIES, FILES, RUN_ENTRIES, RunPaths, check_layout
from dgm_runner.io.lock import LOCK_NAME, RunDirLocked, acquire, release
from dgm_runner.loop import train
from tests.helpers import SMALL, needs_mnist, snapshot, unnamed_files

CLI_RUN = ["experiment=vae_mlp", *SMALL, "logger=none"]  # how the cli_run fixture was trained


@pytest.fixture
def run_copy(cli_run, tmp_path):
    """A copy of the finished ``cli_run`` (without its lock), for a test to change."""
    copy = tmp_path / "run"
    shutil.copytree(cli_run, copy, ignore=shutil.ignore_patterns(LOCK_NAME))
    return copy


def _plant(run_dir, name: str, kind: str, outside) -> None:
    """Replace ``run_dir/name`` by a file (``kind="file"``) or by a symlink to the
    directory ``outside``, which gets what ``run_dir/name`` held (``kind="link"``)."""
    path = run_dir / name
    if kind == "file":
        if path.is_dir():
            shutil.rmtree(path)
        path.write_text("not a directory\n")
    else:
        if path.is_dir():
            shutil.move(path, outside)
        outside.mkdir(exist_ok=True)
        path.symlink_to(outside, target_is_directory=True)


def _no_work(*args, **kwargs):
    raise AssertionError("the command started its work before refusing the run directory")


def test_a_dangling_lock_symlink_creates_nothing_outside(tmp_path):
    """Finding 7: ``.lock`` replaced by a dangling symlink: the lock is refused in one line
    and no file appears at the link's target."""
    run_dir, target = tmp_path / "run", tmp_path / "victim"
    run_dir.mkdir()
    lock = RunPaths(run_dir).lock
    lock.symlink_to(target)
    with pytest.raises(RunDirLocked) as err:
        acquire(run_dir)
    release(run_dir)
    assert "symbolic link" in str(err.value) and "\n" not in str(err.value)
    assert not target.exists()
    os.unlink(lock)
    lock.mkdir()  # a directory where the lock file should be
    with pytest.raises(RunDirLocked, match="not a regular file"):
        acquire(run_dir)


@pytest.mark.parametrize("kind", ["file", "link", "dangling"])
@pytest.mark.parametrize("name", DIRECTORIES)
def test_check_layout_names_the_entry(tmp_path, name, kind):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if kind == "dangling":
        (run_dir / name).symlink_to(tmp_path / "gone")
    else:
        _plant(run_dir, name, kind, tmp_path / "outside")
    with pytest.raises(WriteError) as err:
        check_layout(run_dir)
    assert str(run_dir / name) in str(err.value) and "\n" not in str(err.value)
    check_layout(tmp_path / "missing")  # nothing there yet: nothing wrong
    inside = tmp_path / "ok"
    (inside / "real").mkdir(parents=True)
    (inside / name).symlink_to(inside / "real")  # a link inside the run is fine
    check_layout(inside)


@needs_mnist
@pytest.mark.parametrize(
    "tool, name, kind",
    [
        *(("dgm-train", name, "file") for name in DIRECTORIES),
        ("dgm-train", RunPaths.CHECKPOINTS, "link"),
        ("dgm-train", RunPaths.SAMPLES, "link"),
        ("dgm-eval", RunPaths.EVAL, "file"),
        ("dgm-eval", RunPaths.EVAL, "link"),
        ("dgm-sample", RunPaths.SAMPLES, "file"),
        ("dgm-sample", RunPaths.SAMPLES, "link"),
    ],
)
def test_a_run_with_a_planted_entry_is_refused_before_any_work(
    run_copy, tmp_path, monkeypatch, capsys, tool, name, kind
):
    """Finding 7 and item 8: one ``WriteError`` line naming the entry, the run unchanged and
    nothing written outside (a planted ``eval`` link sent ``eval/metrics.json`` out)."""
    outside = tmp_path / "outside"
    _plant(run_copy, name, kind, outside)
    before, before_outside = snapshot(run_copy), snapshot(outside) if outside.exists() else {}
    argv = {
        "dgm-train": ["dgm-train", *CLI_RUN, "trainer.epochs=2", f"trainer.resume={run_copy}"],
        "dgm-eval": ["dgm-eval", str(run_copy), "device=cpu"],
        "dgm-sample": ["dgm-sample", str(run_copy), "n=4", "device=cpu"],
    }[tool]
    main = {"dgm-train": train_cli.main, "dgm-eval": evaluate.main, "dgm-sample": sample.main}
    module, work = {
        "dgm-train": (loop, "_set_up"),
        "dgm-eval": (evaluate, "restore_run"),
        "dgm-sample": (sample, "restore_run"),
    }[tool]
    monkeypatch.setattr(module, work, _no_work)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(train_cli.DRIVER_ENV, "")
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        main[tool]()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_.value.code not in (0, None) and len(lines) == 1, err
    assert lines[0].startswith(f"{tool}: error: WriteError: ") and name in lines[0], lines[0]
    after = {k: v for k, v in snapshot(run_copy).items() if not k.endswith(".log")}
    assert after == {k: v for k, v in before.items() if not k.endswith(".log")}
    assert (snapshot(outside) if outside.exists() else {}) == before_outside


@needs_mnist
def test_train_in_process_checks_the_layout_too(run_copy, compose_cfg):
    samples = RunPaths(run_copy).samples
    samples.rename(run_copy / "kept")
    samples.write_text("a file\n")
    with pytest.raises(WriteError, match=RunPaths.SAMPLES):
        train(compose_cfg(*CLI_RUN, "trainer.epochs=2", f"trainer.resume={run_copy}"), run_copy)


# --- issue 27, item 3: the contract is RunPaths ----------------------------------------


def test_run_paths_name_exactly_the_contract(tmp_path):
    """One source: the contract's tuples, the lock's name and the names
    ``trainer.export_name`` may not take are RunPaths' constants, and RunPaths has one
    property per entry of the contract, every path it names lies in one of them."""
    assert RunPaths.DIRECTORIES == ("checkpoints", "samples", "tb", ".hydra", "eval", "figures")
    assert RunPaths.FILES == ("metrics.json", "metrics.jsonl", "train_history.jsonl", "train.log")
    assert (DIRECTORIES, FILES) == (RunPaths.DIRECTORIES, RunPaths.FILES)
    assert RUN_ENTRIES == (*RunPaths.DIRECTORIES, *RunPaths.FILES)
    assert LOCK_NAME == RunPaths.LOCK == ".lock"
    assert config.RUN_FILES == (*RunPaths.FILES, RunPaths.LOCK, *RunPaths.TRACKER_FILES)
    assert RunPaths.ENTRIES == (*RUN_ENTRIES, ".lock", "mlflow_run.json", "wandb_run.json")

    paths = RunPaths(str(tmp_path))
    assert paths.root == tmp_path and paths == RunPaths(tmp_path)
    named = {k: getattr(paths, k) for k, v in vars(RunPaths).items() if isinstance(v, property)}
    assert len(named) == 20, sorted(named)
    for name, path in named.items():
        assert path.relative_to(tmp_path).parts[0] in RunPaths.ENTRIES, name
    top = sorted(p.name for p in named.values() if p.parent == tmp_path)
    assert top == sorted(RunPaths.ENTRIES)  # one property per entry of the contract

    assert paths.last == tmp_path / "checkpoints" / "last.pt" == paths.checkpoint("last")
    assert paths.best == tmp_path / "checkpoints" / "best.pt" == paths.checkpoint("best")
    with pytest.raises(ValueError, match="'last' or 'best'"):
        paths.checkpoint("other.pt")
    assert paths.grid(7) == tmp_path / "samples" / "epoch_0007.png"
    assert paths.final_grid == tmp_path / "samples" / "final.png"
    assert paths.drawn_grid("_ddim", 64, 0) == tmp_path / "samples" / "sample_ddim_n64_seed0.png"
    assert paths.figure("class_grid") == tmp_path / "figures" / "class_grid.png"
    assert paths.evaluation() == tmp_path / "eval" / "metrics.json"
    assert (
        paths.evaluation(["ddim", "steps=20"]) == tmp_path / "eval" / "metrics_ddim_steps=20.json"
    )
    assert paths.sampler_table == tmp_path / "eval" / "sampler_table"
    assert paths.config_yaml == tmp_path / ".hydra" / "config.yaml"
    assert paths.job_log("train") == paths.log and paths.export("m.pt") == tmp_path / "m.pt"
    assert RunPaths.relative().last == Path("checkpoints", "last.pt")  # as messages name it


@pytest.mark.parametrize("kind", ["other kind", "link out"])
@pytest.mark.parametrize("name", RunPaths.ENTRIES)
def test_check_layout_covers_every_entry(tmp_path, name, kind):
    """Every entry RunPaths names is checked: a file where the contract has a directory
    (and the reverse), or a symbolic link out of the run, is one WriteError line."""
    run_dir, outside = tmp_path / "run", tmp_path / "outside"
    run_dir.mkdir()
    outside.mkdir()
    path = run_dir / name
    directory = name in RunPaths.DIRECTORIES
    if kind == "link out":
        target = outside if directory else outside / name
        if not directory:
            target.write_text("{}\n")
        path.symlink_to(target)
    elif directory:
        path.write_text("not a directory\n")
    else:
        path.mkdir()
    with pytest.raises(WriteError) as err:
        check_layout(run_dir)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@needs_mnist
def test_a_finished_run_holds_only_what_run_paths_names(cli_run, compose_cfg):
    """A real smoke run (with the .hydra/ files and train.log the CLI adds) holds the
    contract's entries and its exported state_dict, and no file RunPaths does not name."""
    cfg = compose_cfg(*CLI_RUN)
    export = cfg.trainer.export_name
    assert export  # the run exports its state_dict
    top = {p.name for p in cli_run.iterdir()}
    logs = {RunPaths(cli_run).job_log(job).name for job in ("eval", "sample")}  # other tests'
    assert top - set(RunPaths.ENTRIES) - logs == {export}
    paths = RunPaths(cli_run)
    for path in (paths.last, paths.metrics, paths.metrics_log, paths.final_grid, paths.log):
        assert path.is_file(), path
    assert unnamed_files(cli_run, cfg.trainer.epochs, list(cfg.figures), export) == []


@pytest.mark.parametrize("name", ["metrics.json", ".lock", "wandb_run.json", "mlflow_run.json"])
def test_export_name_may_not_replace_a_run_file_or_a_trackers_run_id(name):
    from dgm_runner.config import ConfigError, check_file_name

    with pytest.raises(ConfigError, match="must be a plain file name inside the run directory"):
        check_file_name("trainer.export_name", name)
