"""Run directories are never overwritten (issue 9): dgm-train (in-process and through the
CLI) refuses a directory that holds a run, and two launches in the same second get two
directories."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import time

import pytest

from dgm_runner.config import ConfigError
from dgm_runner.io.run_dir import check_run_dir
from dgm_runner.loop import train
from tests.helpers import SMALL, needs_mnist
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


def test_launches_in_the_same_second_get_two_directories(tmp_path):
    """Two CLI launches that compose their config in the same second (both wait, after
    their imports, for the same instant just past a second boundary) get two run dirs."""
    target = math.ceil(time.time()) + 8.05
    args = [sys.executable, "-c", _AT, str(target), "experiment=vae_mlp", "model.latent_dim=0"]
    procs = [
        subprocess.Popen(
            args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    stderr = [p.communicate(timeout=120)[1] for p in procs]
    for p, err in zip(procs, stderr):
        assert p.returncode == 2, err[-2000:]  # invalid value: fails after Hydra made its directory
    dirs = sorted((tmp_path / "outputs" / "vae_mlp").iterdir())
    assert len(dirs) == 2, dirs
    if all("on time" in err for err in stderr):  # (a machine too slow to import in 8 s: no claim)
        assert dirs[0].name[:19] == dirs[1].name[:19]  # the same second, told apart by microseconds
    for d in dirs:
        assert (d / ".hydra" / "config.yaml").is_file()
        assert json.loads((d / "metrics.json").read_text())["status"] == "failed"
