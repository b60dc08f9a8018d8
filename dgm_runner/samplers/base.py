"""The sampler interface."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from dgm_runner.progress import Bar


class Sampler:
    """Base class of samplers (``configs/sampler``).

    ``sample(model, n, generator)`` returns ``(n, C, H, W)`` images in [0, 1] and is
    deterministic given ``generator``. ``check_model`` raises ``TypeError`` (one line)
    when the sampler cannot draw from ``model`` (``ValueError`` for settings that do not
    fit it, e.g. more steps than a discrete DDPM has); the loop turns both into a
    ConfigError. Diffusion samplers also record ``nfe``, the network evaluations per
    sample of their last call, and take ``guidance``, the classifier-free guidance weight
    ``w`` for a class-conditional model (:func:`draw_samples` applies it; a guided
    evaluation is one batched pass of twice the batch and counts as one NFE).
    """

    #: Whether this sampler draws anything (false for :class:`NoSampler`: no grids, no FID).
    draws: bool = True

    def check_model(self, model: nn.Module) -> None:
        """Raise ``TypeError`` if this sampler does not apply to ``model``."""

    def sample(self, model: nn.Module, n: int, generator: torch.Generator) -> torch.Tensor:
        """``(n, C, H, W)`` samples in [0, 1] (``(n, D)`` points for toy data)."""
        raise NotImplementedError

    def describe(self) -> str:
        """What one call runs, for progress and log lines (e.g. ``ddim 50 steps``)."""
        name = getattr(self, "name", type(self).__name__)
        steps = getattr(self, "steps", None)
        return f"{name} {steps} steps" if isinstance(steps, int) else name


class NoSampler(Sampler):
    """For models that are not generative (the feature classifier): the loop writes no
    sample grids and sample-based metrics are skipped."""

    draws = False

    def sample(self, model: nn.Module, n: int, generator: torch.Generator) -> torch.Tensor:
        """Raise ``TypeError``: this model cannot be sampled."""
        raise TypeError(f"{type(model).__name__} is not a generative model: it has no sampler")


@torch.inference_mode()
def draw_samples(
    model: torch.nn.Module,
    sampler: Sampler,
    n: int,
    seed: int,
    device: torch.device,
    batch_size: int | None = None,
    desc: str = "samples",
) -> torch.Tensor:
    """``(n, C, H, W)`` samples in [0, 1] from one generator seeded with ``seed``, model in
    eval mode; drawn ``batch_size`` at a time when given (bounded memory for 10,000 samples),
    with a progress bar (:mod:`dgm_runner.progress`) over the batches, ``desc``. From a
    class-conditional diffusion model, sample ``i`` is of class :func:`sample_labels`'s
    ``i``-th, under the sampler's guidance weight (``sampler.guidance``)."""
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    step = batch_size or n
    parts = []
    # one batch: the sampler's own bar (its steps) is the progress
    with Bar(n, f"{desc} ({sampler.describe()})", "sample", show=step < n) as bar:
        for start in range(0, n, step):
            k = min(step, n - start)
            labels = sample_labels(model, sampler, start, k, device)
            guided = labels is not None
            with model.conditioned(labels, sampler.guidance) if guided else nullcontext():
                parts.append(sampler.sample(model, k, gen))
            bar.update(parts[-1].shape[0])
    model.train(was_training)
    return torch.cat(parts)


def sample_labels(
    model: nn.Module, sampler: Sampler, start: int, k: int, device: torch.device
) -> torch.Tensor | None:
    """The classes of samples ``start .. start + k - 1`` of a draw from a class-conditional
    diffusion model (``model.conditional`` and ``model.conditioned``, a sampler with
    ``guidance``): ``(k,)`` int64, sample ``i`` of class ``labels[i mod L]`` for the
    sampler's ``labels`` (``dgm-sample RUN label=3`` / ``label=[0,1]``), by default all
    ``n_classes`` in turn (an 8x8 grid cycles 0..9; 10 000 samples hold 1000 of each
    class). None for any other model or sampler (nothing to condition on)."""
    if not (
        getattr(model, "conditional", False)
        and hasattr(model, "conditioned")
        and hasattr(sampler, "guidance")
    ):
        return None
    classes = torch.tensor(getattr(sampler, "labels", None) or range(model.n_classes))
    return classes[torch.arange(start, start + k) % classes.numel()].to(device)
