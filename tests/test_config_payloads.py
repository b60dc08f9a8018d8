"""Configs read from disk are data, never code (issue 25, item 1): a run directory whose
``last.pt`` (plain dicts and tensors, so ``weights_only=True`` loads it) or
``.hydra/config.yaml`` names code in a ``_target_`` is refused in one line by ``dgm-eval``,
``dgm-sample`` and a ``dgm-train`` that reads it as a stage-1 run, before anything is imported
or called: the victim file stays as it was."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from dgm_runner.build import load_run_model
from dgm_runner.cli import eval as evaluate
from dgm_runner.cli import sample
from dgm_runner.cli import train as train_cli
from dgm_runner.io.checkpoint import load_checkpoint
from dgm_runner.io.run_config import UnsafeConfig, check_config, trust_modules, trusted_modules
from dgm_runner.loop import train
from dgm_runner.testing import compose_train
from tests.helpers import VAE, needs_mnist

MAINS = {"dgm-eval": evaluate.main, "dgm-sample": sample.main, "dgm-train": train_cli.main}
PRECIOUS = "precious\n"


def _payloads(run: Path, victim: Path) -> dict[str, dict]:
    """The sampler nodes of the hostile user's checkpoints (issue 25, item 1)."""
    return {
        "copyfile": {
            "_target_": "shutil.copyfile",
            "src": str(run / "payload"),
            "dst": str(victim),
        },
        "open": {"_target_": "builtins.open", "file": str(victim), "mode": "w"},
        "os.system": {"_target_": "os.system", "command": f"echo pwned > {victim}"},
        "subprocess": {"_target_": "subprocess.run", "args": ["sh", "-c", f": > {victim}"]},
        # os.system reached through a component module that imports os (allowed by prefix
        # before: Hydra's get_object walks the attributes)
        "through a module": {
            "_target_": "dgm_runner.data.cache.os.system",
            "command": f"echo pwned > {victim}",
        },
        "_args_": {
            "_target_": "dgm_runner.samplers.ancestral.AncestralSampler",
            "_args_": [str(victim)],
        },
        "dgm_runner writer": {
            "_target_": "dgm_runner.io.atomic.write_json",
            "path": str(victim),
            "obj": {},
        },
        "resolver": {
            "_target_": "dgm_runner.samplers.ancestral.AncestralSampler",
            "clip": f"${{dgm_hydra_subdir:{victim.parent / 'planted'}}}",
        },
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 1-epoch VAE run (with its ``.hydra/config.yaml``)."""
    run = tmp_path_factory.mktemp("payload") / "vae"
    cfg = compose_train(VAE)
    train(cfg, run)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return run


def _hostile_copy(
    trained: Path, tmp_path: Path, node: dict, where: str, section: str = "sampler"
) -> Path:
    """A copy of the run whose ``section`` node is ``node``, in ``last.pt``
    (``where="ckpt"``) or in ``.hydra/config.yaml`` (``"yaml"``)."""
    run = tmp_path / "hostile"
    shutil.copytree(trained, run)
    (run / "payload").write_text("export EVIL=1\n")
    if where == "ckpt":
        path = run / "checkpoints" / "last.pt"
        ckpt = load_checkpoint(path)
        ckpt["config"][section] = node
        torch.save(ckpt, path)
    else:
        path = run / ".hydra" / "config.yaml"
        config = OmegaConf.to_container(OmegaConf.load(path))
        config[section] = node
        path.write_text(OmegaConf.to_yaml(config))
    return run


@needs_mnist
@pytest.mark.parametrize("where", ["ckpt", "yaml"])
@pytest.mark.parametrize("tool", ["dgm-eval", "dgm-sample"])
@pytest.mark.parametrize(
    "payload", list(_payloads(Path("r"), Path("v"))), ids=list(_payloads(Path("r"), Path("v")))
)
def test_a_payload_is_one_line_and_the_victim_is_unchanged(
    trained, tmp_path, monkeypatch, capsys, payload, tool, where
):
    victim = tmp_path / "victim" / ".bashrc"
    victim.parent.mkdir()
    victim.write_text(PRECIOUS)
    before = victim.stat().st_mtime_ns
    run = _hostile_copy(trained, tmp_path, _payloads(tmp_path / "hostile", victim)[payload], where)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [tool, str(run)])
    with pytest.raises(SystemExit) as exit_:
        MAINS[tool]()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_.value.code not in (0, None), err
    assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: UnsafeConfig: "), err
    assert "refused" in lines[0]
    assert victim.read_text() == PRECIOUS and victim.stat().st_mtime_ns == before
    assert sorted(p.name for p in victim.parent.iterdir()) == [".bashrc"]  # nothing planted


@needs_mnist
def test_a_stage_one_run_with_a_payload_is_refused_before_it_runs(trained, tmp_path):
    """``model.vqvae.run_dir=RUN`` (:func:`dgm_runner.build.load_run_model`) reads a run's
    config too: the payload is a one-line error, the victim unchanged."""
    victim = tmp_path / "victim.txt"
    victim.write_text(PRECIOUS)
    node = _payloads(tmp_path / "hostile", victim)["open"]
    run = _hostile_copy(trained, tmp_path, node, "ckpt")
    with pytest.raises(ValueError, match=r"^run_dir=.*refused sampler\._target_=builtins\.open"):
        load_run_model(str(run))
    assert victim.read_text() == PRECIOUS


@needs_mnist
def test_a_resume_reads_the_checkpoint_config_as_data(trained, tmp_path):
    """``trainer.resume`` compares the saved model / objective / dataset with the current
    ones (importing their targets to read defaults): a payload there is refused, not
    imported."""
    victim = tmp_path / "victim.txt"
    victim.write_text(PRECIOUS)
    run = _hostile_copy(trained, tmp_path, _payloads(tmp_path, victim)["open"], "ckpt", "objective")
    cfg = compose_train([*VAE, f"trainer.resume={run}", "trainer.epochs=2"])
    with pytest.raises(UnsafeConfig, match=r"refused objective\._target_=builtins\.open"):
        train(cfg, run)
    assert victim.read_text() == PRECIOUS


def test_the_users_own_modules_are_trusted_when_named(monkeypatch):
    """A target under a module the user names (their ``--config-dir`` components, or
    ``DGM_TRUSTED_MODULES``) passes; its sibling modules do not; nothing is imported."""
    node = {"model": {"_target_": "zz_not_importable_pkg.models.MyVAE", "width": 3}}
    with pytest.raises(UnsafeConfig, match="DGM_TRUSTED_MODULES=zz_not_importable_pkg.models"):
        check_config(node, "run/last.pt")
    monkeypatch.setenv("DGM_TRUSTED_MODULES", "zz_not_importable_pkg.models")
    check_config(node, "run/last.pt")  # would raise ModuleNotFoundError if it imported
    assert "zz_not_importable_pkg.models" in trusted_modules()
    other = {"model": {"_target_": "zz_not_importable_pkg.modelsx.Evil"}}
    with pytest.raises(UnsafeConfig):
        check_config(other, "run/last.pt")
    monkeypatch.delenv("DGM_TRUSTED_MODULES")
    trust_modules(["zz_trusted_by_call"])
    check_config([{"_target_": "zz_trusted_by_call.X"}], "f")


def test_a_component_prefix_admits_only_names_its_modules_define():
    """``dgm_runner.models.score.ScoreUNet`` and a package's re-export pass; an attribute
    reached through a module (``...score.torch.save``, ``...cache.os.system``, an imported
    module ``...score.math``) does not; read from the sources, nothing imported."""
    for ok in (
        "dgm_runner.models.score.ScoreUNet",
        "dgm_runner.models.ScoreUNet",
        "dgm_runner.metrics.fid.classifier_fid",
    ):
        check_config({"model": {"_target_": ok}}, "run/last.pt")
    for bad in (
        "dgm_runner.models.score.torch.save",
        "dgm_runner.data.cache.os.system",
        "dgm_runner.models.score.math",
        "dgm_runner.models.no_such_module.Thing",
    ):
        with pytest.raises(UnsafeConfig, match="may only name dgm_runner components"):
            check_config({"sampler": {"_target_": bad}}, "run/last.pt")


def test_every_target_of_the_package_tree_is_allowed():
    """The registry itself passes: every ``_target_`` under configs/ that a run's config can
    hold (all but the studies and Hydra callbacks, which no run config names)."""
    from dgm_runner import CONFIG_DIR

    for path in Path(CONFIG_DIR).rglob("*.yaml"):
        if path.parts[-2] in ("study", "launcher") or path.name == "dgm_study.yaml":
            continue
        node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        node.pop("hydra", None)
        if path.parts[-2] == "optimizer":  # a torch.optim class: allowed at its place only
            node = {"optimizer": node}
        check_config(node, path)
