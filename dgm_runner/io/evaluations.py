"""What a ``dgm-eval`` record (``<run>/eval/metrics*.json``) was computed from, and whether
it still describes its run.

``dgm-eval`` stamps each record with the ``epoch``, ``step`` and ``checkpoint_sha256`` of
the checkpoint it evaluated (and ``test_subset`` when set). The readers of run directories
(``dgm-report``, the sweep summary) take a record's numbers as the run's results only when
it is *current*: of the file ``checkpoints/last.pt`` holds now (same sha256), on the full
test split, in ``eval/metrics.json`` (the run's own sampler), and then only its finite
values. Every other record is *labelled* (:func:`evaluation_status`): ``stale (epoch 1)``
after the run trained on, ``unverified`` when it carries no hash (written by an older
``dgm-eval``), ``test_subset=N`` for a subset.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from dgm_runner.io.atomic import read_json
from dgm_runner.io.checkpoint import checkpoint_file, file_sha256
from dgm_runner.io.layout import RunPaths

#: The record of an evaluation with the run's own sampler on the full test split.
MAIN = RunPaths.EVALUATION


def checkpoint_stamp(path: str | Path, ckpt: dict[str, Any]) -> dict[str, Any]:
    """``{"epoch", "step", "checkpoint_sha256"}`` of a loaded checkpoint ``ckpt`` read from
    ``path``: what every ``eval/*.json`` record carries.

    Raises:
        OSError: ``path`` cannot be read.
    """
    return {
        "epoch": ckpt.get("epoch"),
        "step": ckpt.get("step"),
        "checkpoint_sha256": file_sha256(path),
    }


def _hasher(run_dir: Path) -> Callable[[str], str | None]:
    """``digest("last")`` / ``digest("best")``: the sha256 of the run's checkpoint file
    (None when missing or unreadable), each file hashed at most once."""
    cache: dict[str, str | None] = {}

    def digest(name: str) -> str | None:
        if name not in cache:
            try:
                cache[name] = file_sha256(checkpoint_file(run_dir, name))
            except OSError:
                cache[name] = None
        return cache[name]

    return digest


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def evaluation_status(record: dict[str, Any], digest: Callable[[str], str | None]) -> str:
    """``current`` or a label saying why ``record`` is not the run's result: ``stale (epoch
    1)`` (an older ``last.pt``), ``best.pt (epoch 4)``, ``unverified (epoch 2)`` (no hash),
    with ``, test_subset=N`` and ``, non-finite values`` appended where they apply.

    Args:
        record: an ``eval/*.json`` record; digest: ``digest("last")`` -> the sha256 of the
            run's ``checkpoints/last.pt`` now (see :func:`evaluations`).
    """
    sha, epoch = record.get("checkpoint_sha256"), record.get("epoch", "?")
    if not sha:
        status = f"unverified (epoch {epoch}, no checkpoint hash)"
    elif sha == digest("last"):
        status = "current"
    elif record.get("checkpoint") == "best" and sha == digest("best"):
        status = f"best.pt (epoch {epoch})"
    elif record.get("checkpoint", "last") in ("last", "best"):
        status = f"stale (epoch {epoch})"
    else:
        status = f"checkpoint {record['checkpoint']} (epoch {epoch})"
    if record.get("test_subset"):
        status += f", test_subset={record['test_subset']}"
    if not all(_finite(v) for k, v in record.items() if "/" in k):
        status += ", non-finite values"
    return status


def evaluations(run_dir: str | Path) -> list[tuple[str, dict[str, Any], str]]:
    """``(file name, record, status)`` of every readable ``<run_dir>/eval/metrics*.json``,
    ``metrics.json`` first, then by name; status as :func:`evaluation_status`."""
    run_dir = Path(run_dir)
    files = sorted(RunPaths(run_dir).evaluations(), key=lambda p: (p.name != MAIN, p.name))
    digest = _hasher(run_dir)
    out = []
    for path in files:
        record = read_json(path)
        if isinstance(record, dict):
            out.append((path.name, record, evaluation_status(record, digest)))
    return out


def is_result(name: str, status: str) -> bool:
    """Whether an evaluation (file ``name``, :func:`evaluation_status` ``status``) is the
    run's own result: ``eval/metrics.json`` of the current checkpoint on the full test split
    with finite values only."""
    return name == MAIN and status == "current"


def with_current_evaluation(
    metrics: dict[str, Any], found: list[tuple[str, dict[str, Any], str]]
) -> dict[str, Any]:
    """A copy of a run's final ``metrics`` (``metrics.json``) updated with the metric
    values (``test/...``) of its current, full-test, finite evaluation among ``found``
    (:func:`evaluations`, :func:`is_result`); stale, subset, non-finite and other-sampler
    records change nothing."""
    out = dict(metrics)
    for name, record, status in found:
        if is_result(name, status):
            out.update({k: v for k, v in record.items() if "/" in k})
    return out
