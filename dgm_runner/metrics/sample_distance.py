"""Distances between model samples and data for low-dimensional data: sliced Wasserstein
and kernel MMD, each with a floor (two fresh draws of the data) and a noise baseline."""

from __future__ import annotations

import torch

from dgm_runner.config import PositiveInt
from dgm_runner.data.base import DataSplits
from dgm_runner.samplers.base import Sampler, draw_samples


def sliced_wasserstein(
    a: torch.Tensor, b: torch.Tensor, n_projections: int = 256, generator=None
) -> float:
    """Sliced 1-Wasserstein distance between two ``(n, D)`` samples of equal size:
    the mean over random unit directions of the 1-D W1 distance of the projections
    (sorted differences; Bonneel et al. 2015). Units: those of the data.

    Raises:
        ValueError: the samples differ in size or dimension.
    """
    if a.shape != b.shape:
        raise ValueError(
            f"sliced_wasserstein needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    dirs = torch.randn(a.shape[1], n_projections, generator=generator, device=a.device)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    pa, pb = (a @ dirs).sort(dim=0).values, (b @ dirs).sort(dim=0).values
    return float((pa - pb).abs().mean())


def mmd_rbf(
    a: torch.Tensor, b: torch.Tensor, bandwidths: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)
) -> float:
    """Unbiased squared MMD (Gretton et al. 2012, Eq. 3) with a sum of Gaussian kernels
    ``exp(-||x - y||^2 / (2 h^2))`` over ``bandwidths``; ``(n, D)`` and ``(m, D)`` inputs."""

    def k(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d2 = torch.cdist(x, y).pow(2)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)

    n, m = a.shape[0], b.shape[0]
    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    term_a = (kaa.sum() - kaa.diagonal().sum()) / (n * (n - 1))
    term_b = (kbb.sum() - kbb.diagonal().sum()) / (m * (m - 1))
    return float(term_a + term_b - 2 * kab.mean())


def _noise_baseline(
    model: torch.nn.Module, n: int, shape: tuple[int, ...], generator, device
) -> torch.Tensor:
    """Samples of the sampler's starting noise: N(0, sigma_max^2 I), the SDE prior, or N(0, I)."""
    if hasattr(model, "sigmas"):
        return torch.randn((n, *shape), generator=generator, device=device) * model.sigmas[0]
    if hasattr(model, "sde"):
        return model.sde.prior_sample((n, *shape), generator, device)
    return torch.randn((n, *shape), generator=generator, device=device)


def sample_distances(
    model: torch.nn.Module,
    sampler: Sampler,
    data: DataSplits,
    seed: int,
    final: bool = False,
    n: PositiveInt = 2000,
    n_projections: PositiveInt = 256,
) -> dict[str, float]:
    """``n`` model samples against the first ``n`` test points: ``swd`` and ``mmd``;
    ``*_floor``: the same distance between the first and second ``n`` test points (what
    a perfect model would get); ``*_noise``: for the sampler's starting noise. Computed
    at every evaluation (``final`` is accepted for the ``sample_metrics`` protocol).

    Raises:
        ValueError: the data are not ``(N, D)`` points or the test split has fewer than
            ``2 n`` of them.
    """
    if data.is_image or data.test_x.shape[0] < 2 * n:
        raise ValueError(
            f"sample_distances needs (N, D) data with >= {2 * n} test points, "
            f"got {tuple(data.test_x.shape)}"
        )
    device = data.test_x.device
    gen = torch.Generator(device=device).manual_seed(seed)
    samples = draw_samples(model, sampler, n, seed, device)
    ref, fresh = data.test_x[:n], data.test_x[n : 2 * n]
    noise = _noise_baseline(model, n, data.image_shape, gen, device)
    out = {}
    for name, other in (("", samples), ("_floor", fresh), ("_noise", noise)):
        out[f"swd{name}"] = sliced_wasserstein(
            other, ref, n_projections, torch.Generator(device=device).manual_seed(seed)
        )
        out[f"mmd{name}"] = mmd_rbf(other, ref)
    return out
