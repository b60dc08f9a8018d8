"""Install anywhere, build on it (issue 17): the wheel works outside the checkout, and a
user's own model, objective and sampler (docs/extending_example, the example of
docs/extending.md) train, resume and sweep through ``dgm-train`` without an edit inside the
package, pass ``dgm_runner.testing``'s contract checks, and get the usual one-line errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import tomllib

from tests.helpers import REPO, needs_mnist, script

EXAMPLE = REPO / "docs" / "extending_example"


def test_the_package_list_names_every_package_of_the_tree():
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "dgm_runner").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert listed == on_disk | {"dgm_runner.configs"}


def _run(cmd: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@needs_mnist
def test_a_wheel_installed_outside_the_checkout_trains_and_reports_fid(tmp_path):
    """The wheel (not editable), built from the sdist (so both carry the config tree and
    the shipped classifiers), in a fresh venv whose only dgm_runner is the wheel's; the
    dependencies come from this environment through a .pth path line (no download)."""
    sdists = tmp_path / "sdist"
    made = _run(
        [
            sys.executable,
            "-c",
            f"from setuptools import build_meta; build_meta.build_sdist({str(sdists)!r})",
        ],
        cwd=REPO,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    (sdist,) = sdists.glob("dgm_runner-*.tar.gz")
    wheels = tmp_path / "wheels"
    built = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(sdist),
        ],
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr
    venv = tmp_path / "venv"
    assert (
        _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path).returncode == 0
    )
    python = venv / "bin" / "python"
    site = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path
    )
    Path(site.stdout.strip(), "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    wheel = next(wheels.glob("dgm_runner-*.whl"))
    installed = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            str(wheel),
        ],
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stderr
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    where = _run(
        [str(python), "-c", "import dgm_runner; print(dgm_runner.__file__, dgm_runner.CONFIG_DIR)"],
        empty,
    )
    module, configs = where.stdout.split()
    assert module.startswith(str(venv)) and configs.startswith(str(venv)), where.stdout
    out = _run(
        [str(venv / "bin" / "dgm-train"), "+debug=smoke", "dataset.subset=2000", "logger=none"],
        cwd=empty,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (run_dir,) = (empty / "outputs" / "rbm_cdk").iterdir()  # ./outputs of the directory
    final = json.loads((run_dir / "metrics.json").read_text())
    assert final["status"] == "completed" and final["test/fid"] > 0
    assert final["test/fid_classifier_shipped"] == 1.0
    assert f"run completed after 1 epochs: outputs/rbm_cdk/{run_dir.name}" in out.stdout
    assert (
        "fid " in out.stdout
        and str(run_dir.relative_to(empty) / "samples" / "final.png") in out.stdout
    )


@pytest.fixture
def project(tmp_path):
    """A copy of docs/extending_example: my_components.py beside configs/."""
    dst = tmp_path / "my_project"
    shutil.copytree(EXAMPLE, dst, ignore=shutil.ignore_patterns("outputs", "__pycache__"))
    return dst


def _train(project: Path, *args: str) -> subprocess.CompletedProcess:
    return _run([script("dgm-train"), "--config-dir", "configs", *args], cwd=project)


@needs_mnist
def test_a_third_party_model_trains_resumes_and_sweeps_without_touching_the_package(project):
    first = _train(project, "experiment=my_beta_vae", "+debug=smoke", "logger=none")
    assert first.returncode == 0, first.stderr[-2000:]
    (run_dir,) = (project / "outputs" / "my_beta_vae").iterdir()
    final = json.loads((run_dir / "metrics.json").read_text())
    assert final["monitor"] == "test/beta_loss" and final["test/beta_loss"] > final["test/loss"]
    # a run of one's own components is read with the same --config-dir (issue 25, item 1);
    # without it, its _target_s are code this command does not trust: one line, no grid
    sampled = _run(
        [script("dgm-sample"), "--config-dir", "configs", str(run_dir), "n=4"], cwd=project
    )
    assert sampled.returncode == 0 and "wrote" in sampled.stdout, sampled.stderr[-2000:]
    refused = _run([script("dgm-sample"), str(run_dir), "n=4", "seed=1"], cwd=project)
    errors = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 1 and len(errors) == 1, refused.stderr[-2000:]
    assert errors[0].startswith("dgm-sample: error: UnsafeConfig: ")
    assert "DGM_TRUSTED_MODULES=my_components" in errors[0]
    assert not list((run_dir / "samples").glob("*seed1*"))
    resumed = _train(
        project,
        "experiment=my_beta_vae",
        "+debug=smoke",
        "logger=none",
        "trainer.epochs=2",
        f"trainer.resume={run_dir}",
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((run_dir / "metrics.json").read_text())["epoch"] == 2
    swept = _train(
        project,
        "-m",
        "experiment=my_beta_vae",
        "+debug=smoke",
        "logger=none",
        "~sample_metrics.fid",
        "model.latent_dim=4,8",
    )
    assert swept.returncode == 0, swept.stderr[-2000:]
    (sweep,) = (project / "outputs" / "multirun" / "my_beta_vae").iterdir()
    summary = (sweep / "summary.csv").read_text()
    assert summary.count("completed") == 2, summary


@needs_mnist
@pytest.mark.parametrize(
    "args, message",
    [
        (["model._target_=my_components.NoSuchVAE"], "my_components.NoSuchVAE"),
        (["model.latent_dim=-3"], "model.latent_dim"),
        (["model=my_vea"], "allowed values are"),
        (["objective.bta=2"], "did you mean objective.beta"),
    ],
)
def test_a_broken_third_party_config_gets_one_line(project, args, message):
    out = _train(project, "experiment=my_beta_vae", "+debug=smoke", "logger=none", *args)
    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if line.startswith("dgm-train: error:")]
    assert len(errors) == 1 and message in errors[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    if args == ["model=my_vea"]:
        assert "my_vae" in errors[0] and "vae_mlp" in errors[0]  # the user's and the package's


@needs_mnist
def test_the_contract_checks_run_on_third_party_components(project, monkeypatch, tmp_path, caplog):
    from dgm_runner.testing import check_experiment, check_objective, check_sampler

    monkeypatch.syspath_prepend(str(project))
    from my_components import BetaELBO, MyVAE, TemperedSampler

    shape = (1, 28, 28)
    check_sampler(TemperedSampler(), MyVAE(shape, latent_dim=4, hidden_dim=8), shape)
    check_objective(BetaELBO(), MyVAE(shape, latent_dim=4, hidden_dim=8), shape)
    caplog.set_level("INFO", logger="dgm_runner")
    final = check_experiment(["experiment=my_beta_vae", "~sample_metrics.fid"], project / "configs")
    assert final["status"] == "completed"
    # what it runs and its time (each step's progress shows once it has run 2 s)
    said = [r.getMessage() for r in caplog.records]
    assert (
        said[0]
        == "check_experiment experiment=my_beta_vae ~sample_metrics.fid: a smoke run (+debug=smoke)"
    )
    assert re.fullmatch(r"check_experiment .*: passed in \d+\.\d s", said[-1])

    class Frozen(BetaELBO):  # a broken objective: its loss never reaches the parameters
        def loss(self, model, batch):
            loss, terms = super().loss(model, batch)
            return loss.detach().requires_grad_(), terms

    with pytest.raises(AssertionError, match="changed nothing"):
        check_objective(Frozen(), MyVAE(shape, latent_dim=4, hidden_dim=8), shape)
