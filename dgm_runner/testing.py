"""The contract checks this project runs on its own components, for yours (one call each).

A sampler, an objective or a whole experiment of your own package (see docs/extending.md)
passes when these return; each failure is an ``AssertionError`` saying what broke:

    from dgm_runner.testing import check_experiment, check_objective, check_sampler

    check_sampler(MySampler(), my_model, shape=(1, 28, 28))
    check_objective(MyObjective(), my_model, shape=(1, 28, 28))
    check_experiment(["model=my_vae", "objective=elbo"], config_dir="my_project/configs")

``tests/test_contracts.py`` calls the first two on every entry of ``configs/sampler`` and
``configs/objective`` with every model entry they fit, and trains every experiment.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from dgm_runner import CONFIG_DIR
from dgm_runner.build import make_optimizer, optimizer_config
from dgm_runner.config import validate
from dgm_runner.epoch import Averager, train_step
from dgm_runner.io.layout import RunPaths
from dgm_runner.objectives.base import Batch

log = logging.getLogger("dgm_runner")

N_CLASSES = 10


def example_batch(shape: tuple[int, ...], b: int = 8, seed: int = 0) -> Batch:
    """``b`` binary {0, 1} images of ``shape = (C, H, W)`` (data of every likelihood) or
    Gaussian points of ``shape = (D,)``, with labels in [0, 10)."""
    g = torch.Generator().manual_seed(seed)
    if len(shape) == 3:
        x = torch.bernoulli(torch.full((b, *shape), 0.5), generator=g)
    else:
        x = torch.randn((b, *shape), generator=g)
    return Batch(x, torch.randint(0, N_CLASSES, (b,), generator=g))


def check_sampler(sampler: Any, model: torch.nn.Module, shape: tuple[int, ...], n: int = 3):
    """A sampler draws ``(n, *shape)`` finite samples from ``model``; images lie in [0, 1]
    (a :class:`~dgm_runner.models.score.DiffusionModel`'s data space excepted: what uses it
    clamps); the same generator seed
    gives the same samples and another seed others. A sampler with ``draws = False``
    (``sampler=none``) must refuse with TypeError.

    Raises:
        AssertionError: the contract does not hold (the message says which part).
    """
    model.eval()
    gen = torch.Generator
    if not sampler.draws:
        try:
            sampler.sample(model, n, gen().manual_seed(0))
        except TypeError:
            return
        raise AssertionError("a sampler with draws=False sampled instead of raising TypeError")
    first = sampler.sample(model, n, gen().manual_seed(0))
    assert first.shape == (n, *shape), f"samples of shape {tuple(first.shape)}, not {(n, *shape)}"
    assert torch.isfinite(first).all(), "non-finite samples"
    from dgm_runner.models.score import DiffusionModel  # data space unclamped (ScoreUNet.decode)

    if len(shape) == 3 and not isinstance(model, DiffusionModel):
        assert 0.0 <= float(first.min()) and float(first.max()) <= 1.0, "images outside [0, 1]"
    again = sampler.sample(model, n, gen().manual_seed(0))
    other = sampler.sample(model, n, gen().manual_seed(1))
    assert torch.equal(first, again), "the same seed gave other samples"
    assert not torch.equal(first, other), "another seed gave the same samples"


def check_objective(
    objective: Any, model: torch.nn.Module, shape: tuple[int, ...], steps: int = 2
) -> None:
    """An objective trains ``model`` through the loop's protocol: its parameter groups are
    non-empty and disjoint, every update of ``steps`` steps names a declared group, has
    finite scalar terms and changes only that group's parameters; ``train_step`` gives finite
    means; ``evaluate`` gives finite ``(B,)`` values, at intermediate and final evaluations.

    Raises:
        AssertionError: the contract does not hold (the message says which part).
    """
    batch = example_batch(shape)
    groups = objective.param_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    own = {g: {names[id(p)] for p in ps} for g, ps in groups.items()}
    every = [names[id(p)] for ps in groups.values() for p in ps]
    assert all(own.values()), "an empty parameter group"
    assert len(every) == len(set(every)), "parameter groups overlap"
    optimizers = {g: make_optimizer(ps, optimizer_config()) for g, ps in groups.items()}
    model.train()
    done = []
    for step in range(steps):  # the protocol of dgm_runner.epoch.train_step, update by update
        for group, loss, terms in objective.steps(model, batch, step):
            assert group in groups, f"an update of the undeclared group {group!r}"
            finite = [v.ndim == 0 and bool(torch.isfinite(v)) for v in terms.values()]
            assert all(finite), f"terms must be finite scalars: {terms}"
            before = {k: p.detach().clone() for k, p in model.named_parameters()}
            if loss is not None:
                model.zero_grad(set_to_none=True)
                loss.backward()
            optimizers[group].step()
            objective.after_step(group, model)
            changed = {k for k, p in model.named_parameters() if not torch.equal(before[k], p)}
            assert changed, f"a {group} update changed nothing"
            outside = sorted(changed - own[group])
            assert not outside, f"a {group} update changed {outside}"
            done.append(group)
    assert done, f"no update in {steps} steps"
    averager = Averager()  # and through the loop's own function
    train_step(model, objective, optimizers, batch, step=steps, averager=averager)
    assert all(math.isfinite(v) for v in averager.means().values()), "non-finite train means"
    model.eval()
    for final in (False, True):
        out = objective.evaluate(model, batch, torch.Generator().manual_seed(1), final=final)
        assert out, "evaluate returned no metrics"
        for key, value in out.items():
            assert value.shape == (batch.x.shape[0],), f"{key}: shape {tuple(value.shape)}"
            assert torch.isfinite(value).all(), f"{key}: non-finite values"


def compose_train(overrides: Sequence[str], config_dir: str | Path | None = None) -> DictConfig:
    """The ``dgm-train`` config for ``overrides``, with ``config_dir`` (your own config
    tree, as ``dgm-train --config-dir``) searched before the package's."""
    extra = (
        [] if config_dir is None else [f"hydra.searchpath=[file://{Path(config_dir).resolve()}]"]
    )
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[*extra, *overrides])


