"""Shared fixtures: an isolated cache, config composition, a finished run to be hostile to.
What test files import (paths, skip marks, shrink overrides, helpers) is in
``tests/helpers.py``; importing it here also points DGM_DATA_DIR at the offline data."""

from __future__ import annotations

import logging
import os
import uuid

# Under pytest-xdist (``make test`` runs 2 workers), every worker and every process it starts
# runs torch with one thread, set before torch is imported: 2 workers x 1 thread fill the 2
# cores without oversubscribing them, and ``trainer.num_threads=auto`` (never above a limit
# already set) then picks 1 in every run, so two runs a test compares share their float
# rounding whatever the other worker is doing.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import tests.helpers  # noqa: F401  (sets DGM_DATA_DIR to the offline copy when unset)
from dgm_runner import CONFIG_DIR
from tests import processes
from tests.helpers import SMALL


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Decompress datasets into a per-session cache, never into the user's."""
    os.environ["DGM_CACHE_DIR"] = str(tmp_path_factory.mktemp("dgm_cache"))


#: Set by :func:`_no_process_left_behind` to a value unique to this session: every process
#: a test starts inherits it, however deep and even once re-parented.
SESSION_ENV = "DGM_TEST_SESSION"
#: How long processes may take to end after the last test before they count as left behind.
GRACE_S = 10.0


@pytest.fixture(autouse=True)
def _logging_as_it_was():
    """Each test leaves the logging set-up as it found it. A command run in-process
    (``main()`` of dgm-train / dgm-eval / dgm-sample) has Hydra configure logging with
    handlers on the streams of that test's capture, which are closed afterwards: a later
    test's warning would then print "--- Logging error ---" with a traceback. The handlers
    a test added are removed (and closed), the ones it removed come back."""
    loggers = [logging.getLogger(name) for name in (None, "dgm_runner", "hydra")]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, handlers, level, propagate in saved:
        for handler in lg.handlers[:]:
            if handler not in handlers:
                lg.removeHandler(handler)
                if not type(handler).__module__.startswith("_pytest"):
                    handler.close()
        for handler in handlers:
            if handler not in lg.handlers:
                lg.addHandler(handler)
        lg.setLevel(level)
        lg.propagate = propagate


@pytest.fixture(scope="session", autouse=True)
def _no_process_left_behind():
    """At the end of the session, no process that a test started still runs (issue 25,
    item 7): each one left after :data:`GRACE_S` is killed and the session fails, listing
    them. "Started by this session" is this process's descendants plus whatever carries
    :data:`SESSION_ENV` with this session's value (children inherit it, so a worker whose
    parent was killed still counts); other sessions' processes, pytest's threads and this
    process's multiprocessing helpers are not. Linux only (``/proc``); elsewhere no check.
    """
    if not processes.PROC.is_dir():
        yield
        return
    marker = os.environ[SESSION_ENV] = f"{os.getpid()}-{uuid.uuid4().hex}"
    yield
    left = processes.started_by(os.getpid(), f"{SESSION_ENV}={marker}")
    left = processes.still_alive(left, within_s=GRACE_S)
    if left:
        processes.kill(left)
        pytest.fail(
            f"{len(left)} process(es) started by the tests still ran {GRACE_S:g} s after the "
            "last test ended (killed now):\n" + "\n".join(map(str, left)),
            pytrace=False,
        )


@pytest.fixture
def compose_cfg():
    """``compose_cfg("experiment=vae_mlp", "trainer.epochs=1")`` -> the composed train config."""

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose("train", overrides=list(overrides))

    return _compose


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory):
    """A finished run, with the .hydra/ files and train.log that the CLI would add (made
    in-process: a CLI launch costs seconds of start-up). Shared by the tests of
    test_hostile_checkpoints.py and test_run_dirs.py, which leave it as it was."""
    from dgm_runner.loop import train

    run_dir = tmp_path_factory.mktemp("hostile") / "run"
    overrides = ["experiment=vae_mlp", *SMALL, "logger=none"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    train(cfg, run_dir)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run_dir / "train.log").write_text("[...] epoch 1/1\n")
    return run_dir


# The opt-in Inception FID (dgm_runner.metrics.inception) without its real weights, which
# cannot be downloaded here: a file of their layout with random values.
@pytest.fixture(scope="session")
def fake_weights_file(tmp_path_factory):
    """A state dict of torch-fidelity's Inception-v3 with its keys and shapes but the random
    values of a fresh module (its constructor always loads weights: here an empty dict,
    ignored), saved as the real file is."""

    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Random(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True):  # keep the random initialisation
            return None

    root = tmp_path_factory.mktemp("inception_src")
    torch.save({}, root / "empty.pt")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = _Random("random", ["2048"], feature_extractor_weights_path=str(root / "empty.pt"))
    path = root / "fake.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture
def fake_weights(fake_weights_file, tmp_path, monkeypatch):
    """The fake file in a fresh cache, pinned as :data:`inception.WEIGHTS` (the real pin
    would refuse it)."""
    import dataclasses

    from dgm_runner.io.checkpoint import file_sha256
    from dgm_runner.metrics import inception

    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path))
    pinned = dataclasses.replace(inception.WEIGHTS, sha256=file_sha256(fake_weights_file))
    monkeypatch.setattr(inception, "WEIGHTS", pinned)
    dest = inception.weights_path()
    dest.parent.mkdir(parents=True)
    dest.symlink_to(fake_weights_file)
    return dest
