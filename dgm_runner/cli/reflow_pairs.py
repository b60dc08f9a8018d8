"""``dgm-reflow-pairs RUN_DIR out=pairs.pt [n=20000] [seed=0] [batch_size=500] [sampler=ode]
[sampler.steps=100]``: the (noise, sample) pairs of a trained flow, the coupling the next
flow trains on (reflow: Liu, Gong & Liu 2023, "Flow straight and fast", Sec. 2.2-2.3; then
``dgm-train experiment=fm_mnist_reflow_cpu dataset.pairs=pairs.pt trainer.init_from=RUN_DIR``).

Each pair is a draw ``z`` of the model's prior at ``t = T`` and its endpoint
``x0 = ODE(z)`` at ``t_end``, both in model space, from the run's sampler (or the one given,
which must be an ODE sampler with ``integrate()``: a deterministic map from noise to sample;
:meth:`dgm_runner.samplers.diffusion.ProbabilityFlowODE.integrate`). The file format is
:mod:`dgm_runner.data.reflow`'s.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from dgm_runner import CONFIG_DIR
from dgm_runner.build import restore_run
from dgm_runner.cli.common import main_with_run_dir, one_line_errors, sampler_overrides
from dgm_runner.config import ConfigError, ReflowPairsConfig, validate_schema
from dgm_runner.data.reflow import real_dataset_config, save_pairs
from dgm_runner.evaluation import NonFiniteError
from dgm_runner.io.atomic import check_writable
from dgm_runner.io.checkpoint import checkpoint_file, file_sha256
from dgm_runner.io.layout import check_layout
from dgm_runner.io.provenance import code_version, utc_now
from dgm_runner.progress import track
from dgm_runner.samplers.diffusion import model_device


def check_out(out: str | Path | None, overwrite: bool = False) -> Path:
    """The pairs file to write, checked before any work.

    Raises:
        ConfigError: ``out`` unset, a directory, or an existing file without ``overwrite``.
        WriteError: its folder cannot be written (:func:`dgm_runner.io.atomic.check_writable`).
    """
    if not out:
        raise ConfigError("out= is required: the pairs file to write, e.g. out=pairs.pt")
    path = Path(out)
    if path.is_dir():
        raise ConfigError(f"out={out} is a directory: name the pairs file to write (.pt)")
    if path.exists() and not overwrite:
        raise ConfigError(
            f"{path} exists: pass overwrite=true to replace it, or out=<another file>"
        )
    check_writable(path.parent)
    return path


def make_pairs(
    run_dir: str | Path,
    n: int = 20_000,
    seed: int = 0,
    batch_size: int = 500,
    checkpoint: str = "last",
    device: str = "auto",
    overrides: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The reflow pairs of a trained run, in memory.

    The run is restored (:func:`dgm_runner.build.restore_run`, with one training and one
    test example of its data: only the model and sampler are used; EMA weights where the run
    kept them); ``n`` prior draws (``model.sde.prior_sample``) come from one
    ``torch.Generator`` on the model's device seeded with ``seed``, ``batch_size`` at a time
    (a progress bar over the batches), each batch carried by ``sampler.integrate``.

    Args:
        run_dir: a run directory of ``dgm-train``; checkpoint: ``last``, ``best`` or a file.
        n: pairs; seed: the noise's seed; batch_size: pairs per ODE solve.
        device: ``auto | cpu | cuda``.
        overrides: ``{dotted key: value}`` of the run's sampler
            (:func:`dgm_runner.cli.common.sampler_overrides`), e.g.
            ``{"sampler.steps": 100}``.

    Returns:
        ``(noise, x0, meta)``: ``(n, *image_shape)`` float32 CPU tensors in model space and
        the provenance of :mod:`dgm_runner.data.reflow` (``run_dir``, ``checkpoint``,
        ``checkpoint_sha256``, ``weights``, ``epoch``, ``sampler``, ``sampler_config``,
        ``nfe`` per sample, ``seed``, ``n``, ``batch_size``, ``centered``,
        ``image_shape``, ``dataset``: the real data's config, ``code``, ``created``).

    Raises:
        ConfigError: the sampler has no ``integrate()`` (not a deterministic ODE sampler),
            the model is class-conditional (pairs carry no labels), or an override is invalid.
        CheckpointError / DataError: as :func:`dgm_runner.build.restore_run`.
        NonFiniteError: an endpoint holds NaN or infinity (nothing returned).
    """
    run_dir = Path(run_dir)
    restore = {"dataset.subset": 1, "dataset.test_subset": 1, **(overrides or {})}
    cfg, comps, ckpt = restore_run(run_dir, checkpoint, device, restore)
    model, sampler = comps.model, comps.sampler
    if not callable(getattr(sampler, "integrate", None)):
        raise ConfigError(
            f"sampler {sampler.describe()} has no integrate(): reflow pairs need a "
            "deterministic ODE sampler (noise -> sample), e.g. sampler=ode"
        )
    if getattr(model, "conditional", False):
        raise ConfigError(
            f"the run's {type(model).__name__} is class-conditional: reflow pairs carry no "
            "labels (an unconditional flow only)"
        )
    model.eval()
    dev = model_device(model)
    gen = torch.Generator(device=dev).manual_seed(seed)
    noise_parts, x0_parts, nfe = [], [], 0
    starts = range(0, n, batch_size)
    started = time.perf_counter()
    for start in track(starts, f"reflow pairs ({sampler.describe()})", unit="batch"):
        k = min(batch_size, n - start)
        z = model.sde.prior_sample((k, *model.image_shape), gen, dev)
        x0 = sampler.integrate(model, z)
        if not bool(torch.isfinite(x0).all()):
            bad = int((~torch.isfinite(x0)).flatten(1).any(1).sum())
            raise NonFiniteError(
                f"{bad} of the {k} endpoints of pairs {start}..{start + k - 1} hold NaN or "
                "infinite values (sampler settings: fewer or smaller steps diverge): no file "
                "written"
            )
        nfe = int(getattr(sampler, "nfe", 0))
        noise_parts.append(z.float().cpu())
        x0_parts.append(x0.float().cpu())
    path = checkpoint_file(run_dir, checkpoint)
    meta = {
        "run_dir": str(run_dir.resolve()),
        "checkpoint": str(path.resolve()),
        "checkpoint_sha256": file_sha256(path),
        "weights": "ema" if ckpt.get("ema") is not None else "model",
        "epoch": ckpt.get("epoch"),
        "sampler": sampler.describe(),
        "sampler_config": OmegaConf.to_container(cfg.sampler, resolve=True),
        "nfe": nfe,
        "seed": int(seed),
        "n": int(n),
        "batch_size": int(batch_size),
        "centered": bool(getattr(model, "centered", False)),
        "image_shape": [int(s) for s in model.image_shape],
        "dataset": real_dataset_config(OmegaConf.to_container(cfg.dataset, resolve=True)),
        "seconds": time.perf_counter() - started,
        "code": code_version(),
        "created": utc_now(),
    }
    return torch.cat(noise_parts), torch.cat(x0_parts), meta


