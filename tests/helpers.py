"""What several test files share, imported as ``from tests.helpers import ...``: the
offline data location, skip conditions, the shrink overrides of smoke runs, and small
functions over run directories and CLI launches. Fixtures live in ``conftest.py``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dgm_runner.io.layout import RunPaths
from dgm_runner.io.lock import LOCK_NAME

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

# Offline MNIST (CI and course machines); an explicit DGM_DATA_DIR wins.
if not os.environ.get("DGM_DATA_DIR") and (SHARED_DATA / "MNIST").is_dir():
    os.environ["DGM_DATA_DIR"] = str(SHARED_DATA)

# Small-but-real settings for smoke runs on MNIST: configs/debug/smoke.yaml (256 training
# and 200 test images, one epoch of batches of 64, no progress bar, 16 samples per grid),
# the same overrides users get from `dgm-train ... +debug=smoke`. Later overrides win.
SMALL = ["+debug=smoke"]


def has_mnist() -> bool:
    """Whether the offline MNIST copy is reachable."""
    root = os.environ.get("DGM_DATA_DIR")
    return bool(root) and (Path(root) / "MNIST" / "raw").is_dir()


def has_fashion_mnist() -> bool:
    """Whether an offline Fashion-MNIST copy is reachable (Debian's dataset-fashion-mnist
    or ``$DGM_DATA_DIR/FashionMNIST/raw``)."""
    dirs = [FASHION_SYSTEM_DIR]
    if os.environ.get("DGM_DATA_DIR"):
        dirs.append(Path(os.environ["DGM_DATA_DIR"]) / "FashionMNIST" / "raw")
    return any(d.is_dir() and any(d.glob("train-images-idx3-ubyte*")) for d in dirs)


needs_mnist = pytest.mark.skipif(
    not has_mnist(), reason="offline MNIST not found (set DGM_DATA_DIR)"
)
needs_fashion = pytest.mark.skipif(
    not has_fashion_mnist(),
    reason="Fashion-MNIST not found in /usr/share/datasets/fashion-mnist "
    "(apt-get install dataset-fashion-mnist)",
)

# A 1-epoch vae_mlp run without FID or export: the run the resume / stop tests start from.
VAE = [
    "experiment=vae_mlp",
    *SMALL,
    "logger=none",
    "~sample_metrics.fid",
    "trainer.export_name=null",
]


def snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    """Every file but the lock: relative path -> (sha256, mtime_ns)."""
    return {
        str(p.relative_to(directory)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != LOCK_NAME
    }


def lines(path: Path, key: str) -> list:
    """``key`` of every line of a JSON-lines file."""
    return [json.loads(line)[key] for line in path.read_text().splitlines()]


def unnamed_files(run_dir: Path, epochs: int, figures=(), export: str | None = None) -> list[str]:
    """The files of the finished run ``run_dir`` (trained ``epochs`` epochs, evaluated
    after each, with the figures ``figures`` and the exported state_dict ``export``) that
    :class:`RunPaths` does not name, relative to ``run_dir``: ``[]`` when the run holds
    only the contract. TensorBoard's event files count as named by ``tb/``, dgm-eval's
    records by ``eval/``, and the logs of dgm-eval / dgm-sample run on it by
    :meth:`RunPaths.job_log`."""
    paths = RunPaths(run_dir)
    named = {
        *(paths.last, paths.best, paths.metrics, paths.metrics_log, paths.history, paths.log),
        *(paths.lock, paths.config_yaml, paths.overrides_yaml, paths.hydra_yaml),
        *(paths.grid(epoch) for epoch in range(1, epochs + 1)),
        paths.final_grid,
        *(paths.figure(name) for name in figures),
        *([paths.export(export)] if export else []),
        *(paths.job_log(job) for job in ("eval", "sample")),
    }
    return sorted(
        str(p.relative_to(run_dir))
        for p in run_dir.rglob("*")
        if p.is_file() and p not in named and p.parent not in (paths.tb, paths.eval_dir)
    )


def cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m dgm_runner *args`` (dgm-train), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "dgm_runner", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def script(name: str) -> str:
    """The path of an installed console script (``dgm-eval``, ...) of this environment."""
    return str(Path(sys.executable).parent / name)


def error_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` that mention an error."""
    return [line for line in stderr.splitlines() if "error" in line.lower()]


def one_line_error(main, argv: list[str], kind: str, says: str, monkeypatch, capsys) -> int:
    """Run a console script's ``main()`` in-process under ``sys.argv = argv`` (``argv[0]``:
    the tool, ``dgm-eval``) and check the one-line contract: it exits with a non-zero
    status and prints exactly one line on stderr, ``<tool>: error: <kind>: ...`` containing
    ``says``, and no traceback. Not a sweep worker (the sweep-driver variable is cleared).

    Returns:
        The exit status.
    """
    from dgm_runner.cli.train import DRIVER_ENV

    monkeypatch.setattr(sys, "argv", list(argv))
    monkeypatch.setenv(DRIVER_ENV, "")
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    found = [line for line in err.splitlines() if line.strip()]
    assert exit_.value.code not in (0, None), err
    assert len(found) == 1 and "Traceback" not in err, err
    assert found[0].startswith(f"{argv[0]}: error: {kind}: ") and says in found[0], found[0]
    return exit_.value.code


def config_error_line(cfg) -> str:
    """The message of the ConfigError that ``validate(cfg)`` raises, asserted to be one line."""
    from dgm_runner.config import ConfigError, validate

    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = str(info.value)
    assert "\n" not in message, message
    return message
