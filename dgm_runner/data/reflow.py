"""Reflow data: the (noise, sample) pairs of a trained flow, the coupling the next flow
trains on (Liu, Gong & Liu 2023, "Flow straight and fast", Sec. 2.2-2.3: the k-rectified
flow; ``dataset=reflow_pairs`` with ``objective.coupling=pairs``).

The pairs file (written by ``dgm-reflow-pairs``, :mod:`dgm_runner.cli.reflow_pairs`, through
:func:`save_pairs`; one ``torch.save`` archive, read with ``weights_only=True``) holds

* ``noise``: float32 ``(N, C, H, W)`` (or ``(N, D)``) prior draws at ``t = T``, model space;
* ``x0``: float32, the same shape: the ODE endpoint of each draw (the flow's sample), model
  space, neither decoded nor clamped;
* ``meta``: where they came from (``run_dir``, ``checkpoint`` and its sha256, ``weights``:
  ``ema`` or ``model``, ``sampler`` and ``sampler_config``, ``nfe`` per sample, ``seed``,
  ``n``, ``batch_size``, ``centered``: the model space of the run, ``image_shape``,
  ``dataset``: the config of the real data the run trained on, ``code``: the runner's
  version and commit, ``created``).

:func:`load_reflow_pairs` turns it into a :class:`~dgm_runner.data.base.DataSplits`: the
training split is the pairs, ``train_x`` the endpoints in data space (``model.decode`` of
the pairs' run, so that the objective's ``model.encode(train_x)`` gives ``x0`` back to
float rounding: ``encode(decode(x)) = 2 ((x + 1) / 2) - 1`` for a centred model, exact up
to one rounding of ``x + 1``; no clamping) and ``train_noise`` the noise; the **test** split
is the real test split of the dataset in ``meta["dataset"]``, rebuilt, so FID/KID and
bits/dim still compare against real data.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Optional

import torch

from dgm_runner.config import PositiveInt
from dgm_runner.data.base import DataError, DataSplits
from dgm_runner.io.checkpoint import LOAD_ERRORS

#: The format tag of a pairs file.
FORMAT = "dgm_runner/reflow_pairs/1"
#: The ``_target_`` of this loader (``configs/dataset/reflow_pairs.yaml``).
LOADER = "dgm_runner.data.reflow.load_reflow_pairs"
#: Keys every ``meta`` holds (what the loader and the docs rely on).
META_KEYS = ("run_dir", "checkpoint", "sampler", "nfe", "seed", "n", "dataset", "centered")


def save_pairs(
    path: str | Path, noise: torch.Tensor, x0: torch.Tensor, meta: dict[str, Any]
) -> None:
    """Write a pairs file atomically (:func:`dgm_runner.io.atomic.atomic_open`: a temp file
    beside ``path``, fsync, ``os.replace``): a reader sees the old file or the whole new one,
    and a failure (a full disk, an interrupt) leaves neither the file nor a temp file.

    Args:
        path: the file to write (``.pt``); its folder is created if needed.
        noise: ``(N, ...)`` model-space prior draws; x0: ``(N, ...)`` their ODE endpoints.
        meta: plain values (str, int, float, bool, None, lists, dicts): see the module
            docstring; it must hold :data:`META_KEYS`.

    Raises:
        ValueError: shapes differ, or ``meta`` lacks a key of :data:`META_KEYS`.
        WriteError: the file could not be written (one line).
    """
    from dgm_runner.io.atomic import atomic_open

    if noise.shape != x0.shape or noise.ndim < 2:
        raise ValueError(
            f"noise {tuple(noise.shape)} and x0 {tuple(x0.shape)} must be (N, ...) of one shape"
        )
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"pairs meta lacks {', '.join(missing)}")
    payload = {
        "format": FORMAT,
        "noise": noise.detach().float().cpu().contiguous(),
        "x0": x0.detach().float().cpu().contiguous(),
        "meta": meta,
    }
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)


def _read(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """The checked content of a pairs file (see :func:`load_pairs`)."""
    path = Path(path)
    if not path.is_file():
        what = (
            "is a directory" if path.is_dir() else "is not a regular file" if path.exists()
            else "does not exist"
        )  # fmt: skip
        raise DataError(
            f"dataset.pairs={path} {what}: pass the file that dgm-reflow-pairs wrote "
            "(dgm-reflow-pairs RUN_DIR out=FILE)"
        )
    try:
        with open(path, "rb") as f:
            archive = zipfile.is_zipfile(f)
        if not archive:
            raise ValueError("not the zip archive that torch.save writes")
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except LOAD_ERRORS as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"dataset.pairs={path} is not a readable pairs file: {first}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise DataError(
            f"dataset.pairs={path} is not a pairs file of dgm-reflow-pairs (format tag "
            f"{FORMAT!r} missing)"
        )
    noise, x0, meta = obj.get("noise"), obj.get("x0"), obj.get("meta")
    if not isinstance(meta, dict) or any(k not in meta for k in META_KEYS):
        raise DataError(f"dataset.pairs={path}: its meta lacks one of {', '.join(META_KEYS)}")
    if not (isinstance(noise, torch.Tensor) and isinstance(x0, torch.Tensor)):
        raise DataError(f"dataset.pairs={path}: noise or x0 is not a tensor")
    if noise.shape != x0.shape or noise.ndim < 2 or noise.shape[0] == 0:
        raise DataError(
            f"dataset.pairs={path}: noise {tuple(noise.shape)} and x0 {tuple(x0.shape)} are "
            "not (N, ...) pairs of one shape"
        )
    if noise.dtype != torch.float32 or x0.dtype != torch.float32:
        raise DataError(f"dataset.pairs={path}: noise and x0 must be float32")
    return obj


def load_pairs(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a pairs file written by :func:`save_pairs` without executing code
    (``weights_only=True``).

    Returns:
        ``{"format", "noise": (N, ...) float32, "x0": (N, ...) float32, "meta": dict}``.

    Raises:
        DataError: one line naming the file: missing, a directory, not a ``torch.save``
            archive, truncated or damaged, not a pairs file (format tag), a meta without
            :data:`META_KEYS`, noise and x0 not float32 tensors of one ``(N, ...)`` shape.
    """
    return _read(path, map_location)


