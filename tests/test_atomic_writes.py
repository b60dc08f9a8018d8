"""Writes that survive SIGKILL (issue 9): a JSON file and a checkpoint rewritten in a loop
and killed at random moments hold the old or the new content, never a torn one; a failed
write keeps the old file; temp files left by killed writers are recognisable and removed."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from dgm_runner.io.atomic import (
    WriteError,
    atomic_copy,
    atomic_open,
    is_temp_file,
    remove_stale_temps,
    write_json,
)
from dgm_runner.io.checkpoint import load_checkpoint
from tests.helpers import REPO

_WRITER = textwrap.dedent(
    """
    import os, sys, torch
    from dgm_runner.io.atomic import write_json
    from dgm_runner.io.checkpoint import save_checkpoint

    d = sys.argv[1]
    # Two distinct valid contents of different sizes: a torn file can be neither.
    JSON = {"A": {"v": "A", "pad": "a" * 50_000}, "B": {"v": "B", "pad": "b" * 70_000}}
    CKPT = {
        "A": {"v": "A", "w": torch.full((250_000,), 1.0)},
        "B": {"v": "B", "w": torch.full((350_000,), 2.0)},
    }

    def write(tag):
        write_json(os.path.join(d, "metrics.json"), JSON[tag])
        save_checkpoint(os.path.join(d, "last.pt"), CKPT[tag])

    write("A")  # both files exist before the first kill
    print("ready", flush=True)
    for line in sys.stdin:  # "fork": start a writer that rewrites both files until killed
        if line.strip() == "fork":
            pid = os.fork()
            if pid == 0:
                i = 0
                while True:
                    write("AB"[i % 2])
                    i += 1
            print(pid, flush=True)
        elif line.startswith("reap"):
            os.waitpid(int(line.split()[1]), 0)
            print("reaped", flush=True)
    """
)


def test_atomic_writes_survive_sigkill_at_random_moments(tmp_path):
    """A writer rewriting a JSON file and a checkpoint (alternating two valid contents) is
    SIGKILLed 20 times at random moments: each time both files hold the old or the new
    content, never a torn one, and leftover temp files are recognisable and removable."""
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    server = subprocess.Popen(
        [sys.executable, str(script), str(data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    rng = random.Random(9)
    seen = {"A": 0, "B": 0}
    try:
        assert server.stdout.readline().strip() == "ready"
        for _ in range(20):
            server.stdin.write("fork\n")
            server.stdin.flush()
            pid = int(server.stdout.readline())
            time.sleep(rng.uniform(0.005, 0.15))
            os.kill(pid, signal.SIGKILL)
            server.stdin.write(f"reap {pid}\n")
            server.stdin.flush()
            assert server.stdout.readline().strip() == "reaped"

            meta = json.loads((data_dir / "metrics.json").read_text())
            assert (
                meta["v"] in ("A", "B")
                and meta["pad"] == meta["v"].lower() * {"A": 50_000, "B": 70_000}[meta["v"]]
            )
            ckpt = load_checkpoint(data_dir / "last.pt")
            value, size = {"A": (1.0, 250_000), "B": (2.0, 350_000)}[ckpt["v"]]
            assert ckpt["w"].shape == (size,) and bool((ckpt["w"] == value).all())
            seen[ckpt["v"]] += 1
            # Anything else in the directory is a temp file that no reader could mistake.
            others = [p for p in data_dir.iterdir() if p.name not in ("metrics.json", "last.pt")]
            assert all(is_temp_file(p) for p in others), others
            assert sorted(p.name for p in data_dir.glob("*.pt")) == ["last.pt"]
            assert sorted(p.name for p in data_dir.glob("*.json")) == ["metrics.json"]
    finally:
        server.kill()
        server.wait()
    assert seen["A"] + seen["B"] == 20
    remove_stale_temps(data_dir)
    assert sorted(p.name for p in data_dir.iterdir()) == ["last.pt", "metrics.json"]


def test_atomic_open_keeps_the_old_file_on_error_and_gives_normal_permissions(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as f:
            f.write('{"v": 2, "half')
            raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # temp file removed
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    atomic_copy(target, tmp_path / "copy.json")
    assert (tmp_path / "copy.json").read_bytes() == target.read_bytes()
    (tmp_path / ".copy.json.abc123.tmp").write_text("left by a killed writer")
    assert [p.name for p in remove_stale_temps(tmp_path)] == [".copy.json.abc123.tmp"]


@pytest.mark.parametrize("where", ["parent is a file", "path is a directory"])
def test_every_failed_write_is_a_one_line_write_error(tmp_path, where):
    """Issue 25 ("disk and paths"): the atomic writer raised ``None`` on EEXIST (a file
    where its directory should be), ending in ``TypeError: exceptions must derive from
    BaseException``; every errno is a WriteError now."""
    if where == "parent is a file":
        (tmp_path / "eval").write_text("a file\n")
        path = tmp_path / "eval" / "metrics.json"
    else:
        path = tmp_path / "metrics.json"
        path.mkdir()
    with pytest.raises(WriteError) as err:
        write_json(path, {"a": 1})
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert [p.name for p in tmp_path.iterdir()] == [path.parts[len(tmp_path.parts)]]


def test_a_second_ctrl_c_inside_a_write_is_an_interrupt_not_a_full_disk(tmp_path):
    """torch.save turns a KeyboardInterrupt that lands inside it (a second Ctrl-C) into
    "PytorchStreamWriter failed writing file": atomic_open re-raises the interrupt, never a
    WriteError that blames the disk (issue 25), and the old file stays."""
    path = tmp_path / "last.pt"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
        with atomic_open(path) as f:
            f.write(b"partial")
            try:
                raise KeyboardInterrupt("second SIGINT: aborting without a checkpoint")
            except KeyboardInterrupt:  # torch.save's error, with the interrupt as its context
                raise RuntimeError("PytorchStreamWriter failed writing file")  # noqa: B904
    assert path.read_bytes() == b"old" and list(tmp_path.iterdir()) == [path]
