"""``dgm-train --describe``: a component's keys with their types, ranges, values and
comments, from the installed package (issue 26, item 6)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

import pytest

from dgm_runner.cli.describe import type_text, yaml_comments
from dgm_runner.cli.train import _describe
from dgm_runner.config import Beta, PositiveInt, Range, Steps


def test_type_text_reads_the_annotations_the_validator_checks():
    assert type_text(PositiveInt) == "int >= 1"
    assert type_text(Steps) == "int in [1, 1e+06]"
    assert type_text(Optional[Annotated[float, Range(gt=0, lt=1)]]) == "float in (0, 1) or null"
    assert type_text(Literal["adam", "sgd"]) == "one of 'adam', 'sgd'"
    assert type_text(tuple[Beta, Beta]) == "list of 2 (float in [0, 1))"
    assert type_text(Annotated[float, Range(le=3)]) == "float <= 3"


def test_yaml_comments_follow_a_key_onto_its_indented_lines(tmp_path):
    file = tmp_path / "e.yaml"
    file.write_text(
        "# header\n_target_: a.B\nsteps: 10   # sweeps\n"
        "            # (smoke: 2)\nplain: 1\nnested:\n  inner: 2  # not read\n"
    )
    assert yaml_comments(file) == {"steps": "sweeps (smoke: 2)"}


def test_describe_a_model_names_its_keys_types_values_and_comments(capsys):
    assert _describe(["--describe", "model=vae_mlp", "model.latent_dim=7"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("model: dgm_runner.models.vae.VAEMLP")
    assert "  latent_dim = 7  (int >= 1)" in out
    assert not any(line.startswith(("objective:", "trainer:")) for line in out)


def test_describe_the_trainer_gives_comments_and_the_whole_default_experiment(capsys):
    assert _describe(["--describe", "trainer", "sampler"]) == 0
    out = capsys.readouterr().out
    assert "  optimizer_impl = 'auto'  (one of 'auto', 'fused', 'foreach', 'for_loop')" in out
    assert "  lr = " not in out  # the optimiser's own block (below)
    assert "  steps = 1000  (int in [1, 1e+06])  # sweeps" in out
    assert "  progress = true  (bool)" in out


def test_describe_the_optimizer_shows_its_class_keywords_bounds_and_comments(capsys):
    """The ``optimizer`` node (configs/optimizer/): the experiment's values, the bounds the
    validator applies (not torch's bare ``float``) and the entry file's comments."""
    assert _describe(["--describe", "optimizer", "experiment=gan_mnist"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("optimizer: torch.optim.Adam") and "optimizer/adam.yaml" in out[2]
    assert any(line.startswith("  lr = 0.0002  (float > 0)  # step size") for line in out)
    assert "  betas = [0.5, 0.999]  (list of 2 (float in [0, 1)))" in "\n".join(out)
    assert not any(line.startswith(("model:", "trainer:")) for line in out)
    assert _describe(["--describe", "optimizer", "experiment=rbm_cdk"]) == 0
    assert "  momentum = 0.0  (float in [0, 1])" in capsys.readouterr().out


def test_smoke_values_are_shown_resolved(capsys):
    assert _describe(["--describe", "sampler", "+debug=smoke"]) == 0
    assert "  steps = 10  (int in [1, 1e+06])" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["modle"], "--describe modle: not a component; allowed values are model, objective"),
        (["model=nope"], "model=nope: unknown model; allowed values are"),
        (["model.latnt_dim=3"], "model.latnt_dim=3: no such key"),
    ],
)
def test_bad_input_is_one_line(capsys, args, message):
    assert _describe(["--describe", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dgm-train: error: ConfigError: " + message)


def test_a_users_own_entry_is_described_from_their_config_dir(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "my_vae.yaml").write_text(
        "_target_: dgm_runner.models.vae.VAEMLP\nlatent_dim: 3  # my latent size\nhidden_dim: 50\n"
    )
    assert _describe(["--describe", "--config-dir", str(tmp_path), "model=my_vae"]) == 0
    out = capsys.readouterr().out
    assert "  latent_dim = 3  (int >= 1)  # my latent size" in out
    assert str(tmp_path / "model" / "my_vae.yaml") in out


def test_a_nested_component_gets_its_own_block(capsys):
    """``model.sde`` (the process, group ``model/sde``): its keys and its own file."""
    assert _describe(["--describe", "model", "experiment=edm_mnist_cpu"]) == 0
    out = capsys.readouterr().out
    assert "  sde = dgm_runner.sdes.EDMProcess  (its keys: model.sde below)" in out
    assert "model.sde: dgm_runner.sdes.EDMProcess" in out and "model/sde/edm.yaml" in out
    assert "  sigma_min = 0.002  (float > 0)  # smallest noise std" in out
    # model.net (the network, group model/net) the same way
    assert "  net = dgm_runner.models.unet.UNet  (its keys: model.net below)" in out
    assert "model.net: dgm_runner.models.unet.UNet" in out and "model/net/unet.yaml" in out
    assert "  channels = [16, 32, 64]  (list of 3 (int >= 1))  # widths at full" in out