def reflow_pairs(
    run_dir: str | Path,
    out: str | Path,
    n: int = 20_000,
    seed: int = 0,
    batch_size: int = 500,
    checkpoint: str = "last",
    device: str = "auto",
    overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """:func:`make_pairs`, then one atomic write of ``out``
    (:func:`dgm_runner.data.reflow.save_pairs`): a failure anywhere leaves no file (and an
    existing ``out`` untouched). ``out`` is checked first (:func:`check_out`).

    Returns:
        The meta written.

    Raises:
        ConfigError, WriteError: ``out`` (before any work), as :func:`check_out`;
        and what :func:`make_pairs` raises.
    """
    path = check_out(out, overwrite)
    noise, x0, meta = make_pairs(run_dir, n, seed, batch_size, checkpoint, device, overrides)
    save_pairs(path, noise, x0, meta)
    return meta


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="reflow_pairs")
@one_line_errors("dgm-reflow-pairs")
def _app(cfg: DictConfig) -> str:
    validate_schema("", cfg, ReflowPairsConfig)
    out = check_out(cfg.out, cfg.overwrite)  # before the (long) integration
    check_layout(cfg.run_dir)
    meta = reflow_pairs(
        cfg.run_dir,
        out,
        cfg.n,
        cfg.seed,
        cfg.batch_size,
        cfg.checkpoint,
        cfg.device,
        sampler_overrides(cfg),
        cfg.overwrite,
    )
    print(
        f"wrote {out} ({meta['n']} pairs, {meta['sampler']}, {meta['nfe']} NFE per sample, "
        f"{meta['seconds']:.1f} s)"
    )
    return str(out)


def main() -> None:
    """Console entry point of ``dgm-reflow-pairs``. ``sampler=<entry>`` integrates with
    another entry of ``configs/sampler`` (an ODE sampler: ``ode``), ``sampler.<key>=<value>``
    overrides one of its keys (as ``dgm-sample`` takes them)."""
    main_with_run_dir(_app, "dgm-reflow-pairs", "reflow_pairs")
