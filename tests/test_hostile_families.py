"""One case of each family of multi-line failures of issue 25, table-driven: each hostile
input to a console script gives exactly one ``<tool>: error: <Kind>: ...`` line, a non-zero
exit status, no traceback, and leaves the named paths unchanged (checksums and mtimes).
Commands run in-process (their ``main()`` under a patched ``sys.argv``), as in
``test_one_line_errors.py``.

To add a case, add a :class:`Case` row to :data:`CASES`; ``{name}`` in its arguments is the
path ``name`` of the :func:`paths` fixture (add what a new row needs there), and a
``setup(monkeypatch, paths)`` runs first, for what the fixture cannot hold."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import pytest

from dgm_runner.cli import eval as evaluate
from dgm_runner.cli import report, sample, sampler_table, study
from dgm_runner.cli import train as train_cli
from dgm_runner.data import vision
from tests.helpers import VAE, needs_mnist, one_line_error, snapshot
from tests.idx_files import idx_images, idx_labels, write_mnist

pytestmark = needs_mnist

MAINS: dict[str, Callable[[], None]] = {
    "dgm-train": train_cli.main,
    "dgm-eval": evaluate.main,
    "dgm-sample": sample.main,
    "dgm-study": study.main,
    "dgm-report": report.main,
    "dgm-sampler-table": sampler_table.main,
}
#: The apps' own job logs, which also get the error line (Hydra writes them into the run).
LOGS = ("eval.log", "sample.log")


class Case(NamedTuple):
    """One row: ``tool args`` must fail with one line ``tool: error: kind: ...says...``."""

    id: str
    tool: str  # a key of MAINS
    args: list[str]  # "{name}": the path `name` of the `paths` fixture
    kind: str  # the error class named in the line
    says: str  # a substring of the line
    unchanged: tuple[str, ...] = ()  # names of `paths` whose files must not change
    setup: Optional[Callable[[pytest.MonkeyPatch, dict[str, Path]], None]] = None


def _train_on(data: str, run: str) -> list[str]:
    """``dgm-train`` arguments of a small VAE run on the IDX files of ``paths[data]``."""
    return [*VAE, f"dataset.root={{{data}}}", "dataset.download=false", f"hydra.run.dir={run}"]


CASES = [
    Case(
        "data: images of 27x28",
        "dgm-train",
        _train_on("data_27x28", "{new_run}"),
        "DataError",
        "train-images-idx3-ubyte.gz holds 300 images of 27x28 pixels, but MNIST images are 28x28",
        ("data_27x28", "new_run"),
    ),
    Case(
        "data: fewer labels than images under dataset.subset",
        "dgm-train",
        _train_on("data_short_labels", "{new_run}"),  # +debug=smoke: subset=256
        "DataError",
        "train-images-idx3-ubyte.gz holds 300 images but ",
        ("data_short_labels", "new_run"),
    ),
    Case(
        "study: a path for a name",
        "dgm-study",
        ["../../x", "hydra.run.dir={study_run}"],
        "ConfigError",
        "study=../../x: unknown study; allowed values are all, bm_meanfield",
        ("outside", "study_run"),
    ),
    Case(
        "study: a path to a YAML outside configs/study",
        "dgm-study",
        ["study={outside_study}", "hydra.run.dir={study_run}"],
        "ConfigError",
        "unknown study; allowed values are all, bm_meanfield",
        ("outside", "study_run"),
    ),
    Case(
        "eval: checkpoint= a file that is not a checkpoint",
        "dgm-eval",
        ["{run}", "checkpoint=/etc/passwd"],
        "CheckpointError",
        "/etc/passwd is not a readable safe checkpoint: not the zip archive",
        ("run",),
    ),
    Case(
        "eval: checkpoint= a directory",
        "dgm-eval",
        ["{run}", "checkpoint={run}/checkpoints"],
        "CheckpointError",
        "checkpoints is a directory, not a checkpoint file",
        ("run",),
    ),
    # config: bounds checked before any work, and a refused launch creates nothing on disk
    Case(
        "config: a model too large for the memory",
        "dgm-train",
        [*VAE, "model.latent_dim=1000000000", "hydra.run.dir={new_run}"],
        "ConfigError",
        "would have 1.5e+12 parameters",
        ("new_run",),
    ),
    Case(
        "config: too few FID samples for the estimators",
        "dgm-train",
        [
            "experiment=vae_mlp",
            "+debug=smoke",
            "sample_metrics.fid.n_samples=1",
            "hydra.run.dir={new_run}",
        ],
        "ConfigError",
        "sample_metrics.fid: n_samples=1 is too few",
        ("new_run",),
    ),
    Case(
        "config: a rejected value creates no run directory",
        "dgm-train",
        [*VAE, "model.latent_dim=-3", "hydra.run.dir={new_run}/nested"],
        "ConfigError",
        "model.latent_dim=-3 is invalid",
        ("new_run",),
    ),
    Case(
        "config: dgm-sample sampler.steps beyond any schedule",
        "dgm-sample",
        ["{run}", "sampler=gibbs", "sampler.steps=1000000000"],
        "ConfigError",
        "sampler.steps=1000000000 is invalid",
        ("run",),
    ),
    Case(
        "config: a sampler name that leaves configs/sampler",
        "dgm-eval",
        ["{run}", "sampler=../model/vae_mlp"],
        "ConfigError",
        "sampler=../model/vae_mlp is not a sampler",
        ("run",),
    ),
    Case(
        "paths: dgm-sample out= an existing directory",
        "dgm-sample",
        ["{run}", "out={root}"],
        "ConfigError",
        "is a directory: name the image file",
        ("run",),
    ),
    Case(
        "paths: hydra.run.dir under a file",
        "dgm-train",
        [*VAE, "hydra.run.dir={a_file}/run"],
        "ConfigError",
        "hydra.run.dir=",
        ("a_file",),
    ),
    Case(
        "config: dgm-eval fid.n_samples too few for the estimators",
        "dgm-eval",
        ["{run}", "fid.n_samples=1"],
        "ConfigError",
        "n_samples=1 is too few",
        ("run",),
    ),
    Case(
        "paths: dgm-eval of a read-only run directory",
        "dgm-eval",
        ["{run}"],
        "WriteError",
        "Permission denied",
        ("run",),
        lambda mp, paths: mp.setattr("dgm_runner.io.atomic.tempfile.mkstemp", _read_only),
    ),
    Case(
        "data: an offline download names its cause (issue 26)",
        "dgm-train",
        [*VAE, "hydra.run.dir={new_run}"],
        "DataError",
        "download failed: Error downloading train-images-idx3-ubyte.gz: <urlopen error [Errno -2]",
        ("new_run",),
        lambda mp, paths: _offline(mp, paths["root"] / "empty_cache"),
    ),
    Case(
        "config: dgm-sampler-table (a console script since issue 26) with a bad row",
        "dgm-sampler-table",
        ["{run}", "--rows", "nope:10"],
        "ConfigError",
        "sampler=nope is not a sampler",
        ("run",),
    ),
    # one error boundary per process: Ctrl-C and bugs are one line too
    Case(
        "boundary: Ctrl-C while dgm-sample draws",
        "dgm-sample",
        ["{run}", "n=4"],
        "interrupted (SIGINT)",
        "nothing more written",
        ("run",),
        lambda mp, paths: mp.setattr(sample, "draw_samples", _interrupt),
    ),
    Case(
        "paths: dgm-sample never replaces an existing grid unasked (issue 26)",
        "dgm-sample",
        ["{run}", "n=5"],
        "ConfigError",
        "sample_n5_seed0.png exists: pass overwrite=true",
        ("run",),
        lambda mp, paths: _touch(paths["run"] / "samples" / "sample_n5_seed0.png"),
    ),
    Case(
        "boundary: a bug inside a metric of dgm-eval",
        "dgm-eval",
        ["{run}", "~fid"],
        "RuntimeError",
        "boom (full trace in ",
        ("run",),
        lambda mp, paths: mp.setattr(evaluate, "all_test_metrics", _bug),
    ),
]


def _offline(monkeypatch, cache: Path) -> None:
    """No offline copy and no network: torchvision's download fails as it does offline."""
    import torchvision.datasets

    def no_network(*args, **kwargs):
        raise RuntimeError(
            "Error downloading train-images-idx3-ubyte.gz:\nTried https://x/, got:\n"
            "<urlopen error [Errno -2] Name or service not known>\n"
        )

    monkeypatch.delenv("DGM_DATA_DIR", raising=False)
    monkeypatch.setenv("DGM_CACHE_DIR", str(cache))
    monkeypatch.setattr(torchvision.datasets, "MNIST", no_network)


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"an earlier grid")


