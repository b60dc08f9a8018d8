"""Test-set evaluation and sample grids, shared by the loop, dgm-eval and dgm-sample."""

from __future__ import annotations

import torch

from dgm_runner.objectives.base import Batch, Objective
from dgm_runner.samplers.base import Sampler


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    objective: Objective,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    seed: int,
    final: bool = False,
    prefix: str = "test",
) -> dict[str, float]:
    """Average ``objective.evaluate`` over the whole split, in batches.

    Randomness (e.g. the VAE's z draw) comes from a generator seeded with ``seed``, so
    the same checkpoint always gives the same numbers.

    Args:
        x: ``(N, C, H, W)`` images; y: ``(N,)`` labels (same device as the model).
        final: compute the end-of-run metrics too (see ``Objective.evaluate``).
        prefix: the split name put before each metric (``test``, ``val``).

    Returns:
        ``{"<prefix>/<name>": mean over the N examples}`` (units as the objective documents).
    """
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    sums: dict[str, torch.Tensor] = {}
    for start in range(0, x.shape[0], batch_size):
        batch = Batch(x[start : start + batch_size], y[start : start + batch_size])
        out = objective.evaluate(model, batch, gen, final=final)
        for key, value in out.items():
            sums[key] = sums.get(key, 0.0) + value.sum()
    model.train(was_training)
    return {f"{prefix}/{k}": float(v) / x.shape[0] for k, v in sums.items()}


@torch.no_grad()
def draw_samples(model: torch.nn.Module, sampler: Sampler, n: int, seed: int, device: torch.device) -> torch.Tensor:
    """``(n, C, H, W)`` samples in [0, 1] from a generator seeded with ``seed``."""
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    images = sampler.sample(model, n, gen)
    model.train(was_training)
    return images
