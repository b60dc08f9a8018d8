"""Runs that survive (issue 9): writes that survive SIGKILL, hostile checkpoints, hostile
data, config values drawn by hypothesis, and run directories that are never overwritten."""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import math
import os
import random
import re
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import time
import typing
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf, open_dict

from dgm_runner import CONFIG_DIR
from dgm_runner.config import (
    RUNTIME_ARGS,
    ConfigError,
    Range,
    TrainerConfig,
    _target_hints,
    validate,
)
from dgm_runner.data import DataError, load_vision_dataset, vision
from dgm_runner.io.atomic import atomic_copy, atomic_open, is_temp_file, remove_stale_temps, write_json
from dgm_runner.io.checkpoint import CheckpointError, load_checkpoint
from dgm_runner.io.lock import LOCK_NAME
from dgm_runner.io.run_dir import check_run_dir
from dgm_runner.run import train
from tests.conftest import SMALL, needs_mnist
from tests.idx_files import idx_images, idx_labels, write_mnist

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dgm_runner", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``directory`` but the (empty) lock file: relative path -> (sha256, mtime_ns)."""
    return {
        str(p.relative_to(directory)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != LOCK_NAME
    }


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower()]


# --------------------------------------------------------------------------- atomic writes

_WRITER = textwrap.dedent(
    """
    import os, sys, torch
    from dgm_runner.io.atomic import write_json
    from dgm_runner.io.checkpoint import save_checkpoint

    d = sys.argv[1]
    # Two distinct valid contents of different sizes: a torn file can be neither.
    JSON = {"A": {"v": "A", "pad": "a" * 50_000}, "B": {"v": "B", "pad": "b" * 70_000}}
    CKPT = {"A": {"v": "A", "w": torch.full((250_000,), 1.0)}, "B": {"v": "B", "w": torch.full((350_000,), 2.0)}}

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
        [sys.executable, str(script), str(data_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, cwd=REPO,
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
            assert meta["v"] in ("A", "B") and meta["pad"] == meta["v"].lower() * {"A": 50_000, "B": 70_000}[meta["v"]]
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


# --------------------------------------------------------------------------- hostile checkpoints

@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A finished run, with the .hydra/ files and train.log that the CLI would add (made
    in-process: a CLI launch costs seconds of start-up)."""
    from hydra import compose, initialize_config_dir

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


@needs_mnist
def test_resume_with_another_config_is_one_line_and_changes_nothing(cli_run):
    before = _snapshot(cli_run)
    proc = _cli("experiment=vae_mlp", *SMALL, "logger=none", "model.latent_dim=3", "trainer.epochs=2",
                f"trainer.resume={cli_run}")
    assert proc.returncode == 1
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and errors[0].startswith("dgm-train: error: CheckpointError")
    assert "different model config" in errors[0]
    assert _snapshot(cli_run) == before  # not even .hydra/ or metrics.json


@needs_mnist
def test_resume_from_a_truncated_checkpoint_changes_nothing(cli_run, compose_cfg, tmp_path):
    broken = tmp_path / "broken"
    (broken / "checkpoints").mkdir(parents=True)
    good = (cli_run / "checkpoints" / "last.pt").read_bytes()
    (broken / "checkpoints" / "last.pt").write_bytes(good[: len(good) // 3])
    (broken / "metrics.json").write_text('{"status": "completed"}\n')
    before = _snapshot(broken)
    cfg = compose_cfg("experiment=vae_mlp", *SMALL, "logger=none", "trainer.epochs=2", f"trainer.resume={broken}")
    with pytest.raises(CheckpointError) as err:
        train(cfg, broken)
    assert "not a readable safe checkpoint" in str(err.value) and "\n" not in str(err.value)
    assert _snapshot(broken) == before


@needs_mnist
def test_dgm_eval_of_a_checkpoint_that_does_not_fit_its_config(cli_run, compose_cfg, tmp_path):
    """A checkpoint whose weights belong to another model (latent_dim 3) but whose config
    says latent_dim 20: one error line, the run directory untouched (no eval.json)."""
    other = tmp_path / "other"
    train(compose_cfg("experiment=vae_mlp", *SMALL, "logger=none", "model.latent_dim=3"), other)
    mine = load_checkpoint(cli_run / "checkpoints" / "last.pt")
    theirs = load_checkpoint(other / "checkpoints" / "last.pt")
    frankenstein = tmp_path / "frankenstein.pt"
    torch.save({**mine, "model": theirs["model"]}, frankenstein)
    before = _snapshot(cli_run)
    proc = subprocess.run([_script("dgm-eval"), str(cli_run), f"checkpoint={frankenstein}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and errors[0].startswith("dgm-eval: error: CheckpointError")
    assert "do not fit" in errors[0]
    after = _snapshot(cli_run)
    assert {k: v for k, v in after.items() if k != "eval.log"} == before  # Hydra's own (empty) job log


# --------------------------------------------------------------------------- run directories

@needs_mnist
def test_train_refuses_a_directory_that_holds_a_run(cli_run, compose_cfg):
    before = _snapshot(cli_run)
    cfg = compose_cfg("experiment=vae_mlp", *SMALL, "logger=none")
    with pytest.raises(ConfigError) as err:
        train(cfg, cli_run)
    message = str(err.value)
    assert "already holds a run" in message and f"trainer.resume={cli_run}" in message and "\n" not in message
    other = compose_cfg("experiment=vae_mlp", *SMALL, "logger=none", f"trainer.resume={cli_run.parent}")
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
    from dgm_runner.run import main  # the slow part: imports
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
    procs = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
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


# --------------------------------------------------------------------------- hostile data

_idx_images, _idx_labels, _write_mnist = idx_images, idx_labels, write_mnist


def _good(n: int = 20, size: int = 28, seed: int = 0) -> tuple[bytes, bytes, bytes, bytes]:
    return (_idx_images(n, size, size, seed), _idx_labels([i % 10 for i in range(n)]),
            _idx_images(10, size, size, seed + 1), _idx_labels(list(range(10))))


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DGM_DATA_DIR", raising=False)
    vision._load_uint8.cache_clear()
    yield tmp_path / "cache"
    vision._load_uint8.cache_clear()


def _corrupt(kind: str) -> tuple[bytes, bytes, bytes, bytes]:
    train_x, train_y, test_x, test_y = _good()
    if kind == "bad magic":
        train_x = b"\x12\x34\x56\x78" + train_x[4:]
    elif kind == "truncated pixels":
        train_x = train_x[:-100]
    elif kind == "trailing bytes":
        train_x = train_x + b"\x00" * 7
    elif kind == "empty file":
        train_x = b""
    elif kind == "labels for images":
        train_x = train_y
    elif kind == "truncated header":
        train_x = train_x[:10]
    return train_x, train_y, test_x, test_y


@pytest.mark.parametrize("kind, says", [
    ("bad magic", "not an IDX image file"),
    ("truncated pixels", "truncated"),
    ("trailing bytes", "trailing bytes"),
    ("empty file", "shorter than an IDX header"),
    ("labels for images", "not an IDX image file"),
    ("truncated header", "truncated IDX header"),
])
def test_corrupt_idx_files_are_one_line_data_errors_and_never_cached(fresh_cache, tmp_path, kind, says):
    root = _write_mnist(tmp_path / "src", *_corrupt(kind), gz=kind != "empty file")
    with pytest.raises(DataError) as err:
        load_vision_dataset("mnist", root=str(root), download=False)
    message = str(err.value)
    assert says in message and "train-images-idx3-ubyte" in message and "\n" not in message
    assert not (fresh_cache / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()


def test_truncated_gzip_stream_is_a_data_error(fresh_cache, tmp_path):
    root = _write_mnist(tmp_path / "src", *_good())
    gz = root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:200])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz .*unreadable.*end-of-stream"):
        load_vision_dataset("mnist", root=str(root), download=False)


def test_corrupt_file_in_the_cache_names_it(fresh_cache):
    raw = fresh_cache / "MNIST" / "raw"
    _write_mnist(fresh_cache, *_good(), gz=False)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(_idx_labels(list(range(10)))[:-3])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte is not a valid IDX file: truncated.*delete it"):
        load_vision_dataset("mnist", download=False)


def test_labels_out_of_range_and_count_mismatch(fresh_cache, tmp_path):
    train_x, _, test_x, test_y = _good()
    bad_labels = _write_mnist(tmp_path / "a", train_x, _idx_labels([12] * 20), test_x, test_y)
    with pytest.raises(DataError, match=r"mnist/train: labels outside \[0, 10\)"):
        load_vision_dataset("mnist", root=str(bad_labels), download=False)
    vision._load_uint8.cache_clear()
    short = _write_mnist(tmp_path / "b", train_x, _idx_labels([1] * 15), test_x, test_y)
    with pytest.raises(DataError, match=r"mnist/train: 20 images but labels of shape \(15,\)"):
        load_vision_dataset("mnist", root=str(short), download=False)


def test_the_cache_follows_the_source(fresh_cache, tmp_path):
    """Two sources with different data through one cache: each load gets its own source
    (the cache used to keep the first source's files and serve them for any root)."""
    first = _write_mnist(tmp_path / "first", *_good(n=20, seed=0))
    second = _write_mnist(tmp_path / "second", *_good(n=30, seed=5))
    a = load_vision_dataset("mnist", root=str(first), download=False)
    vision._load_uint8.cache_clear()
    b = load_vision_dataset("mnist", root=str(second), download=False)
    assert a.train_x.shape[0] == 20 and b.train_x.shape[0] == 30
    vision._load_uint8.cache_clear()
    assert torch.equal(load_vision_dataset("mnist", root=str(first), download=False).train_x, a.train_x)


def test_data_too_small_for_the_model_is_a_config_error(fresh_cache, tmp_path, compose_cfg):
    """14x14 digits given to models that need 28x28 (or sizes divisible by 4): one line
    naming the model before any training; nothing written but the empty folders."""
    root = _write_mnist(tmp_path / "small", *_good(n=64, size=14))
    for experiment, says in (("vae_cnn", "needs 1x28x28 images"), ("gan_mnist", "DCGAN needs (C, 28, 28)")):
        run_dir = tmp_path / experiment
        cfg = compose_cfg(f"experiment={experiment}", f"dataset.root={root}", "dataset.download=false",
                          "logger=none", "trainer.progress=false")
        with pytest.raises(ConfigError) as err:
            train(cfg, run_dir)
        assert says in str(err.value) and "(1, 14, 14)" in str(err.value) and "\n" not in str(err.value)
        assert not [p for p in run_dir.rglob("*") if p.is_file() and p.name != LOCK_NAME]


# --------------------------------------------------------------------------- config properties

_GROUPS = tuple(RUNTIME_ARGS)  # model, dataset, objective, sampler, logger
_EXPERIMENTS = ("rbm_cdk", "vae_mlp", "vae_bce", "dsm_toy2d", "score_sde_mnist", "gan_mnist", "vqvae_fashion")


@pytest.fixture(scope="module")
def composed():
    """Each experiment composed once; the property tests mutate deep copies."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return {e: compose("train", overrides=[f"experiment={e}"]) for e in _EXPERIMENTS}


def _spec(hint) -> dict | None:
    """What a type hint allows, read from the annotation itself: ``kind`` (int, float,
    bool, literal), bounds from ``Range``, ``optional`` and ``choices``."""
    optional = False
    origin = typing.get_origin(hint)
    if origin is typing.Union or (origin is not None and "UnionType" in str(origin)):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            return None
        optional, hint, origin = True, args[0], typing.get_origin(args[0])
    rng = Range()
    if origin is typing.Annotated:
        base, *meta = typing.get_args(hint)
        rng = next((m for m in meta if isinstance(m, Range)), Range())
        hint, origin = base, typing.get_origin(base)
    if origin is typing.Literal:
        return {"kind": "literal", "choices": typing.get_args(hint), "optional": optional}
    if hint in (int, float, bool):
        return {"kind": hint.__name__, "range": rng, "optional": optional}
    return None


def _fields(cfg) -> list[tuple[str, dict]]:
    """(dotted key, spec) of every checkable field of a composed config."""
    out = []
    container = OmegaConf.to_container(cfg, resolve=True)
    for group in _GROUPS:
        hints = _target_hints(group, container[group]["_target_"])
        for name, hint in sorted(hints.items()):
            spec = _spec(hint)
            if spec and name not in RUNTIME_ARGS[group]:
                out.append((f"{group}.{name}", spec))
    trainer_hints = typing.get_type_hints(TrainerConfig, include_extras=True)
    for f in fields(TrainerConfig):
        spec = _spec(trainer_hints[f.name])
        if spec:
            out.append((f"trainer.{f.name}", spec))
    return out


_BIG = 10**9


def _int_bounds(r: Range) -> tuple[int | None, int | None]:
    lo = r.ge if r.ge is not None else (math.floor(r.gt) + 1 if r.gt is not None else None)
    hi = r.le if r.le is not None else (math.ceil(r.lt) - 1 if r.lt is not None else None)
    return (None if lo is None else math.ceil(lo)), (None if hi is None else math.floor(hi))


def _valid(spec: dict) -> st.SearchStrategy:
    kind = spec["kind"]
    if kind == "literal":
        strategy = st.sampled_from(spec["choices"])
    elif kind == "bool":
        strategy = st.booleans()
    else:
        r = spec["range"]
        lo, hi = _int_bounds(r)
        ints = st.integers(-_BIG if lo is None else lo, _BIG if hi is None else hi)
        if kind == "int":
            strategy = ints
        else:
            low = r.ge if r.ge is not None else r.gt
            high = r.le if r.le is not None else r.lt
            floats = st.floats(
                min_value=-1e12 if low is None else low, max_value=1e12 if high is None else high,
                exclude_min=r.gt is not None, exclude_max=r.lt is not None, allow_nan=False, allow_infinity=False,
            )
            strategy = floats | ints if lo is None or hi is None or lo <= hi else floats
    return strategy | st.none() if spec["optional"] else strategy


def _invalid(spec: dict) -> st.SearchStrategy:
    kind = spec["kind"]
    wrong_type = st.text(max_size=5).filter(lambda s: s not in spec.get("choices", ()))
    options = [wrong_type] if kind != "literal" else [wrong_type, st.integers()]
    if not spec["optional"]:
        options.append(st.none())
    if kind == "bool":
        options.append(st.integers())
    if kind in ("int", "float"):
        options.append(st.booleans())
        r = spec["range"]
        if kind == "int":
            options.append(st.floats(allow_nan=True))  # 2.0 is not an integer either
            lo, hi = _int_bounds(r)
            if lo is not None:
                options.append(st.integers(max_value=lo - 1))
            if hi is not None:
                options.append(st.integers(min_value=hi + 1))
        else:
            options.append(st.sampled_from([math.nan, math.inf, -math.inf]))
            if r.ge is not None:
                options.append(st.floats(max_value=r.ge, exclude_max=True, allow_nan=False, allow_infinity=False))
            if r.gt is not None:
                options.append(st.floats(max_value=r.gt, allow_nan=False, allow_infinity=False))
            if r.le is not None:
                options.append(st.floats(min_value=r.le, exclude_min=True, allow_nan=False, allow_infinity=False))
            if r.lt is not None:
                options.append(st.floats(min_value=r.lt, allow_nan=False, allow_infinity=False))
    return st.one_of(options)


def _with(cfg, key: str, value):
    """A copy of ``cfg`` with ``key`` set (added, like ``+key=value``, if the YAML leaves
    it to the constructor's default)."""
    out = copy.deepcopy(cfg)
    with open_dict(out):
        OmegaConf.update(out, key, value, merge=False)
    return out


def test_the_property_tests_see_the_annotated_fields(composed):
    keys = {k for cfg in composed.values() for k, _ in _fields(cfg)}
    for key in ("trainer.epochs", "trainer.batch_size", "trainer.lr", "trainer.eval_every", "trainer.log_every",
                "trainer.ema_decay", "trainer.optimizer", "model.latent_dim", "objective.k", "sampler.steps",
                "dataset.subset", "dataset.threshold", "objective.likelihood", "model.hidden_dim"):
        assert key in keys, key


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_invalid_value_is_rejected_naming_its_key(composed, data):
    experiment = data.draw(st.sampled_from(_EXPERIMENTS), label="experiment")
    key, spec = data.draw(st.sampled_from(_fields(composed[experiment])), label="field")
    value = data.draw(_invalid(spec), label="value")
    with pytest.raises(ConfigError) as err:
        validate(_with(composed[experiment], key, value))
    message = str(err.value)
    assert key in message and "\n" not in message


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_valid_value_is_rejected(composed, data):
    experiment = data.draw(st.sampled_from(_EXPERIMENTS), label="experiment")
    key, spec = data.draw(st.sampled_from(_fields(composed[experiment])), label="field")
    value = data.draw(_valid(spec), label="value")
    validate(_with(composed[experiment], key, value))


def test_betas_are_checked_element_by_element(composed):
    cfg = composed["vae_mlp"]
    validate(_with(cfg, "trainer.betas", [0.0, 0.99]))
    for bad, says in (([0.9], "list of 2 values"), ([0.9, 1.0], "trainer.betas[1]=1.0 is invalid: must be < 1"),
                      ([-0.1, 0.9], "trainer.betas[0]"), (["a", 0.9], "must be a number"), (0.9, "must be a list")):
        with pytest.raises(ConfigError, match=re.escape(says)):
            validate(_with(cfg, "trainer.betas", bad))


def _entries(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


_CHOICE_GROUPS = ("model", "dataset", "objective", "sampler", "logger", "experiment", "sweep")
# Entry names as people type them (Hydra would read null, true, nan, inf, 1e3 as non-strings).
_NAME = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True).filter(
    lambda s: s not in {"null", "true", "false", "nan", "inf"}
)


def _checkers():
    from dgm_runner import config, run

    return [run.check_group_choices, config.check_group_choices]


@settings(max_examples=40, deadline=None)
@given(group=st.sampled_from(_CHOICE_GROUPS), data=st.data())
def test_group_choices_reject_unknown_entries_and_accept_known_ones(group, data):
    known = _entries(group)
    good = data.draw(st.lists(st.sampled_from(known), min_size=1, max_size=3), label="good")
    bad = data.draw(_NAME.filter(lambda s: s not in known), label="bad")
    where = data.draw(st.integers(0, len(good)), label="where")
    for check in _checkers():
        check([f"{group}={','.join(good)}", "trainer.lr=1e-3"])  # no error
        with pytest.raises(ConfigError) as err:
            check([f"{group}={','.join(good[:where] + [bad] + good[where:])}"])
        assert str(err.value) == f"{group}={bad}: unknown {group}; allowed values are {', '.join(known)}"


def test_group_choices_accept_every_hydra_syntax_for_a_group():
    from dgm_runner.config import check_group_choices

    for argv in (["-m", "model=choice(rbm,vae_mlp)"], ["-m", "experiment=glob(vae_*)"], ["logger=null"],
                 ["model='rbm'"], ["-m", "model='rbm',\"vae_mlp\""], ["~logger"], ["+model=rbm"],
                 ["hydra/launcher=joblib"], ["model@x=rbm"]):
        check_group_choices(argv)
    with pytest.raises(ConfigError, match="^model=bar: unknown model"):
        check_group_choices(["-m", "model=choice(rbm,bar)"])
    with pytest.raises(ConfigError, match="^model=foo: unknown model"):
        check_group_choices(["model=\"foo\""])
