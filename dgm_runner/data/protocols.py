"""Data protocols of image datasets: how grey pixels become what a model trains on.

``dataset.binarize`` (``docs/evaluation.md``, "Data protocols and units"):

* ``none``: grey levels ``k / 255`` in [0, 1] (``k`` the file's 8-bit value).
* ``threshold``: ``1 if intensity > dataset.threshold`` (or ``pixel > threshold_uint8`` on
  the 0..255 scale), fixed per image: the seeds' binarized MNIST (seed 000 Q4, 002, 004).
* ``dynamic``: each training image drawn ``Bernoulli(intensity)`` afresh every time it is
  used (:class:`DynamicBinarization`, the loop's ``DataSplits.train_transform``); the test
  split binarized once with the fixed seed ``dataset.binarize_seed``
  (:func:`fixed_binarization`). Stochastic binarization as in Salakhutdinov & Murray
  (2008), redrawn at every use as in Burda et al. (2016); the stored ``train_x`` stays in
  grey levels.
* ``fixed``: train and test binarized once, ``Bernoulli(intensity)`` with the fixed seed
  (:func:`fixed_binarization`); or Larochelle & Murray's (2011) files
  (``fixed_source=larochelle``, :mod:`dgm_runner.data.amat`), the binarized MNIST of
  most published NLLs.

``dataset.dequantize=uniform`` (grey images only): training images ``(k + u) / 256`` with
``u ~ U[0, 1)`` per pixel, drawn per example per step (:class:`UniformDequantization`;
Theis, van den Oord & Bethge 2016; Dinh et al. 2017, Sec. 4.1), so that a
continuous density on them bounds the NLL of the 8-bit data (in bits/dim with the
``ln 256`` offset of :mod:`dgm_runner.metrics.units`). The test images stay ``k / 255``; a
likelihood of dequantized data evaluates them as :func:`pixel_levels` then
:func:`dequantize_levels` with its own seeded generator (the probability-flow bits/dim of
diffusion models, the flows' ``objective=flow_nll``: one way for both).

Every draw of a transform is per example through :func:`dgm_runner.distributions.batch_draw`
from the global torch RNG: a data-parallel shard draws the rows a single process would,
and the RNG state in the checkpoint makes a resumed run exact.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch

from dgm_runner.distributions import batch_draw

__all__ = [
    "BINARIZE",
    "BINARIZE_RENAMED",
    "DEQUANTIZE",
    "FIXED_SOURCES",
    "Binarize",
    "Dequantize",
    "DynamicBinarization",
    "FixedSource",
    "UniformDequantization",
    "check_protocol",
    "dequantize_levels",
    "fixed_binarization",
    "pixel_levels",
    "split_seed",
]

Binarize = Literal["none", "threshold", "dynamic", "fixed"]
Dequantize = Literal["none", "uniform"]
FixedSource = Literal["seeded", "larochelle"]
BINARIZE: tuple[str, ...] = ("none", "threshold", "dynamic", "fixed")
DEQUANTIZE: tuple[str, ...] = ("none", "uniform")
FIXED_SOURCES: tuple[str, ...] = ("seeded", "larochelle")
#: ``dataset.binarize`` before issue 28 (a boolean) -> today's value; remove after 2027-03-01.
BINARIZE_RENAMED: dict[bool, str] = {True: "threshold", False: "none"}
#: The generator seed of each split's fixed binarization is ``binarize_seed + offset``.
_SPLIT_OFFSET = {"test": 0, "train": 1}


def split_seed(seed: int, split: Literal["train", "test"]) -> int:
    """The seed of ``split``'s fixed binarization: ``seed`` for the test split, ``seed + 1``
    for the training split (two streams, so the test images of ``dynamic`` and ``fixed``
    are the same images whatever the training split holds)."""
    return seed + _SPLIT_OFFSET[split]


def check_protocol(
    binarize: object,
    dequantize: object = "none",
    fixed_source: object = "seeded",
    threshold_uint8: Optional[int] = None,
    name: str = "mnist",
    image_size: Optional[int] = None,
    per_class: Optional[int] = None,
) -> None:
    """Refuse a combination of data options that cannot be honoured, before any work.

    Raises:
        ValueError: one line naming the options: ``binarize`` given as a boolean (the
            spelling before issue 28: ``true`` is ``threshold``, ``false`` is ``none``) or not
            one of :data:`BINARIZE`; ``dequantize`` not ``none`` with a binarization (a
            dequantized pixel is a grey level), or with ``image_size`` (area averaging leaves
            no 8-bit levels to dequantize); ``threshold_uint8`` with another protocol than
            ``threshold``; ``fixed_source=larochelle`` with another protocol than ``fixed``,
            another dataset than MNIST, ``image_size`` or ``per_class`` (the files have
            neither other sizes nor labels).
    """
    if isinstance(binarize, bool):
        raise ValueError(
            f"binarize={str(binarize).lower()} is the spelling before issue 28: write "
            f"dataset.binarize={BINARIZE_RENAMED[binarize]} (none | threshold | dynamic | fixed)"
        )
    if binarize not in BINARIZE:
        raise ValueError(f"binarize={binarize!r} is invalid: allowed values are {BINARIZE}")
    if dequantize not in DEQUANTIZE:
        raise ValueError(f"dequantize={dequantize!r} is invalid: allowed values are {DEQUANTIZE}")
    if fixed_source not in FIXED_SOURCES:
        raise ValueError(
            f"fixed_source={fixed_source!r} is invalid: allowed values are {FIXED_SOURCES}"
        )
    if dequantize != "none" and binarize != "none":
        raise ValueError(
            f"dequantize={dequantize} needs grey images, but binarize={binarize}: set "
            "dataset.binarize=none (dequantization is for continuous likelihoods) or "
            "dataset.dequantize=none"
        )
    if dequantize != "none" and image_size is not None:
        raise ValueError(
            f"dequantize={dequantize} needs the files' 8-bit pixels, but image_size="
            f"{image_size} averages them to other levels: set dataset.image_size=null"
        )
    if threshold_uint8 is not None and binarize != "threshold":
        raise ValueError(
            f"threshold_uint8={threshold_uint8} applies to binarize=threshold only, not "
            f"binarize={binarize}: set dataset.threshold_uint8=null"
        )
    if fixed_source == "larochelle":
        if binarize != "fixed":
            raise ValueError(
                f"fixed_source=larochelle applies to binarize=fixed only, not binarize="
                f"{binarize}: set dataset.binarize=fixed or dataset.fixed_source=seeded"
            )
        bad = [
            f"{key}={value}"
            for key, value in (("name", name), ("image_size", image_size), ("per_class", per_class))
            if value is not None and not (key == "name" and value == "mnist")
        ]
        if bad:
            raise ValueError(
                f"fixed_source=larochelle (Larochelle & Murray's 28x28 binarized MNIST, no "
                f"labels) cannot take {', '.join(bad)}: remove it or use fixed_source=seeded"
            )


def fixed_binarization(grey: torch.Tensor, seed: int) -> torch.Tensor:
    """Binarize once with a fixed seed: pixel ``= 1`` with probability its intensity.

    Args:
        grey: ``(N, ...)`` float32 intensities in [0, 1] on the CPU (the whole split, before
            any subset is taken, so an image gets the same bits in every subset).
        seed: the generator's seed (:func:`split_seed` of ``dataset.binarize_seed``).

    Returns:
        ``(N, ...)`` float32 in {0, 1}: ``(u < grey)`` with ``u = torch.rand(grey.shape)`` from
        a CPU ``torch.Generator`` seeded ``seed`` (the same bits on every machine and device).
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    u = torch.rand(grey.shape, generator=gen, dtype=torch.float32)
    return (u < grey).float()