def _read_only(*args, **kwargs):
    """``tempfile.mkstemp`` on a read-only directory (root writes anywhere, so simulated)."""
    raise PermissionError(13, "Permission denied")


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def _bug(*args, **kwargs):
    raise RuntimeError("boom")


@pytest.fixture(scope="module")
def paths(cli_run, tmp_path_factory) -> dict[str, Path]:
    """The paths the rows name: ``run`` (a copy of the finished ``cli_run``), IDX sources
    ``data_27x28`` (MNIST layout, images of 27x28) and ``data_short_labels`` (300 training
    images, 290 labels), a YAML ``outside`` configs/study (``outside_study``: its path
    relative to configs/study, without ``.yaml``), ``study_run`` (not made) and ``root`` for
    new run directories."""
    from dgm_runner import CONFIG_DIR

    root = tmp_path_factory.mktemp("families")
    run = root / "run"
    shutil.copytree(cli_run, run)

    def labels(n: int) -> bytes:
        return idx_labels([i % 10 for i in range(n)])

    test_x, test_y = idx_images(200, seed=1), labels(200)
    write_mnist(
        root / "data_27x28", idx_images(300, 27, 28), labels(300), idx_images(200, 27, 28), test_y
    )
    write_mnist(root / "data_short_labels", idx_images(300), labels(290), test_x, test_y)
    a_file = root / "a_file.txt"
    a_file.write_text("not a directory\n")
    outside = root / "outside"
    outside.mkdir()
    (outside / "x.yaml").write_text("name: outside\n")  # loaded, it would fail another way
    study_dir = Path(CONFIG_DIR) / "study"
    relative = Path(*[".."] * len(study_dir.resolve().parts[1:])) / outside.relative_to("/")
    return {
        "run": run,
        "data_27x28": root / "data_27x28",
        "data_short_labels": root / "data_short_labels",
        "outside": outside,
        "outside_study": relative / "x",
        "study_run": root / "study",  # where dgm-study would write
        "root": root,
        "new_run": root / "new_run",  # a refused launch must not create it
        "a_file": a_file,
    }