def pairs_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta`` of a pairs file, read without loading its tensors into memory
    (``torch.load(mmap=True)``).

    Raises:
        DataError: as :func:`load_pairs`.
    """
    return _read(path, "cpu", mmap=True)["meta"]


def real_dataset_config(node: dict[str, Any]) -> dict[str, Any]:
    """The config of the real data behind a dataset config: ``node`` itself, or, for a
    ``dataset=reflow_pairs`` node (a run that trained on pairs), the dataset recorded in its
    pairs file's meta, followed to the real data (the k-th reflow's pairs name the data of
    the first flow).

    Raises:
        DataError: a pairs file on the way cannot be read (:func:`load_pairs`).
    """
    seen = set()
    while node.get("_target_") == LOADER:
        pairs = str(node.get("pairs"))
        if pairs in seen:
            raise DataError(f"dataset.pairs={pairs}: its meta names itself as its dataset")
        seen.add(pairs)
        node = dict(pairs_meta(pairs)["dataset"])
    return dict(node)


def _real_test_split(
    base: dict[str, Any], source: Path, test_subset: Optional[int], root: Optional[str], device
) -> DataSplits:
    """The dataset of ``base`` (the pairs' run's data) rebuilt with one training example and
    the test split ``test_subset`` asks for (None: all of it), ``root`` replacing its
    ``root`` when given.

    Raises:
        UnsafeConfig: ``base`` names code this command does not trust (it is read from
            ``source``, a file: data, never code; :func:`dgm_runner.io.run_config.check_config`).
        DataError, ConfigError: the data cannot be built (the loader's own one line).
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from dgm_runner.config import ConfigError
    from dgm_runner.io.checkpoint import CheckpointError
    from dgm_runner.io.run_config import check_config

    node = dict(base)
    check_config(node, source)  # before anything is imported
    if "subset" in node:
        node["subset"] = 1  # its training split is not used
    if "test_subset" in node:
        node["test_subset"] = test_subset
    if root is not None and "root" in node:
        node["root"] = root
    try:
        return instantiate(OmegaConf.create(node), device=device)
    except Exception as err:
        cause = err.__cause__ or err
        if isinstance(cause, (DataError, ConfigError, CheckpointError)):
            raise cause from None
        if isinstance(cause, (ValueError, TypeError)):
            raise DataError(
                f"dataset.pairs={source}: its dataset {node.get('_target_')} cannot be "
                f"rebuilt: {cause}".splitlines()[0]
            ) from None
        raise


def load_reflow_pairs(
    pairs: str,
    subset: Optional[PositiveInt] = None,
    test_subset: Optional[PositiveInt] = None,
    root: Optional[str] = None,
    device: str | torch.device = "cpu",
) -> DataSplits:
    """``dataset=reflow_pairs``: train on the (noise, sample) pairs of ``pairs``, test on the
    real test split of the data the pairs' run trained on (module docstring).

    Args:
        pairs: the file of ``dgm-reflow-pairs`` (:func:`save_pairs`).
        subset: keep only the first ``subset`` pairs.
        test_subset: keep only the first ``test_subset`` real test images (None: all of
            them; the test subset of the pairs' run is not inherited).
        root: when set, replaces ``dataset.root`` of the recorded dataset (the pairs were
            made on another machine).
        device: where the tensors live.

    Returns:
        :class:`DataSplits` named as the real dataset (``mnist``: its FID classifier
        applies), with ``train_x`` = the endpoints in data space (``(x0 + 1) / 2`` when
        ``meta["centered"]``, else ``x0``; float32, not clamped), ``train_noise`` = the
        noise (model space), ``train_y`` zeros, the real ``test_x`` / ``test_y`` /
        ``grey_test_x`` / ``binarized`` / ``n_classes``, no ``train_transform``.

    Raises:
        DataError: one line naming the file: missing or corrupt (:func:`load_pairs`), fewer
            pairs than ``subset``, pairs whose shape is not the real data's, or the real
            data cannot be found (the dataset's own message).
        UnsafeConfig: the recorded dataset names code this command does not trust.
    """
    obj = _read(pairs, "cpu")
    meta, noise, x0 = obj["meta"], obj["noise"], obj["x0"]
    if subset is not None:
        if subset > noise.shape[0]:
            raise DataError(
                f"dataset.subset={subset} is larger than the {noise.shape[0]} pairs of "
                f"{pairs}; use at most {noise.shape[0]} or null"
            )
        noise, x0 = noise[:subset], x0[:subset]
    real = _real_test_split(
        real_dataset_config(dict(meta["dataset"])), Path(pairs), test_subset, root, device
    )
    if tuple(x0.shape[1:]) != tuple(real.test_x.shape[1:]):
        raise DataError(
            f"dataset.pairs={pairs}: pairs of shape {tuple(x0.shape[1:])} but the test data "
            f"of their run ({real.name}) has {tuple(real.test_x.shape[1:])}"
        )
    x0 = x0.to(device)
    train_x = (x0 + 1.0) / 2.0 if meta["centered"] else x0  # the run's decode, not clamped
    return DataSplits(
        name=real.name,
        train_x=train_x,
        train_y=torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device),
        test_x=real.test_x,
        test_y=real.test_y,
        n_classes=real.n_classes,
        binarized=real.binarized,
        grey_test_x=real.grey_test_x,
        train_noise=noise.to(device),
    )


def check_reflow_pairs(model: dict[str, Any], pairs: Any = None, **_: Any) -> None:
    """The loader's check before any work (:func:`dgm_runner.config.validate`): the pairs
    live in the model space of their run, so this run's model must use the same one
    (``model.centered``). Only a readable pairs file is checked here; a missing or damaged
    one (or an unset ``???``) is left to the loader (and the loop), which names it.

    Raises:
        ValueError: ``model.centered`` differs from the pairs' run's (one line).
    """
    if not isinstance(pairs, str) or pairs == "???" or not Path(pairs).is_file():
        return
    try:
        centered = bool(pairs_meta(pairs)["centered"])
    except DataError:
        return
    mine = bool(model.get("centered", False))
    if mine != centered:
        raise ValueError(
            f"dataset.pairs={pairs} holds model-space pairs of a run with model.centered="
            f"{str(centered).lower()}, but this run's model has model.centered="
            f"{str(mine).lower()}: set model.centered={str(centered).lower()}"
        )


load_reflow_pairs.check = check_reflow_pairs  # type: ignore[attr-defined]