class DynamicBinarization:
    """The training-batch transform of ``binarize=dynamic``: ``(u < x)`` with ``u ~ U[0, 1)``
    per pixel, drawn per example from the global RNG (:func:`batch_draw`), so each use of an
    image is a fresh ``Bernoulli(x)`` draw (Burda et al. 2016)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` intensities in [0, 1] -> ``(B, ...)`` of x's dtype in {0, 1}."""
        rest = x.shape[1:]
        u = batch_draw(x.shape[0], lambda m: torch.rand(m, *rest, device=x.device, dtype=x.dtype))
        return (u < x).to(x.dtype)

    def __repr__(self) -> str:
        return "DynamicBinarization()"


class UniformDequantization:
    """The training-batch transform of ``dequantize=uniform``: ``(k + u) / 256`` with
    ``k = round(255 x)`` the 8-bit level of the stored ``x = k / 255`` and ``u ~ U[0, 1)``
    per pixel, drawn per example from the global RNG (:func:`batch_draw`); Theis et al.
    (2016). Every value lies in ``[k / 256, (k + 1) / 256)``: a float32 sum that
    rounds up to ``k + 1`` is set to the largest float below ``(k + 1) / 256``."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` grey levels ``k / 255`` -> ``(B, ...)`` dequantized values in [0, 1)."""
        rest = x.shape[1:]
        u = batch_draw(x.shape[0], lambda m: torch.rand(m, *rest, device=x.device, dtype=x.dtype))
        k = torch.round(x * 255.0)
        top = torch.nextafter((k + 1.0) / 256.0, torch.zeros_like(k))
        return torch.minimum((k + u) / 256.0, top)

    def __repr__(self) -> str:
        return "UniformDequantization()"


def pixel_levels(x: torch.Tensor) -> torch.Tensor:
    """The 8-bit levels ``k`` of stored grey images ``x = k / 255``: ``round(255 x)`` clamped
    to [0, 255], as floats of ``x``'s dtype.

    Args:
        x: ``(N, ...)`` grey values in [0, 1].

    Returns:
        ``(N, ...)`` integer-valued floats in {0, ..., 255}.
    """
    return torch.round(x * 255.0).clamp(0, 255)


def dequantize_levels(k: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform dequantization of 8-bit levels for evaluation: ``(k + u) / 256`` with
    ``u ~ U[0, 1)`` per value drawn from ``generator`` (seeded by the caller, so the same
    test images get the same noise at every evaluation; Theis et al. 2016). Unlike the
    training transform (:class:`UniformDequantization`) nothing moves a float32 sum that
    rounds up to ``k + 1`` back below ``(k + 1) / 256``: the probability-flow bits/dim of
    diffusion models has always computed exactly this, and keeps its numbers.

    Args:
        k: ``(N, ...)`` levels from :func:`pixel_levels`.
        generator: the draws' generator, on ``k``'s device (``None``: the global RNG).

    Returns:
        ``(N, ...)`` values in [0, 1] of ``k``'s dtype.
    """
    u = torch.rand(k.shape, generator=generator, device=k.device, dtype=k.dtype)
    return (k + u) / 256.0