def _files(path: Path) -> dict:
    """The files under ``path`` but the apps' job logs."""
    return {k: v for k, v in snapshot(path).items() if Path(k).name not in LOGS}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_family_fails_in_one_line_and_changes_nothing(
    case: Case, paths, monkeypatch, capsys, tmp_path
):
    monkeypatch.chdir(tmp_path)  # anything a command creates lands here
    vision._load_uint8.cache_clear()
    if case.setup is not None:
        case.setup(monkeypatch, paths)
    args = [a.format(**{k: str(v) for k, v in paths.items()}) for a in case.args]
    before = {name: _files(paths[name]) for name in case.unchanged}
    one_line_error(MAINS[case.tool], [case.tool, *args], case.kind, case.says, monkeypatch, capsys)
    for name in case.unchanged:
        assert _files(paths[name]) == before[name], name


def test_a_run_directory_without_a_writable_job_log_is_still_sampled(
    paths, tmp_path, monkeypatch, capsys
):
    """Disk and paths: a run whose ``sample.log`` cannot be opened (a read-only run
    directory; here a directory in its place, since root writes anywhere) is sampled with
    ``out=`` elsewhere, logging to the console only (Hydra's "Unable to configure handler
    'file'" traceback before issue 25); nothing in the run changes."""
    run = tmp_path / "run"
    shutil.copytree(paths["run"], run)
    (run / "sample.log").unlink(missing_ok=True)  # earlier rows' job log
    (run / "sample.log").mkdir()
    before = snapshot(run)
    out = tmp_path / "grid.png"
    monkeypatch.setattr("sys.argv", ["dgm-sample", str(run), f"out={out}", "n=4"])
    sample.main()
    assert out.is_file() and snapshot(run) == before
    assert "Traceback" not in capsys.readouterr().err


def test_an_edited_hydra_config_falls_back_to_the_checkpoints(paths, tmp_path, monkeypatch, caplog):
    """Edited files: invalid YAML in ``.hydra/config.yaml`` (a 22-line ScannerError before
    issue 25) is one warning, and the run is checked against its ``last.pt``'s config."""
    from dgm_runner.build import restore_run

    run = tmp_path / "run"
    shutil.copytree(paths["run"], run)
    (run / ".hydra" / "config.yaml").write_text("model: {latent_dim: [unclosed\n")
    shutil.copy(run / "checkpoints" / "last.pt", run / "checkpoints" / "copy.pt")
    cfg, _, _ = restore_run(run, str(run / "checkpoints" / "copy.pt"), device="cpu")
    assert cfg.model._target_.startswith("dgm_runner.models.")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "is not a readable config" in warnings[0], warnings


def test_a_grid_is_named_after_every_option_that_changes_it():
    """dgm-sample's default file name encodes the sampler, each sampler.<key>, the labels and
    a checkpoint other than last (issue 26: ``sample_ddim_n64_seed0.png`` for any step count
    replaced earlier grids)."""
    from omegaconf import OmegaConf

    base = OmegaConf.load(Path(sample.CONFIG_DIR) / "sample.yaml")
    base.run_dir = "R"
    named = OmegaConf.merge(
        base,
        {"sampler_name": "ddim", "sampler": {"steps": 20, "eta": 0.5}, "label": [3, 5]},
        {"checkpoint": "best"},
    )
    assert sample.grid_path(named) == Path(
        "R/samples/sample_ddim_eta0.5_steps20_label3-5_best_n64_seed0.png"
    )
    assert sample.grid_path(base) == Path("R/samples/sample_n64_seed0.png")
    assert sample.grid_path(OmegaConf.merge(base, {"out": "x.png"})) == Path("x.png")
