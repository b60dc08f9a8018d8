"""Data-parallel training (trainer.strategy=ddp, dgm_runner.distributed) on CPU with gloo:
2 processes started by torch.multiprocessing (and once by torchrun through the CLI) follow
the 1-process run with the same global batch and seed, write one run directory from
process 0 only, stop together on a signal to one of them and resume bit-exactly.

The equality runs use SGD: Adam divides by sqrt(v), so for near-zero gradients the
float32 reduction-order difference of the all-reduce (1e-7 relative) would become a
visible difference of the update."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from dgm_runner.config import ConfigError
from dgm_runner.distributed import World, shard_of, wants_ddp
from dgm_runner.distributions import batch_draw, sample_bernoulli, shard_rows
from dgm_runner.io.checkpoint import load_checkpoint
from dgm_runner.io.lock import run_lock
from dgm_runner.loop import train
from dgm_runner.testing import compose_train
from tests.helpers import SMALL, needs_mnist

#: Process deaths and collectives with deadlines: run alone (make test runs `serial` last).
pytestmark = pytest.mark.serial

# The experiments' default sample metrics stay on (FID, AIS, bits/dim) at small sizes: process
# 0 computes them alone, and a library metric that entered a collective there would wait for
# the others forever (issue 25: torchmetrics' KID did). dist_timeout_s turns such a deadlock
# into an error instead of a hang where gloo notices it ...
QUIET = [
    *SMALL,
    "logger=none",
    "trainer.num_threads=1",
    "trainer.dist_timeout_s=120",
    "sample_metrics.fid.n_samples=64",
    "sample_metrics.fid.batch_size=64",
]
# ... and since a collective that process 1 never enters is not always ended by that timeout
# (seen with KID's all_gather against a broadcast: both waited past it), the test kills
# the processes and fails after this many seconds.
DEADLINE_S = 420
# 203 training images in global batches of 64: the last batch (11) splits 6 / 5.
UNEVEN = ["dataset.subset=203", "trainer.batch_size=64", "optimizer=sgd"]
RUNS = {
    "vae_mlp": ["experiment=vae_mlp", "model.hidden_dim=32", "optimizer.lr=0.01"],
    # the class-conditional twin (issue 31): the same U-Net and loss plus the label
    # dropout draws and the final FID's class accuracy, which 2 processes must agree on
    "score_unet": [
        "experiment=edm_mnist_cond_cpu",
        "model.net.channels=[8,16,16]",
        "model.net.emb_dim=16",
        "model.net.groups=4",
        "sampler.steps=2",
        "optimizer.lr=1e-4",
        "trainer.ema_decay=null",
        "sample_metrics.bpd.n=4",
        "sample_metrics.bpd.batch_size=4",
    ],
    "rbm_cd": [
        "experiment=rbm_cdk",
        "objective.k=2",
        "sample_metrics.ais.n_runs=8",
        "sample_metrics.ais.schedule_steps=200",
        "sampler.steps=5",
    ],
    "gan": [
        "experiment=gan_mnist",
        "model.g_channels=8",
        "model.d_channels=8",
        "model.g_batchnorm=false",
        "optimizer.lr=0.01",
        "~optimizer.betas",  # Adam's (the experiment's): UNEVEN trains with SGD
    ],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, jobs: list, out_dir: str) -> None:
    """One process of a 2-process run: each job ``(name, overrides, run_dir, env)`` is a
    ``train()`` call; its final metrics or its error go to ``out_dir/<name>.<rank>.json``."""
    for name, overrides, run_dir, env in jobs:
        os.environ.update(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(env.pop("port")),
            RANK=str(rank),
            WORLD_SIZE=str(world),
            LOCAL_RANK=str(rank),
            **env,
        )
        try:
            result = {"final": train(compose_train(overrides), run_dir)}
        except Exception as err:  # reported to the test
            result = {"error": f"{type(err).__name__}: {err}"}
        for key in env:
            os.environ.pop(key, None)
        Path(out_dir, f"{name}.{rank}.json").write_text(json.dumps(result, default=str))
    # Every result is written: leave without the interpreter's teardown. A spawned gloo
    # worker intermittently aborts in C++ destructors at exit ("terminate called without an
    # active exception", SIGABRT, about 1 run in 5 of the flows' 2-process test on a quiet
    # 2-core machine) after its work is done, which mp.spawn reports as a failure of the
    # test. The exit path of real runs is torchrun's, tested by
    # test_torchrun_through_the_cli_makes_one_run_directory.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _spawn(tmp_path: Path, jobs: list[tuple[str, list[str], Path, dict]]) -> dict[str, list]:
    """Run ``jobs`` on 2 processes; ``{name: [result of rank 0, result of rank 1]}``."""
    out = tmp_path / "results"
    out.mkdir(exist_ok=True)
    jobs = [(n, o, str(d), {**e, "port": _free_port()}) for n, o, d, e in jobs]
    context = mp.spawn(_worker, args=(2, jobs, str(out)), nprocs=2, join=False)
    deadline = time.monotonic() + DEADLINE_S
    while not context.join(timeout=2):
        if time.monotonic() > deadline:  # a deadlock: gloo's own timeout does not end it
            for process in context.processes:
                process.kill()
            pytest.fail(f"the 2-process run did not finish in {DEADLINE_S} s (deadlock?)")
    return {
        name: [json.loads((out / f"{name}.{r}.json").read_text()) for r in range(2)]
        for name, *_ in jobs
    }


def _steps(run_dir: Path) -> list[int]:
    """The ``step`` of every line of the run's ``train_history.jsonl``."""
    text = (run_dir / "train_history.jsonl").read_text()
    return [json.loads(line)["step"] for line in text.splitlines()]


