"""Likelihoods of diffusion models in bits per dimension.

Two estimators, both run at a run's final evaluation on the first ``n`` test images
(``sample_metrics.bpd`` / ``sample_metrics.bpd_vlb``) and by ``dgm-eval``:

**Probability-flow ODE** (Song et al. 2021, "Score-based generative modeling through SDEs",
Sec. 4.3 and App. D.2; Song, Durkan, Murray & Ermon 2021): the ODE
``dx/dt = v(x, t) = f(t) x - g(t)^2 s_theta(x, t) / 2`` maps data to the prior, and the
instantaneous change of variables gives
``log p_0(x_0) = log p_T(x_T) + int_eps^T div v(x_t, t) dt``, integrated jointly with
``x_t`` by scipy's RK45 (``rtol = atol = 1e-5`` as theirs). The divergence is exact
(``trace=exact``: one backward pass per dimension, small ``D`` only) or Hutchinson's
estimate ``z^T (dv/dx) z`` with one Rademacher probe ``z`` per image held fixed along the
trajectory (unbiased for the integral; probes from a generator seeded by ``seed``).

*Units.* Pixels are 8-bit values ``k`` in {0..255} (the dataset stores ``k / 255``).
Uniform dequantization ``y = (k + u) / 256``, ``u ~ U[0, 1)^D``, gives a density on
[0, 1]^D whose average negative log-density bounds the discrete NLL (Theis et al. 2016).
The model sees ``z = encode(y)`` (``2 y - 1`` for ``centered`` models), so
``log p_y(y) = log p_z(z) + D log|dz/dy|`` (``D log 2`` or 0), and

    bits/dim = ( -log p_y(y) / D + log 256 ) / log 2
             = -log p_z(z) / (D log 2) - log2|dz/dy| + 8,

i.e. nats -> bits by ``/ log 2``, per dimension by ``/ D`` (D = 784 for MNIST), ``+ 8``
from the bin width 1/256 and ``-1`` for data scaled to [-1, 1] (Song et al.'s code: an
``offset = 7`` for centered data). The conversion is
:func:`dgm_runner.metrics.units.nats_to_bits_per_dim` with offset ``ln 256``.

**DDPM variational bound** (Ho et al. 2020, Eq. 5) for a discrete DDPM: ``L_T + sum_{n>1}
L_{n-1} + L_0`` in nats, with ``L_T = KL(q(x_N | x_0) || N(0, I))``,
``L_{n-1} = KL(q(x_{n-1} | x_n, x_0) || p_theta(x_{n-1} | x_n))`` (reverse variance
``beta_tilde_n``, as the DDPM sampler; one draw of ``x_n`` per term) and the discretised
Gaussian decoder ``L_0 = -log p(x_0 | x_1)`` of their Sec. 3.3 / Eq. 13 (256 bins of the
8-bit values in model space, outer bins open, std ``sqrt(beta_1)``): a probability of the
discrete data, so no dequantization term; bits/dim = nats / (D log 2). Computing it costs
``N`` network evaluations per image.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import numpy as np
import torch
from scipy.integrate import solve_ivp

from dgm_runner.config import PositiveFloat, PositiveInt
from dgm_runner.data.base import DataSplits
from dgm_runner.data.protocols import dequantize_levels, pixel_levels
from dgm_runner.metrics.stats import standard_error
from dgm_runner.metrics.units import LN256, nats_to_bits_per_dim
from dgm_runner.models.score import DiffusionModel
from dgm_runner.progress import track
from dgm_runner.sdes import DiscreteDDPM, bcast, gaussian_posterior

log = logging.getLogger("dgm_runner")


def _divergence(
    fn, x: torch.Tensor, probe: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(v, div v)`` of ``fn`` at ``x`` ``(B, ...)``: exact (``probe is None``, ``D`` backward
    passes) or Hutchinson ``probe^T (dv/dx) probe`` (one backward pass)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = fn(x)
        if probe is not None:
            (grad,) = torch.autograd.grad((v * probe).sum(), x)
            return v.detach(), (grad * probe).flatten(1).sum(1)
        flat_v = v.flatten(1)
        div = torch.zeros(x.shape[0], device=x.device)
        for i in range(flat_v.shape[1]):
            (grad,) = torch.autograd.grad(
                flat_v[:, i].sum(), x, retain_graph=i < flat_v.shape[1] - 1
            )
            div = div + grad.flatten(1)[:, i]
        return v.detach(), div


def pf_ode_log_likelihood(
    model: DiffusionModel,
    x0: torch.Tensor,
    generator: torch.Generator | None = None,
    trace: Literal["hutchinson", "exact"] = "hutchinson",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_min: float = 1e-5,
) -> tuple[torch.Tensor, int]:
    """Log-likelihood of model-space points under the probability-flow ODE (module docstring).

    Args:
        model: a diffusion model (eval mode); its ``velocity`` (the network's for a
            velocity-parameterised model, else ``f x - g^2 score / 2``) and ``sde``.
        x0: ``(B, ...)`` points in model space.
        generator: draws the Rademacher probes (``trace=hutchinson``).
        trace: ``hutchinson`` or ``exact``.
        rtol, atol: RK45 tolerances.
        t_min: the start time (``max(t_min, sde.t_min)``; Song et al.'s ``eps``).

    Returns:
        ``((B,) log p(x0) in nats per example (a density in model space), number of ODE
        function evaluations)``; each evaluation is one forward and one (Hutchinson) or
        ``D`` (exact) backward passes of the network.

    Raises:
        RuntimeError: the ODE solver failed (its message).
    """
    sde, shape, device = model.sde, x0.shape, x0.device
    probe = None
    if trace == "hutchinson":
        probe = torch.randint(0, 2, shape, generator=generator, device=device).float() * 2 - 1
    n_x = x0.numel()

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(y[:n_x]).to(device=device, dtype=torch.float32).reshape(shape)
        tt = torch.full((shape[0],), t, device=device)
        v, div = _divergence(lambda z: model.velocity(z, tt), x, probe)
        return np.concatenate([v.cpu().double().numpy().ravel(), div.cpu().double().numpy()])

    t0 = max(t_min, sde.t_min)
    y0 = np.concatenate([x0.detach().cpu().double().numpy().ravel(), np.zeros(shape[0])])
    with torch.inference_mode(False):
        sol = solve_ivp(rhs, (t0, sde.T), y0, rtol=rtol, atol=atol, method="RK45")
    if not sol.success:
        raise RuntimeError(f"probability-flow ODE failed: {sol.message}")
    y = torch.from_numpy(sol.y[:, -1]).to(device)
    x_t, integral = y[:n_x].reshape(shape[0], -1), y[n_x:]
    d = x_t.shape[1]
    var = sde.prior_std() ** 2
    prior = -0.5 * (x_t**2).sum(1) / var - 0.5 * d * math.log(2 * math.pi * var)
    return (prior + integral).float(), int(sol.nfev)


def _summary(name: str, values: torch.Tensor) -> dict[str, float]:
    """``{name: mean, name_se: standard error, name_n: count}`` of ``(N,)`` per-image values."""
    se = standard_error(values)
    return {name: float(values.mean()), f"{name}_se": se, f"{name}_n": float(len(values))}


def _pixel_values(data: DataSplits, n: int) -> torch.Tensor:
    """``(n, C, H, W)`` integer pixel values ``k`` in {0..255} (float) of the first n test
    images."""
    return pixel_levels(data.test_x[:n].float())


def pf_ode_bits_per_dim(
    model: DiffusionModel,
    sampler,
    data: DataSplits,
    seed: int,
    final: bool,
    n: PositiveInt = 100,
    batch_size: PositiveInt = 50,
    trace: Literal["hutchinson", "exact"] = "hutchinson",
    rtol: PositiveFloat = 1e-5,
    atol: PositiveFloat = 1e-5,
    t_min: PositiveFloat = 1e-5,
) -> dict[str, float]:
    """``sample_metrics`` entry: probability-flow ODE bits/dim of the first ``n`` test images
    with uniform dequantization (units in the module docstring). Runs at the final evaluation.

    Returns:
        ``bits_per_dim`` (mean), ``bits_per_dim_se`` (standard error over images),
        ``bits_per_dim_n`` (images used), ``bits_per_dim_nfe`` (ODE evaluations per batch,
        mean); ``{}`` for models that are not diffusion models or at non-final evaluations.
    """
    if not final or not isinstance(model, DiffusionModel) or not data.is_image:
        return {}
    gen = torch.Generator(device=data.test_x.device).manual_seed(seed)
    k = _pixel_values(data, n)
    d = k[0].numel()
    was_training = model.training
    model.eval()
    bpd, nfes = [], []
    batches = range(0, k.shape[0], batch_size)
    for start in track(batches, f"bits/dim (PF ODE, {k.shape[0]} images)", unit="batch"):
        kb = k[start : start + batch_size]
        y = dequantize_levels(kb, gen)  # the flows' test images: the same function
        logp_z, nfe = pf_ode_log_likelihood(model, model.encode(y), gen, trace, rtol, atol, t_min)
        logp_y = logp_z + d * model.log_det_encode
        bpd.append(nats_to_bits_per_dim(-logp_y, d, LN256))  # density on [0,1] -> [0,256)
        nfes.append(nfe)
    model.train(was_training)
    values = torch.cat(bpd)
    out = {**_summary("bits_per_dim", values), "bits_per_dim_nfe": float(np.mean(nfes))}
    log.info(
        "bits/dim (probability-flow ODE, %s trace): %.4f +- %.4f on %d test images",
        trace,
        out["bits_per_dim"],
        out["bits_per_dim_se"],
        len(values),
    )
    return out


def discretized_gaussian_log_likelihood(
    x0: torch.Tensor, mean: torch.Tensor, std: float, half_width: float, lo: float, hi: float
) -> torch.Tensor:
    """``(B,)`` log-probability (nats) of 8-bit data under Ho et al.'s discretised decoder
    (2020, Eq. 13): per dimension the mass of ``N(mean, std^2)`` on
    ``[x0 - half_width, x0 + half_width]``, with the lowest bin (``x0 = lo``) open to -inf and
    the highest (``x0 = hi``) to +inf. ``x0``, ``mean``: ``(B, ...)`` in model space."""
    upper = (x0 + half_width - mean) / std
    lower = (x0 - half_width - mean) / std
    log_cdf_upper = torch.special.log_ndtr(upper)  # lowest bin: log Phi(upper)
    log_sf_lower = torch.special.log_ndtr(-lower)  # highest bin: log (1 - Phi(lower))
    # inner bins: log(Phi(upper) - Phi(lower)), floored at 1e-12 as Ho et al.'s code does
    mid = torch.log((torch.special.ndtr(upper) - torch.special.ndtr(lower)).clamp_min(1e-12))
    first = torch.isclose(x0, torch.full_like(x0, lo), atol=half_width / 2)
    last = torch.isclose(x0, torch.full_like(x0, hi), atol=half_width / 2)
    logp = torch.where(first, log_cdf_upper, torch.where(last, log_sf_lower, mid))
    return logp.flatten(1).sum(1)


def ddpm_bound(
    model: DiffusionModel,
    x0: torch.Tensor,
    generator: torch.Generator | None = None,
    decoder: Literal["discretized", "gaussian"] = "discretized",
    half_width: float = 1.0 / 255.0,
    data_range: tuple[float, float] = (-1.0, 1.0),
) -> torch.Tensor:
    """Ho et al. (2020, Eq. 5) negative variational bound of model-space ``x0`` ``(B, ...)``
    for a model on a :class:`DiscreteDDPM` (module docstring), in nats per example.

    ``decoder="gaussian"`` replaces the discretised ``L_0`` by the density
    ``-log N(x0; mu_theta(x_1, 1), beta_1)`` (continuous data; then the bound is on a
    density). ``half_width``: half a bin in model space (1/255 for [-1, 1]);
    ``data_range``: the values of the lowest and highest bins.

    Returns:
        ``(B,)`` ``L_T + sum L_{n-1} + L_0`` in nats (>= -log p_theta(x0)).

    Raises:
        TypeError: the model's process is not a discrete DDPM.
    """
    sde = model.sde
    if not isinstance(sde, DiscreteDDPM):
        raise TypeError(
            f"the DDPM bound needs a discrete DDPM (model/sde=ddpm), got {type(sde).__name__}"
        )
    big_n, b = sde.discrete_steps, x0.shape[0]
    device = x0.device
    t_last = torch.full((b,), 1.0, device=device)
    abar_n = sde.alpha(t_last) ** 2
    total = 0.5 * (
        bcast(abar_n, x0) * x0**2 - bcast(abar_n, x0) - bcast(torch.log1p(-abar_n), x0)
    ).flatten(1).sum(1)
    for k in range(2, big_n + 1):  # L_{k-1}: KL of the reverse step k -> k-1
        t = torch.full((b,), k / big_n, device=device)
        s = torch.full((b,), (k - 1) / big_n, device=device)
        mean, std = sde.marginal(x0, t)
        x_t = mean + bcast(std, x0) * torch.randn(x0.shape, generator=generator, device=device)
        _, x0_hat = model.predict_noise_and_x0(x_t, t)
        _, coef_x0, var = gaussian_posterior(sde, t, s)
        total = total + (bcast(coef_x0**2 / (2 * var), x0) * (x0 - x0_hat) ** 2).flatten(1).sum(1)
    t1 = torch.full((b,), 1.0 / big_n, device=device)
    mean, std = sde.marginal(x0, t1)
    x1 = mean + bcast(std, x0) * torch.randn(x0.shape, generator=generator, device=device)
    _, x0_hat = model.predict_noise_and_x0(x1, t1)
    dec_std = float(sde.betas[0].sqrt())
    if decoder == "gaussian":
        l0 = (
            (0.5 * ((x0 - x0_hat) / dec_std) ** 2 + math.log(dec_std) + 0.5 * math.log(2 * math.pi))
            .flatten(1)
            .sum(1)
        )
    else:
        l0 = -discretized_gaussian_log_likelihood(x0, x0_hat, dec_std, half_width, *data_range)
    return total + l0


@torch.no_grad()
def ddpm_bound_bits_per_dim(
    model: DiffusionModel,
    sampler,
    data: DataSplits,
    seed: int,
    final: bool,
    n: PositiveInt = 100,
    batch_size: PositiveInt = 100,
) -> dict[str, float]:
    """``sample_metrics`` entry: Ho et al.'s variational bound in bits/dim of the first ``n``
    test images (their 8-bit values, no dequantization; module docstring), for models on a
    discrete DDPM; runs at the final evaluation.

    Returns:
        ``bits_per_dim_vlb`` (mean), ``bits_per_dim_vlb_se``, ``bits_per_dim_vlb_n``; ``{}``
        for other models or non-final evaluations.
    """
    if (
        not final
        or not isinstance(model, DiffusionModel)
        or not isinstance(model.sde, DiscreteDDPM)
        or not data.is_image
    ):
        return {}
    gen = torch.Generator(device=data.test_x.device).manual_seed(seed)
    k = _pixel_values(data, n)
    d = k[0].numel()
    lo, hi = float(model.encode(torch.zeros(1))), float(model.encode(torch.ones(1)))
    half = (hi - lo) / 255.0 / 2.0
    was_training = model.training
    model.eval()
    values = []
    batches = range(0, k.shape[0], batch_size)
    for start in track(batches, f"bits/dim (DDPM bound, {k.shape[0]} images)", unit="batch"):
        x0 = model.encode(k[start : start + batch_size] / 255.0)
        nats = ddpm_bound(model, x0, gen, "discretized", half, (lo, hi))
        values.append(nats_to_bits_per_dim(nats, d))  # probabilities of 8-bit data: no offset
    model.train(was_training)
    out = _summary("bits_per_dim_vlb", torch.cat(values))
    log.info(
        "bits/dim (DDPM bound): %.4f +- %.4f on %d test images",
        out["bits_per_dim_vlb"],
        out["bits_per_dim_vlb_se"],
        int(out["bits_per_dim_vlb_n"]),
    )
    return out


def _describe(what: str, model: Any, data: DataSplits, n: int, discrete: bool) -> str | None:
    """The final-evaluation plan's entry of a bits/dim metric (``None``: it will skip)."""
    if not isinstance(model, DiffusionModel) or not data.is_image:
        return None
    if discrete and not isinstance(model.sde, DiscreteDDPM):
        return None
    return f"bits/dim ({what}, {min(n, data.test_x.shape[0])} images)"


def _describe_pf_ode(model: Any, data: DataSplits, n: int = 100, **_: Any) -> str | None:
    return _describe("probability-flow ODE", model, data, n, discrete=False)


def _describe_ddpm_bound(model: Any, data: DataSplits, n: int = 100, **_: Any) -> str | None:
    return _describe("DDPM bound", model, data, n, discrete=True)


pf_ode_bits_per_dim.describe = _describe_pf_ode  # type: ignore[attr-defined]
ddpm_bound_bits_per_dim.describe = _describe_ddpm_bound  # type: ignore[attr-defined]
