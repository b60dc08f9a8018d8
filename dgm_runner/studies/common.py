"""Helpers shared by the studies: parameter types, agreement rows, ``result.json``, PNGs.

A study compares *measured* numbers (Monte Carlo, iterations, training) with *closed
forms*. Each comparison is one row made by :func:`check`; a study returns a dict with
``checks`` (the rows) that :func:`write_result` stores as ``result.json`` and
``dgm-study all`` gathers into one summary table.

A study's parameters are declared by the annotations of its ``run`` signature
(:mod:`dgm_runner.config`'s ``PositiveInt``, ``PositiveFloat``, ``Annotated[..., Range(...)]``,
``tuple[X, ...]`` for lists); ``dgm-study`` validates the study's config node against them
(:func:`dgm_runner.studies.validate_study`) before the study runs. Only what a signature
cannot say (a non-empty list, a relation between two parameters, a diverged run) is
checked by hand, with :func:`require`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import torch
from matplotlib.figure import Figure

from dgm_runner.config import Range
from dgm_runner.io.atomic import atomic_open, write_json

#: Relations a check can assert between the measured value and the closed form.
RELATIONS = ("==", "<=", ">=")

#: A Monte-Carlo sample size (or any count a spread is taken over): at least 2, so that a
#: standard error exists.
SampleSize = Annotated[int, Range(ge=2)]


def require(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition``: a one-line error for what the
    annotations cannot state (non-empty lists, relations between parameters, divergence)."""
    if not condition:
        raise ValueError(message)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the old value after.

    Many tiny ops (a small MLP trained step by step) run several times faster on one
    thread than on threads that compete with other processes for the cores.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def check(
    quantity: str,
    measured: float,
    closed_form: float,
    *,
    se: float | None = None,
    z_tol: float = 4.0,
    abs_tol: float = 1e-9,
    relation: str = "==",
) -> dict[str, Any]:
    """One agreement row between a measured value and its closed form.

    Args:
        quantity: what is compared, e.g. ``"Var REINFORCE, d=256"``.
        measured: the measured value (Monte Carlo mean, iterate, trained model).
        closed_form: the value the theory gives.
        se: standard error of ``measured`` when it is a Monte-Carlo estimate; then the
            agreement is ``z = (measured - closed_form) / se`` standard errors and the row
            is ok when ``|z| <= z_tol``. Without ``se`` (deterministic measurement) the row
            is ok when ``|measured - closed_form| <= abs_tol``.
        relation: ``"=="`` (agree), ``"<="`` or ``">="`` (measured is a bound: ok when the
            inequality holds up to ``z_tol * se`` or ``abs_tol``).

    Returns:
        ``{quantity, measured, closed_form, diff, se, z, relation, agreement, ok}``;
        ``agreement`` is the human-readable column of the summary table.
    """
    require(relation in RELATIONS, f"relation={relation!r} is invalid: must be one of {RELATIONS}")
    measured, closed_form = float(measured), float(closed_form)
    diff = measured - closed_form
    z = diff / se if se is not None and se > 0 else None
    slack = z_tol * se if z is not None else abs_tol
    if relation == "==":
        ok = abs(z) <= z_tol if z is not None else abs(diff) <= abs_tol
    elif relation == "<=":
        ok = diff <= slack
    else:
        ok = diff >= -slack
    if z is not None:
        agreement = f"{z:+.2f} SE"
    else:
        agreement = f"diff {diff:+.2e}"
    if relation != "==":
        agreement = (
            f"{relation} holds ({agreement})" if ok else f"{relation} violated ({agreement})"
        )
    return {
        "quantity": quantity,
        "measured": measured,
        "closed_form": closed_form,
        "diff": diff,
        "se": None if se is None else float(se),
        "z": z,
        "relation": relation,
        "agreement": agreement,
        "ok": bool(ok),
    }


def to_jsonable(obj: Any) -> Any:
    """Recursively turn numpy/torch scalars and arrays into plain Python for JSON."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy arrays/scalars, torch tensors
        return to_jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_result(out_dir: str | Path, result: dict[str, Any]) -> Path:
    """Atomically write ``result`` (made JSON-safe) to ``out_dir/result.json``; return the path."""
    path = Path(out_dir) / "result.json"
    write_json(path, to_jsonable(result))
    return path


def new_figure(
    ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (5.0, 4.0)
) -> tuple[Figure, Any]:
    """A pyplot-free Agg figure with a ``nrows x ncols`` grid of axes of ``size`` inches each."""
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes.ravel()


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Atomically write ``fig`` as a PNG to ``path``; return the path."""
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    return path


def markdown_table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    """A GitHub markdown table; floats are shown with 6 significant digits."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.6g}"
        return str(v).replace("|", "\\|")

    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def checks_table(checks: list[dict[str, Any]]) -> str:
    """The ``checks`` of one study as a markdown table (quantity, measured, closed form,
    agreement)."""
    rows = [
        (
            c["quantity"],
            c["measured"],
            c["closed_form"],
            c["agreement"] + ("" if c["ok"] else "  **FAIL**"),
        )
        for c in checks
    ]
    return markdown_table(("quantity", "measured", "closed form", "agreement"), rows)
