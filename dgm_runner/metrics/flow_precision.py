"""Float32 against float64 for a flow's exact test bits/dim (issue 29's consistency target:
within 0.005 bits/dim on a trained model).

The same dequantized test images (drawn once, in float32, with a seeded generator, as
``objective=flow_nll`` evaluates them) go through the model in float32 and through a float64
copy of it; the report is the two mean bits/dim and the largest per-image difference.
``python scripts/flow_precision.py RUN_DIR`` runs it on a trained run.
"""

from __future__ import annotations

import copy

import torch

from dgm_runner.data.protocols import dequantize_levels, pixel_levels
from dgm_runner.metrics.units import LN256, nats_to_bits_per_dim
from dgm_runner.models.flows.multiscale import MultiScaleFlow
from dgm_runner.progress import track


@torch.no_grad()
def float64_gap(
    model: MultiScaleFlow, test_x: torch.Tensor, batch_size: int = 500, seed: int = 0
) -> dict[str, float]:
    """Test bits/dim of ``model`` in float32 and in float64 on the same dequantized images.

    Args:
        model: a flow (:class:`~dgm_runner.models.flows.multiscale.MultiScaleFlow`) in
            float32; left unchanged (a float64 copy is evaluated).
        test_x: ``(N, C, H, W)`` stored grey images ``k / 255`` in [0, 1].
        batch_size: images per pass.
        seed: the dequantization generator's seed.

    Returns:
        ``bits_per_dim_float32`` and ``bits_per_dim_float64`` (means over the N images, bits
        per dimension with the ``ln 256`` offset), ``max_abs_gap`` and ``mean_abs_gap``
        (per image, bits/dim), ``n_images``.

    Raises:
        ValueError: ``test_x`` outside [0, 1] (the model's ``check_data``).
    """
    model.eval()
    model64 = copy.deepcopy(model).double()
    gen = torch.Generator(device=test_x.device).manual_seed(seed)
    b32, b64 = [], []
    starts = range(0, test_x.shape[0], batch_size)
    for start in track(starts, f"float32 vs float64 ({test_x.shape[0]} images)", unit="batch"):
        x = test_x[start : start + batch_size].float()
        model.check_data(x)
        y = dequantize_levels(pixel_levels(x), gen)
        b32.append(nats_to_bits_per_dim(-model.log_prob(y).double(), model.n_dims, LN256))
        b64.append(nats_to_bits_per_dim(-model64.log_prob(y.double()), model.n_dims, LN256))
    bpd32, bpd64 = torch.cat(b32), torch.cat(b64)
    gap = (bpd32 - bpd64).abs()
    return {
        "bits_per_dim_float32": bpd32.mean().item(),
        "bits_per_dim_float64": bpd64.mean().item(),
        "max_abs_gap": gap.max().item(),
        "mean_abs_gap": gap.mean().item(),
        "n_images": float(bpd32.numel()),
    }