def _params(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


# ----------------------------------------------------------------------------- units


def test_shards_cover_the_batch_in_order():
    for n in (1, 2, 11, 64):
        rows = [shard_of(n, World(r, 3)) for r in range(3)]
        assert rows[0][0] == 0 and rows[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
        assert max(b - a for a, b in rows) - min(b - a for a, b in rows) <= 1


def test_a_shard_draws_its_rows_of_the_global_batch():
    torch.manual_seed(0)
    whole = torch.randn(11, 3)
    probs = torch.rand(11, 20000)  # the integer-uniform path of sample_bernoulli
    whole_bits = sample_bernoulli(probs, torch.Generator().manual_seed(1))
    for rank in range(2):
        start, stop = shard_of(11, World(rank, 2))
        torch.manual_seed(0)
        with shard_rows(start, stop - start, 11):
            part = batch_draw(stop - start, lambda m: torch.randn(m, 3))
            bits = sample_bernoulli(probs[start:stop], torch.Generator().manual_seed(1))
        assert torch.equal(part, whole[start:stop]) and torch.equal(bits, whole_bits[start:stop])


def test_strategies_are_checked_against_the_launch(monkeypatch):
    for key in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(key, raising=False)
    assert not wants_ddp("auto", World()) and not wants_ddp("none", World())
    with pytest.raises(ConfigError, match="torchrun"):
        wants_ddp("ddp", World())
    with pytest.raises(ConfigError, match="strategy=none"):
        wants_ddp("none", World(0, 2))
    assert wants_ddp("auto", World(1, 2))


# ----------------------------------------------------------------------------- 2 processes


@needs_mnist
def test_two_processes_follow_one_for_every_kind_of_update(tmp_path):
    """MLP VAE (reparameterised noise), score U-Net (EDM DSM), CD-2 (gradients written in
    closed form, Gibbs draws) and the GAN (D and G optimisers, z draws): the 2-process run
    ends with the 1-process run's parameters and metrics, and PCD is refused in one line."""
    jobs = [(n, [*o, *QUIET, *UNEVEN], tmp_path / f"ddp_{n}", {}) for n, o in RUNS.items()]
    pcd = ["experiment=rbm_cdk", "objective=pcd", *QUIET]
    jobs.append(("pcd", pcd, tmp_path / "ddp_pcd", {}))
    results = _spawn(tmp_path, jobs)
    for name, overrides in RUNS.items():
        single = train(compose_train([*overrides, *QUIET, *UNEVEN]), tmp_path / f"one_{name}")
        ranks = results[name]
        assert "error" not in ranks[0] and "error" not in ranks[1], (name, ranks)
        assert ranks[0]["final"] == ranks[1]["final"], name  # every process returns them
        ddp_params, one_params = (
            _params(tmp_path / f"ddp_{name}"),
            _params(tmp_path / f"one_{name}"),
        )
        for key, value in one_params.items():
            close = torch.allclose(ddp_params[key], value, rtol=1e-4, atol=1e-5)
            assert close, (name, key, float((ddp_params[key] - value).abs().max()))
        final = ranks[0]["final"]
        for key, value in single.items():
            if key.startswith(("test/", "train/")) and isinstance(value, float):
                assert final[key] == pytest.approx(value, rel=1e-3, abs=1e-4), (name, key)
        # one writer: no record twice, exactly the files of a 1-process run
        run = tmp_path / f"ddp_{name}"
        lines = (run / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == 1, name
        history = _steps(run)
        assert history == sorted(set(history)), name
        files = {p.relative_to(run) for p in run.rglob("*") if p.is_file()}
        one = {
            p.relative_to(tmp_path / f"one_{name}")
            for p in (tmp_path / f"one_{name}").rglob("*")
            if p.is_file()
        }
        assert files == one, name
    for rank in range(2):
        assert "ConfigError" in results["pcd"][rank]["error"]
        assert "data-parallel" in results["pcd"][rank]["error"]


@needs_mnist
def test_a_signal_to_one_process_stops_both_and_the_resume_is_bit_exact(tmp_path):
    """SIGTERM to process 1 before step 2 of 4: both finish the step, process 0 saves the
    position; resumed on 2 processes, the run ends with the uninterrupted 2-process run's
    parameters, bit for bit. Resumed on 1 process instead, it continues at the next epoch
    boundary with a warning."""
    base = [
        "experiment=vae_mlp",
        "model.hidden_dim=32",
        "objective._target_=tests.components.SignallingELBO",
        *QUIET,
        *UNEVEN,
        "trainer.epochs=2",
    ]
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    first = _spawn(
        tmp_path,
        [
            ("whole", base, whole, {}),
            ("cut", base, cut, {"DGM_TEST_SIGNAL_AT": "1:2"}),
        ],
    )
    assert "error" not in first["whole"][0]
    for rank in range(2):
        assert first["cut"][rank]["error"].startswith("StopRequested"), first["cut"]
    saved = load_checkpoint(cut / "checkpoints" / "last.pt")
    assert saved["partial"]["batch"] == 3 and saved["step"] == 3 and saved["world_size"] == 2
    other = tmp_path / "other_world"
    shutil.copytree(cut, other)
    resumed = _spawn(tmp_path, [("resume", [*base, f"trainer.resume={cut}"], cut, {})])
    assert "error" not in resumed["resume"][0], resumed
    for key, value in _params(whole).items():
        assert torch.equal(_params(cut)[key], value), key
    assert _steps(cut) == _steps(whole)
    # 1 process: the interrupted epoch ends where it stopped, epoch 2 runs in full
    final = train(compose_train([*base, f"trainer.resume={other}"]), other)
    assert final["status"] == "completed" and final["step"] == 3 + 4
    assert final["epoch"] == 2


@needs_mnist
def test_torchrun_through_the_cli_makes_one_run_directory(tmp_path):
    """``torchrun --nproc_per_node=2 -m dgm_runner``: one run directory (process 0's), no
    scratch directory left, the summary printed once."""
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    args = ["--nproc_per_node=2", "--standalone", "-m", "dgm_runner", "experiment=vae_mlp", *QUIET]
    out = subprocess.run(
        [str(torchrun), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "vae_mlp").iterdir()
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert out.stdout.count("run completed after 1 epochs") == 1
    assert not list((tmp_path / "tmp").glob("dgm_rank*"))
    # into a directory another process holds: process 0 says so in one line, process 1
    # exits quietly (it printed a 25-line traceback before issue 25)
    logs = tmp_path / "logs"
    with run_lock(run_dir):
        locked = subprocess.run(
            [str(torchrun), *args[:2], f"--log-dir={logs}", "--redirects=3", *args[2:]]
            + [f"hydra.run.dir={run_dir}", f"trainer.resume={run_dir}", "trainer.epochs=2"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert locked.returncode != 0
    (main_err,) = logs.rglob("0/stderr.log")
    lines = [line for line in main_err.read_text().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dgm-train: error: RunDirLocked: "), lines
    (other_err,) = logs.rglob("1/stderr.log")
    assert other_err.read_text().strip() == ""


def _rank_pid(parent: int, rank: int) -> int | None:
    """The PID of the torchrun worker of ``rank`` (a child of the agent ``parent``)."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            ppid = int(status.read_text().split("PPid:")[1].split()[0])
            environ = (status.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(status.parent.name)
    return None


@needs_mnist
def test_a_killed_process_leaves_one_line_from_the_survivor(tmp_path):
    """SIGKILL of process 1 in epoch 2 (issue 25): process 0's collective fails; it
    prints one line naming what is kept (the run's last.pt) and where the trace is, and
    exits; process 1's log stays empty. torchrun's own report is torchrun's."""
    torchrun = Path(sys.executable).with_name("torchrun")
    logs = tmp_path / "logs"
    args = [
        "--nproc_per_node=2",
        "--standalone",
        f"--log-dir={logs}",
        "--redirects=3",  # each process's stdout/stderr to its own file
        # torchrun polls its workers every 0.1 s by default: it then sometimes stops process
        # 0 (SIGTERM) before process 0's own collective fails and it writes its line (about
        # 1 run in 4 on the 2-core machine); process 0 notices within ~2 s
        "--monitor-interval=5",
        "-m",
        "dgm_runner",
        "experiment=vae_mlp",
        *QUIET,
        "dataset.subset=20000",
        "trainer.epochs=3",
        "~sample_metrics.fid",
    ]
    proc = subprocess.Popen([str(torchrun), *args], cwd=tmp_path, stderr=subprocess.DEVNULL)
    saved = list((tmp_path / "outputs" / "vae_mlp").glob("*/checkpoints/last.pt"))
    deadline = time.monotonic() + 120
    while not saved and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
        saved = list((tmp_path / "outputs" / "vae_mlp").glob("*/checkpoints/last.pt"))
    victim = _rank_pid(proc.pid, 1)
    assert saved and victim is not None, "the run did not train its first epoch"
    os.kill(victim, 9)
    assert proc.wait(timeout=120) != 0
    (run_dir,) = (tmp_path / "outputs" / "vae_mlp").iterdir()
    (survivor,) = logs.rglob("0/stderr.log")
    lines = [line for line in survivor.read_text().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("dgm-train: error: process 0 of 2 stopped"), lines[0]
    assert f"trainer.resume={run_dir}" in lines[0] and "train.log" in lines[0]
    assert "Traceback" in (run_dir / "train.log").read_text()  # the trace is kept there
    (killed,) = logs.rglob("1/stderr.log")
    assert killed.read_text().strip() == ""


def test_a_sweep_under_torchrun_is_refused_in_one_line(monkeypatch):
    """``torchrun ... -m dgm_runner -m ...``: a data-parallel launch trains one run (the
    command line every torchrun process checks before Hydra starts)."""
    from dgm_runner.cli.train import _data_parallel_argv

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="a torchrun launch trains one run"):
        _data_parallel_argv(["-m", "experiment=vae_mlp"])
    assert _data_parallel_argv(["experiment=vae_mlp"]) == ["experiment=vae_mlp"]