def check_experiment(
    overrides: Sequence[str],
    config_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Compose, validate and train a smoke run (``+debug=smoke``, no logger) of the
    experiment that ``overrides`` select, then check what the run wrote: status completed,
    finite test metrics, ``checkpoints/last.pt``, ``samples/final.png`` when the sampler
    draws, and every figure.

    Args:
        overrides: as on the command line, e.g. ``["model=my_vae", "objective=elbo"]``.
        config_dir: your config tree (``configs/model/my_vae.yaml``, ...), if any.
        run_dir: where to train (default: a temporary directory, removed afterwards).

    Returns:
        The run's final metrics (``metrics.json``).

    Raises:
        AssertionError: the run did not write what a run writes.
        dgm_runner.config.ConfigError: the config does not validate.
    """
    from dgm_runner.loop import train

    # progress on: the run's epoch and evaluation steps show a bar (a terminal) or log lines
    cfg = compose_train(
        [*overrides, "+debug=smoke", "logger=none", "trainer.progress=true"], config_dir
    )
    validate(cfg)
    start = time.monotonic()
    log.info("check_experiment %s: a smoke run (+debug=smoke)", " ".join(overrides))
    with tempfile.TemporaryDirectory(prefix="dgm_check_") as tmp:
        out = Path(run_dir) if run_dir is not None else Path(tmp) / "run"
        final = train(cfg, out)
        assert final["status"] == "completed", final
        for key, value in final.items():
            if key.startswith("test/") and isinstance(value, float):
                assert math.isfinite(value), f"{key} = {value}"
        paths, named = RunPaths(out), RunPaths.relative()  # named: as messages name them
        assert paths.last.is_file(), f"no {named.last}"
        draws = instantiate(cfg.sampler).draws
        assert paths.final_grid.is_file() == draws, str(named.final_grid)
        for figure in cfg.figures or {}:
            assert paths.figure(figure).is_file(), f"figure {figure} missing"
    log.info("check_experiment %s: passed in %.1f s", " ".join(overrides), time.monotonic() - start)
    return final
