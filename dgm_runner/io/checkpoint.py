"""Checkpoints: atomic writes, safe loads (``weights_only=True``), RNG state capture."""

from __future__ import annotations

import contextlib
import hashlib
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from dgm_runner.io.atomic import atomic_open
from dgm_runner.io.layout import RunPaths
from dgm_runner.io.legacy_config import upgrade_run_config

FORMAT = "dgm_runner/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, unsafe or not a dgm_runner checkpoint."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Atomically write ``payload`` (tensors, state dicts and plain Python values only, so
    it loads with ``weights_only=True``) tagged with the format version."""
    with atomic_open(path, "wb") as f:
        torch.save({"format": FORMAT, **payload}, f)


def checkpoint_file(run_dir: str | Path, checkpoint: str = "last") -> Path:
    """The file of ``checkpoint`` of a run: ``"last"`` / ``"best"`` name
    ``<run_dir>/checkpoints/<name>.pt`` (:meth:`RunPaths.checkpoint`); anything else is a
    path to a ``.pt`` file."""
    if checkpoint in ("last", "best"):
        return RunPaths(run_dir).checkpoint(checkpoint)
    return Path(checkpoint)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


#: What ``torch.load(..., weights_only=True)`` raises on a damaged or unsafe file inside a
#: valid-looking archive (the unpickler's errors, truncated data, a refused global): every
#: reader of this package's torch.save files catches these and reports one line.
LOAD_ERRORS = (
    pickle.UnpicklingError,
    RuntimeError,
    EOFError,
    zipfile.BadZipFile,
    ValueError,
    OSError,
    IndexError,
    KeyError,
    TypeError,
    AttributeError,
)


def _not_an_archive(path: Path) -> str | None:
    """Why ``path`` is not the zip archive ``torch.save`` writes (every checkpoint of this
    package is one), or None when it is one."""
    try:
        with open(path, "rb") as f:
            if zipfile.is_zipfile(f):
                return None
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    return "not the zip archive that torch.save writes (is it a checkpoint at all?)"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` without executing code.

    Raises:
        CheckpointError: the path is missing, a directory or not a regular file; the file
            is unreadable, not the zip archive ``torch.save`` writes (any other file, e.g.
            ``checkpoint=/etc/passwd``, is never handed to the unpickler), truncated, a
            pickle with code (refused by ``weights_only=True``) or not a dgm_runner
            checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        what = (
            "is a directory, not a checkpoint file (checkpoint= takes last, best or the path "
            "of a .pt file)"
            if path.is_dir()
            else "is not a regular file"
            if path.exists()
            else "does not exist"
        )
        raise CheckpointError(f"checkpoint {path} {what}")
    problem = _not_an_archive(path)
    if problem:
        raise CheckpointError(f"{path} is not a readable safe checkpoint: {problem}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except LOAD_ERRORS as err:  # the unpickler's errors on damaged data inside a valid archive
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is not a readable safe checkpoint: {first}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a dgm_runner checkpoint (format tag missing)")
    if "config" in obj:  # a run from before issue 27: today's model.sde and optimizer nodes
        try:
            obj["config"] = upgrade_run_config(obj["config"])
        except ValueError as err:
            raise CheckpointError(f"{path}: {err}") from None
    return obj


def require_keys(
    ckpt: dict[str, Any], keys: tuple[str, ...], path: str | Path, action: str
) -> None:
    """Raise one-line :class:`CheckpointError` unless ``ckpt`` holds every key in ``keys``
    (a file with the format tag but not written by the loop, or written by an older one).

    Args:
        ckpt: a loaded checkpoint; keys: what ``action`` reads; path: for the message.
    """
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"{path} lacks {', '.join(missing)}: it is not a run checkpoint this tool can {action}"
        )


def capture_rng(data_generator: torch.Generator) -> dict[str, Any]:
    """Every RNG state the run depends on, as weights_only-safe values."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "data": data_generator.get_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


@contextlib.contextmanager
def unchanged_rng() -> Iterator[None]:
    """Leave the global RNGs (torch CPU and CUDA, numpy, python) as they were before the
    block: the evaluations and figures of a run draw what they like, and the training that
    follows (also after a resume that extends a finished run) sees the same stream as if
    they had not run."""
    np_state, py_state = np.random.get_state(), random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    with torch.random.fork_rng(devices=[], enabled=True):
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
            if cuda is not None:
                torch.cuda.set_rng_state_all(cuda)


def restore_rng(state: dict[str, Any], data_generator: torch.Generator) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    data_generator.set_state(state["data"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
