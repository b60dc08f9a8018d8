"""A run directory's entries are what the contract says (issue 25, finding 7 and item 8):
``checkpoints``, ``samples``, ``tb``, ``.hydra``, ``eval`` and ``figures`` are directories
inside the run, and ``.lock`` is a plain file, or dgm-train, dgm-eval and dgm-sample refuse
the run in one line before any work, writing nothing outside it."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from dgm_runner import loop
from dgm_runner.cli import eval as evaluate
from dgm_runner.cli import sample
from dgm_runner.cli import train as train_cli
from dgm_runner.io.atomic import WriteError
from dgm_runner.io.layout import DIRECTORIES, check_layout
from dgm_runner.io.lock import LOCK_NAME, RunDirLocked, acquire, release
from dgm_runner.loop import train
from tests.helpers import SMALL, needs_mnist, snapshot

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
    (run_dir / LOCK_NAME).symlink_to(target)
    with pytest.raises(RunDirLocked) as err:
        acquire(run_dir)
    release(run_dir)
    assert "symbolic link" in str(err.value) and "\n" not in str(err.value)
    assert not target.exists()
    os.unlink(run_dir / LOCK_NAME)
    (run_dir / LOCK_NAME).mkdir()  # a directory where the lock file should be
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
        ("dgm-train", "checkpoints", "link"),
        ("dgm-train", "samples", "link"),
        ("dgm-eval", "eval", "file"),
        ("dgm-eval", "eval", "link"),
        ("dgm-sample", "samples", "file"),
        ("dgm-sample", "samples", "link"),
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
    (run_copy / "samples").rename(run_copy / "kept")
    (run_copy / "samples").write_text("a file\n")
    with pytest.raises(WriteError, match="samples"):
        train(compose_cfg(*CLI_RUN, "trainer.epochs=2", f"trainer.resume={run_copy}"), run_copy)
