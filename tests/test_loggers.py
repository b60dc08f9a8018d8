"""logger=mlflow and logger=wandb: what each writes, read back from their own stores (an
MLflow file store in tmp_path, W&B's offline ``.wandb`` files), resuming into the same run,
the helpers they share, and the one-line error when the package is missing.

The end-to-end runs train ``dsm_toy2d`` (2-D points generated from a seed: no data files)
for one or two epochs of 4 steps."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dgm_runner.config import ConfigError, validate
from dgm_runner.epoch import DivergedError
from dgm_runner.io.layout import RunPaths
from dgm_runner.io.loggers import grid_to_uint8, run_name, sweep_group
from dgm_runner.io.signals import StopRequested
from tests.helpers import SMALL, lines

# A tiny dsm_toy2d run: 256 points, 4 steps of 64 per epoch, a train log every 2 steps.
TOY = [
    "experiment=dsm_toy2d",
    *SMALL,
    "dataset.n_test=400",
    "trainer.n_samples=64",
    "trainer.log_every=2",
    "sample_metrics.distance.n=64",
    "sampler.steps_per_level=5",
    "model.hidden_dim=32",
    "~figures",
]
CONFIG = {
    "experiment_name": "toy",
    "model": {"latent_dim": 2, "channels": [16, 32]},
    "trainer": {"epochs": 1, "note": "x" * 7000},
}


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """W&B's user files in tmp_path, no mode from the environment; W&B's service process
    and process-wide settings are torn down afterwards."""
    import wandb

    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / var.lower()))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    yield
    wandb.teardown()


def _train(compose_cfg, run_dir, *overrides):
    from dgm_runner.loop import train

    return train(compose_cfg(*TOY, *overrides), run_dir)


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _history(client, run_id, key):
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


# ----------------------------------------------------------------------------- helpers


def test_sweep_group_and_run_name(tmp_path):
    plain = tmp_path / "outputs" / "toy" / "2025-01-01_00-00-00_000001"
    assert sweep_group(plain) is None
    assert run_name(plain) == "toy/2025-01-01_00-00-00_000001"
    job = tmp_path / "outputs" / "multirun" / "toy" / "2025-01-01_00-00-00_000002" / "3"
    assert sweep_group(job) == "multirun/toy/2025-01-01_00-00-00_000002"
    assert sweep_group(job.parent / "4") == sweep_group(job)
    assert run_name(job) == "multirun/toy/2025-01-01_00-00-00_000002/3"


def test_grid_to_uint8():
    grey = torch.tensor([[[0.0, 0.5], [1.0, 2.0]]])  # (1, 2, 2); 2.0 is clamped
    assert grid_to_uint8(grey).tolist() == [[0, 128], [255, 255]]
    rgb = torch.zeros(3, 4, 5)
    rgb[1] = 1.0
    out = grid_to_uint8(rgb)
    assert out.shape == (4, 5, 3) and out.dtype.name == "uint8"
    assert out[0, 0].tolist() == [0, 255, 0]


def test_logger_configs_validate(compose_cfg):
    validate(compose_cfg(*TOY, "logger=mlflow", "logger.tracking_uri=sqlite:///x.db"))
    validate(compose_cfg(*TOY, "logger=wandb", "logger.mode=online", "logger.group=g"))
    with pytest.raises(ConfigError, match="logger.mode"):
        validate(compose_cfg(*TOY, "logger=wandb", "logger.mode=cloud"))


@pytest.mark.parametrize(
    "module, cls, extra",
    [("mlflow", "MLflowLogger", "mlflow"), ("wandb", "WandbLogger", "wandb")],
)
def test_missing_package_is_one_line_config_error(tmp_path, monkeypatch, module, cls, extra):
    import importlib

    logger_cls = getattr(importlib.import_module(f"dgm_runner.io.loggers_{extra}"), cls)
    for name in [m for m in sys.modules if m == module or m.startswith(f"{module}.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ConfigError) as err:
        logger_cls(run_dir=tmp_path / "run", config=CONFIG)
    message = str(err.value)
    assert message.startswith(f"logger={extra} needs ")
    assert f"pip install 'dgm-runner[{extra}]'" in message and "\n" not in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("extra", ["mlflow", "wandb"])
def test_a_run_with_a_missing_logger_package_is_refused_before_any_work(
    tmp_path, monkeypatch, compose_cfg, extra
):
    monkeypatch.setitem(sys.modules, extra, None)  # find_spec: not installed
    with pytest.raises(ConfigError, match=rf"pip install 'dgm-runner\[{extra}\]'"):
        _train(compose_cfg, tmp_path / "run", f"logger={extra}")
    assert not (tmp_path / "run").exists()  # no run directory, no failed record


# ----------------------------------------------------------------------------- MLflow


def test_mlflow_logs_and_a_new_logger_on_the_run_dir_appends(tmp_path, monkeypatch):
    from dgm_runner.io.loggers_mlflow import MLflowLogger

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = (tmp_path / "store").as_uri()
    run_dir = tmp_path / "outputs" / "multirun" / "toy" / "T1" / "0"
    logger = MLflowLogger(run_dir=run_dir, config=CONFIG, tracking_uri=uri)
    logger.scalars({"train/loss": 2.0}, 10)
    logger.scalars({"test/loss": 1.5, "test/bad(tag)": 3.0}, 20)
    logger.image("samples", torch.full((1, 4, 6), 0.5), 20)
    logger.close()

    stored = json.loads((run_dir / "mlflow_run.json").read_text())
    assert stored["run_id"] == logger.run_id and stored["tracking_uri"] == uri
    client = _client(uri)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "multirun/toy/T1/0"
    assert run.data.tags["sweep"] == "multirun/toy/T1"
    assert run.data.tags["run_dir"] == str(run_dir.resolve())
    assert client.get_experiment(run.info.experiment_id).name == "toy"
    assert _history(client, logger.run_id, "train/loss") == [(10, 2.0)]
    assert _history(client, logger.run_id, "test/loss") == [(20, 1.5)]
    assert _history(client, logger.run_id, "test/bad_tag_") == [(20, 3.0)]
    assert run.data.params["model.latent_dim"] == "2"
    assert run.data.params["model.channels"] == "[16, 32]"
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    assert run.data.params["trainer.note"] == "x" * MAX_PARAM_VAL_LENGTH  # 7000 cut to 6000
    assert [a.path for a in client.list_artifacts(logger.run_id)] == ["config.yaml", "samples"]
    assert [a.path for a in client.list_artifacts(logger.run_id, "samples")] == [
        "samples/step_000020.png"
    ]
    png = Path(client.download_artifacts(logger.run_id, "samples/step_000020.png", tmp_path))
    from PIL import Image

    pixels = np.asarray(Image.open(png))
    assert pixels.shape == (4, 6) and set(pixels.ravel().tolist()) == {128}

    # A resumed run: a new logger on the same run dir, launched from elsewhere, no URI
    # configured: it finds the store and the run in mlflow_run.json and appends.
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    resumed_config = {**CONFIG, "trainer": {"epochs": 2, "note": "y"}}
    again = MLflowLogger(run_dir=run_dir, config=resumed_config)
    assert again.run_id == logger.run_id
    assert client.get_run(logger.run_id).info.status == "RUNNING"
    again.scalars({"train/loss": 1.0}, 30)
    again.hparams({"trainer.epochs": 2}, {"test/loss": 1.25})
    again.close()
    again.close()  # a second close is a no-op
    assert not (tmp_path / "elsewhere" / "mlruns").exists()
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED"
    assert _history(client, logger.run_id, "train/loss") == [(10, 2.0), (30, 1.0)]
    assert _history(client, logger.run_id, "final/test/loss") == [(30, 1.25)]
    assert run.data.params["trainer.epochs"] == "1"  # MLflow keeps a param's first value
    text = client.download_artifacts(logger.run_id, "config.yaml", tmp_path / "c")
    assert yaml.safe_load(Path(text).read_text())["trainer"]["epochs"] == 2
    assert len(client.search_runs([run.info.experiment_id])) == 1


@pytest.mark.parametrize(
    "error, status",
    [(DivergedError("nan"), "FAILED"), (StopRequested("stop"), "KILLED"), (None, "FINISHED")],
)
def test_mlflow_status_tells_how_the_run_ended(tmp_path, error, status):
    from dgm_runner.io.loggers_mlflow import MLflowLogger

    uri = (tmp_path / "store").as_uri()
    logger = MLflowLogger(run_dir=tmp_path / "run", config=CONFIG, tracking_uri=uri)

    def end():
        try:
            if error is not None:
                raise error
        finally:  # as the loop does
            logger.close()

    if error is None:
        end()
    else:
        with pytest.raises(type(error)):
            end()
    assert _client(uri).get_run(logger.run_id).info.status == status


def test_mlflow_end_to_end_default_store_and_resume(tmp_path, monkeypatch, compose_cfg):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # the default store is ./mlruns of the launch directory
    run_dir = tmp_path / "outputs" / "dsm_toy2d" / "T"
    first = _train(compose_cfg, run_dir, "logger=mlflow")
    stored = json.loads((run_dir / "mlflow_run.json").read_text())
    assert stored["tracking_uri"] == (tmp_path / "mlruns").as_uri()
    assert (tmp_path / "mlruns").is_dir()
    client = _client(stored["tracking_uri"])
    run_id = stored["run_id"]
    assert _history(client, run_id, "test/dsm_loss") == [(4, pytest.approx(first["test/dsm_loss"]))]

    final = _train(
        compose_cfg, run_dir, "logger=mlflow", f"trainer.resume={run_dir}", "trainer.epochs=2"
    )
    assert json.loads((run_dir / "mlflow_run.json").read_text())["run_id"] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "dsm_toy2d/T"
    assert "sweep" not in run.data.tags
    assert len(client.search_runs([run.info.experiment_id])) == 1
    assert client.get_experiment(run.info.experiment_id).name == "dsm_toy2d"
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert _history(client, run_id, "test/dsm_loss") == [
        (r["step"], pytest.approx(r["test/dsm_loss"])) for r in records
    ]
    assert [s for s, _ in _history(client, run_id, "test/dsm_loss")] == [4, 8]
    train_steps = lines(run_dir / "train_history.jsonl", "step")
    train_loss = lines(run_dir / "train_history.jsonl", "train/dsm_loss")
    assert _history(client, run_id, "train/dsm_loss") == [
        (s, pytest.approx(v)) for s, v in zip(train_steps, train_loss)
    ]
    assert _history(client, run_id, "final/test/dsm_loss") == [
        (4, pytest.approx(first["test/dsm_loss"])),
        (8, pytest.approx(final["test/dsm_loss"])),
    ]
    assert [a.path for a in client.list_artifacts(run_id, "samples")] == [
        "samples/step_000004.png",
        "samples/step_000008.png",
    ]
    assert run.data.params["experiment_name"] == "dsm_toy2d"
    assert run.data.params["model.hidden_dim"] == "32"


# ----------------------------------------------------------------------------- W&B

_BLOCK = 32768  # W&B's .wandb files: a 7-byte header, then LevelDB-log records of protobufs


def _wandb_records(path: Path):
    """The protobuf records of a ``.wandb`` file (LevelDB log format: 32 KiB blocks, each
    record ``crc32 (4) | length (2) | type (1: full, 2: first, 3: middle, 4: last)``)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, i, chunks = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while i + 7 <= len(data):
        if _BLOCK - i % _BLOCK < 7:  # block trailer padding
            i += _BLOCK - i % _BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[i : i + 7])
        if length == 0 and kind == 0:  # zero padding up to the end of the block
            i += _BLOCK - i % _BLOCK
            continue
        if i + 7 + length > len(data):  # a record still being written
            return
        chunks += data[i + 7 : i + 7 + length]
        i += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def _wandb_run(offline_dir: Path, timeout: float = 30.0) -> dict:
    """``{"run": RunRecord, "history": {step: {key: value}}, "summary": {key: value},
    "exit_code": int}`` of one offline run folder. ``run.finish()`` returns before W&B's
    service process has written the last records, so this waits for the exit record."""
    deadline = time.monotonic() + timeout
    while True:
        out: dict = {"history": {}, "summary": {}, "exit_code": None}
        for record in _wandb_records(next(offline_dir.glob("run-*.wandb"))):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                out["run"] = record.run
            elif kind == "history":
                row = {
                    (i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                    for i in record.history.item
                }
                out["history"][record.history.step.num] = row
            elif kind == "summary":
                for i in record.summary.update:
                    out["summary"][i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
            elif kind == "exit":
                out["exit_code"] = record.exit.exit_code
        if out["exit_code"] is not None or time.monotonic() > deadline:
            return out
        time.sleep(0.05)


def test_wandb_offline_logs_merges_a_step_and_resumes_the_same_id(tmp_path, wandb_env):
    from dgm_runner.io.loggers_wandb import WandbLogger

    run_dir = tmp_path / "outputs" / "multirun" / "toy" / "T2" / "1"
    logger = WandbLogger(run_dir=run_dir, config=CONFIG)
    logger.scalars({"train/loss": 2.0}, 5)
    logger.scalars({"test/loss": 1.5}, 5)  # the evaluation at the step of a train log
    logger.image("samples", torch.full((3, 4, 6), 1.0), 5)
    logger.scalars({"train/loss": 1.0}, 10)
    logger.hparams({}, {"test/loss": 1.25})
    logger.close()
    run_id = json.loads((run_dir / "wandb_run.json").read_text())["run_id"]
    assert run_id == logger.run_id and len(run_id) == 8

    (first,) = (run_dir / "wandb").glob("offline-run-*")
    assert first.name.endswith(f"-{run_id}")
    got = _wandb_run(first)
    assert got["run"].run_id == run_id and got["run"].project == "dgm_runner"
    assert got["run"].run_group == "multirun/toy/T2"
    assert got["run"].display_name == "multirun/toy/T2/1"
    assert sorted(got["history"]) == [5, 10]
    row = got["history"][5]
    assert (row["train/loss"], row["test/loss"]) == (2.0, 1.5)
    assert row["samples/_type"] == "image-file" and (
        row["samples/width"],
        row["samples/height"],
    ) == (6, 4)
    assert (first / "files" / row["samples/path"]).is_file()
    assert got["history"][10]["train/loss"] == 1.0
    assert got["summary"]["test/loss"] == 1.25
    assert got["exit_code"] == 0

    again = WandbLogger(run_dir=run_dir, config=CONFIG, group="mine")
    again.scalars({"train/loss": 0.5}, 15)
    again.close()
    assert again.run_id == run_id
    # each launch adds a folder offline-run-<time>-<id> (-1, -2, ... within one second)
    (second_dir,) = set((run_dir / "wandb").glob("offline-run-*")) - {first}
    assert f"-{run_id}" in second_dir.name
    second = _wandb_run(second_dir)
    assert second["run"].run_id == run_id and second["run"].run_group == "mine"
    assert sorted(second["history"]) == [15] and second["history"][15]["train/loss"] == 0.5


def test_wandb_end_to_end_and_failure_exit_code(tmp_path, wandb_env, compose_cfg):
    from dgm_runner.io.loggers_wandb import WandbLogger

    run_dir = tmp_path / "outputs" / "dsm_toy2d" / "T"
    final = _train(compose_cfg, run_dir, "logger=wandb")
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    got = _wandb_run(offline)
    assert got["run"].display_name == "dsm_toy2d/T" and got["run"].run_group == "dsm_toy2d"
    assert got["run"].run_id == json.loads((run_dir / "wandb_run.json").read_text())["run_id"]
    steps = lines(run_dir / "train_history.jsonl", "step")
    assert sorted(got["history"]) == steps == [2, 4]
    last = got["history"][4]  # the last train log and the evaluation share step 4
    assert last["train/dsm_loss"] == pytest.approx(
        lines(run_dir / "train_history.jsonl", "train/dsm_loss")[1]
    )
    assert last["test/dsm_loss"] == pytest.approx(final["test/dsm_loss"])
    assert last["samples/_type"] == "image-file"
    assert got["summary"]["test/dsm_loss"] == pytest.approx(final["test/dsm_loss"])
    assert got["exit_code"] == 0

    logger = WandbLogger(run_dir=tmp_path / "failed", config=CONFIG)
    with pytest.raises(DivergedError):
        try:
            raise DivergedError("nan")
        finally:
            logger.close()
    (offline,) = (tmp_path / "failed" / "wandb").glob("offline-run-*")
    assert _wandb_run(offline)["exit_code"] == 1


_NO_NETWORK = r"""
import atexit, json, socket, sys
tried = []
atexit.register(lambda: open(sys.argv[2], "w").write(json.dumps(tried)))  # runs last
real_gai, real_connect = socket.getaddrinfo, socket.socket.connect
def gai(host, *a, **k):
    tried.append(["getaddrinfo", str(host)])
    raise socket.gaierror("no network in this test")
def connect(self, address):
    local = ("127.0.0.1", "::1", "localhost")
    if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in local:
        tried.append(["connect", str(address)])
        raise OSError("no network in this test")
    return real_connect(self, address)
socket.getaddrinfo, socket.socket.connect = gai, connect
import torch
from dgm_runner.io.loggers_wandb import WandbLogger
logger = WandbLogger(run_dir=sys.argv[1], config={"experiment_name": "toy"})
logger.scalars({"train/loss": 1.0}, 1)
logger.image("samples", torch.zeros(1, 2, 2), 1)
logger.close()
"""


def test_wandb_offline_never_tries_the_network(tmp_path, wandb_env):
    tried = tmp_path / "tried.json"
    proc = subprocess.run(
        [sys.executable, "-c", _NO_NETWORK, str(tmp_path / "run"), str(tried)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(tried.read_text()) == []
    assert proc.stdout == "" and "wandb" not in proc.stderr.lower()
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))


# ----------------------------------------------------------------------------- failures
# A logger never ends a run (issue 25, item 5): every failure of a logger, when it starts or
# later, is one warning line and a disabled logger; the run completes; a stop signal during
# a wait on the store is the run's own stop; a failing close hides no error.


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _completed_with_one_warning(run_dir: Path, caplog, capfd, name: str, call: str) -> str:
    """The run completed, the only warning is the one line disabling logger ``name`` after
    ``call`` failed, and nothing printed a traceback. Returns that line."""
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
    (line,) = _warnings(caplog)
    assert line.startswith(f"logger {name} disabled after {call} failed: "), line
    assert line.endswith("training goes on (results are in the run directory)")
    assert "\n" not in line
    assert "Traceback" not in capfd.readouterr().err
    return line


@contextlib.contextmanager
def _silent_store(refuse: bool = False):
    """A local TCP port where an MLflow server would be: one that accepts connections and
    never answers (a hung server), or, with ``refuse``, nothing listening (refused at once).
    Yields ``(uri, server socket or None)``."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    uri = f"http://127.0.0.1:{server.getsockname()[1]}"
    if refuse:
        server.close()
        yield uri, None
        return
    server.listen(8)
    try:
        yield uri, server
    finally:
        server.close()


@pytest.mark.parametrize("how", ["a file in its path", "EROFS"])
def test_an_mlflow_store_that_cannot_be_written_at_start_disables_the_logger(
    tmp_path, monkeypatch, compose_cfg, caplog, capfd, how
):
    from mlflow.tracking import MlflowClient

    caplog.set_level(logging.WARNING)
    (tmp_path / "blocker").write_text("a file where the store's directory would be")
    uri = (tmp_path / "blocker" / "mlruns").as_uri()
    if how == "EROFS":
        uri = (tmp_path / "store").as_uri()

        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "store"))

        monkeypatch.setattr(MlflowClient, "create_experiment", read_only)
    run_dir = tmp_path / "run"
    _train(compose_cfg, run_dir, "logger=mlflow", f"logger.tracking_uri={uri}")
    _completed_with_one_warning(run_dir, caplog, capfd, "mlflow", "start")


@pytest.mark.parametrize("refuse", [False, True], ids=["hung", "refused"])
def test_an_unreachable_mlflow_store_is_given_up_after_timeout_s(
    tmp_path, compose_cfg, caplog, capfd, refuse
):
    caplog.set_level(logging.WARNING)
    run_dir = tmp_path / "run"
    with _silent_store(refuse) as (uri, _):
        start = time.monotonic()
        _train(
            compose_cfg,
            run_dir,
            "logger=mlflow",
            f"logger.tracking_uri={uri}",
            "logger.timeout_s=1",
        )
        took = time.monotonic() - start
    line = _completed_with_one_warning(run_dir, caplog, capfd, "mlflow", "start")
    assert "logger.timeout_s=1 s" in line or "Connection refused" in line
    assert took < 30  # one wait of at most 1 s, then a plain run (MLflow alone: minutes)


def test_an_mlflow_store_failing_mid_run_is_one_warning_and_the_run_completes(
    tmp_path, monkeypatch, compose_cfg, caplog, capfd
):
    from mlflow.tracking import MlflowClient

    caplog.set_level(logging.WARNING)
    real, calls = MlflowClient.log_batch, []

    def turns_read_only(self, *args, **kwargs):  # the params, one train log, then EROFS
        calls.append(args)
        if len(calls) >= 3:
            raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "store"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", turns_read_only)
    run_dir = tmp_path / "run"
    final = _train(
        compose_cfg,
        run_dir,
        "logger=mlflow",
        f"logger.tracking_uri={(tmp_path / 'store').as_uri()}",
    )
    line = _completed_with_one_warning(run_dir, caplog, capfd, "mlflow", "scalars")
    assert "OSError: [Errno 30] Read-only file system" in line
    assert len(calls) == 3  # nothing more was sent to the broken store
    assert final["status"] == "completed" and (run_dir / "checkpoints" / "last.pt").is_file()


def test_a_file_where_the_wandb_folder_should_be_disables_the_logger(
    tmp_path, wandb_env, compose_cfg, caplog, capfd
):
    run_dir = tmp_path / "run"
    _train(compose_cfg, run_dir, "logger=none")
    (run_dir / "wandb").write_text("not a folder")
    caplog.set_level(logging.WARNING)
    capfd.readouterr()
    final = _train(
        compose_cfg, run_dir, "logger=wandb", f"trainer.resume={run_dir}", "trainer.epochs=2"
    )
    line = _completed_with_one_warning(run_dir, caplog, capfd, "wandb", "start")
    assert "Not a directory" in line and final["epoch"] == 2


def test_wandb_online_without_a_login_disables_the_logger(
    tmp_path, wandb_env, monkeypatch, compose_cfg, caplog, capfd
):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    real_connect = socket.socket.connect

    def local_only(self, address):  # no network: only this machine's sockets
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in (
            "127.0.0.1",
            "::1",
            "localhost",
        ):
            raise OSError("no network in this test")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)
    caplog.set_level(logging.WARNING)
    run_dir = tmp_path / "run"
    with _silent_store(refuse=True) as (uri, _):
        monkeypatch.setenv("WANDB_BASE_URL", uri)  # were a request made: refused locally
        _train(compose_cfg, run_dir, "logger=wandb", "logger.mode=online")
    line = _completed_with_one_warning(run_dir, caplog, capfd, "wandb", "start")
    assert "wandb login" in line


def test_ctrl_c_while_waiting_for_the_mlflow_store_is_the_runs_own_stop(
    tmp_path, compose_cfg, caplog
):
    caplog.set_level(logging.WARNING)
    run_dir = tmp_path / "run"
    cfg = compose_cfg(*TOY, "logger=mlflow")  # timeout_s: 30 s
    from dgm_runner.loop import train

    with _silent_store() as (uri, server):
        cfg.logger.tracking_uri = uri
        server.settimeout(60)

        def interrupt_when_the_logger_calls():
            with contextlib.suppress(OSError):
                server.accept()  # the logger's first request is waiting for an answer
                time.sleep(0.2)
                os.kill(os.getpid(), signal.SIGINT)

        watcher = threading.Thread(target=interrupt_when_the_logger_calls, daemon=True)
        watcher.start()
        try:
            train(cfg, run_dir)
            err = None
        except BaseException as caught:  # KeyboardInterrupt before the fix
            err = caught
        watcher.join(5)
    assert isinstance(err, StopRequested), repr(err)
    assert str(err) == "SIGINT received during the start of the logger", str(err)
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"
    assert _warnings(caplog) == []


def test_a_failing_close_never_hides_the_error_that_ended_the_run(
    tmp_path, monkeypatch, compose_cfg, caplog, capfd
):
    from torch.utils.tensorboard import SummaryWriter

    from dgm_runner.io.atomic import WriteError

    def no_space(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    from dgm_runner import run as run_module

    real_append = run_module.append_jsonl

    def cannot_write(path, *records):  # the first evaluation's record: the disk is full
        if path.name != RunPaths.METRICS_LOG:
            return real_append(path, *records)
        raise WriteError(f"cannot write {path}: no space left on device")

    monkeypatch.setattr(SummaryWriter, "close", no_space)
    monkeypatch.setattr("dgm_runner.run.append_jsonl", cannot_write)
    caplog.set_level(logging.WARNING)
    with pytest.raises(WriteError, match="metrics.jsonl"):
        _train(compose_cfg, tmp_path / "run", "logger=tensorboard")
    (line,) = _warnings(caplog)
    assert line == (
        "logger tensorboard: close failed: OSError: [Errno 28] No space left on device "
        "(the run's results are in the run directory)"
    )


class _Failing:
    """A logger whose ``scalars`` raises ``error``; counts its calls."""

    name = "failing"

    def __init__(self, error):
        self.error, self.calls = error, []

    def scalars(self, values, step):
        self.calls.append(("scalars", step))
        raise self.error

    def image(self, tag, grid, step):
        self.calls.append(("image", step))

    def close(self):
        self.calls.append(("close",))


def test_guarded_logger_disables_after_a_failure_and_lets_stops_through(caplog):
    from mlflow.exceptions import MlflowException

    from dgm_runner.io.loggers import GuardedLogger

    caplog.set_level(logging.WARNING)
    inner = _Failing(ValueError("bad value\nsecond line"))
    guarded = GuardedLogger(inner, "failing")
    guarded.scalars({"a": 1.0}, 1)
    guarded.image("samples", torch.zeros(1, 2, 2), 1)
    guarded.close()
    assert inner.calls == [("scalars", 1)] and guarded.failed == "scalars"
    assert _warnings(caplog) == [
        "logger failing disabled after scalars failed: ValueError: bad value; training goes "
        "on (results are in the run directory)"
    ]

    # A stop raised inside a library that wraps every exception (MLflow's HTTP retries).
    try:
        try:
            raise StopRequested("SIGINT received during the evaluation of epoch 1")
        except Exception as err:
            raise MlflowException(f"API request failed: {err}")  # noqa: B904 - as MLflow does
    except MlflowException as wrapped:
        stop_inside = wrapped
    with pytest.raises(StopRequested, match="SIGINT received"):
        GuardedLogger(_Failing(stop_inside), "failing").scalars({}, 1)
    with pytest.raises(KeyboardInterrupt):
        GuardedLogger(_Failing(KeyboardInterrupt()), "failing").scalars({}, 1)
    assert len(_warnings(caplog)) == 1
