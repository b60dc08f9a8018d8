"""The results tables of the docs, made from run directories: the table spec
(``docs/results/tables.yaml``), one row per run directory, and the provenance line printed
under each table (which runs, finished when, by which commit, with which command).

A spec lists tables by name::

    tables:
      vae_mlp_latent_dim:
        label: N_z                    # header of the first column (default: run)
        columns:                      # metric keys of metrics.json, in order
          epochs:                     # built-in: metrics.json "epoch"
          s/epoch:                    # built-in: "time_per_epoch_s" (seconds)
          test/elbo_loss: {header: test/elbo_loss, fmt: .2f}
        rows:
          - {label: 2, run: outputs/results/vae_mlp_nz2}   # relative to the repository root
        note: optional Markdown appended to the provenance line
    include: [../../configs/leaderboard.yaml]   # more tables, from files relative to this one

A row may also say which runs it stands for, ``match: {experiment_name: vae_burda,
objective.k: 5}`` (dotted keys into a run's saved ``.hydra/config.yaml``, values compared
with ``==``): ``dgm-report`` fills such rows from a user's own outputs folder
(:func:`match_records`) instead of the ``run`` directory the docs use.

A row's values are the final metrics of its run's ``metrics.json``
(:class:`~dgm_runner.io.layout.RunPaths`), as training wrote them; a run directory that is
missing gives a "not run" row. :func:`render_table` is deterministic (no clock), so a page
holding its output can be checked against the run directories (``--check``).

A table of ``kind: sampler_table`` is instead the samplers x NFE table that
``dgm-sampler-table`` wrote for one run (its ``STEM.json``, :class:`SamplerTableSpec`)::

    tables:
      fm_mnist_cpu_samplers:
        kind: sampler_table
        run: outputs/leaderboard/fm_mnist_cpu   # relative to the repository root
        file: eval/sampler_table_1000.json      # relative to the run (default:
                                                # eval/sampler_table.json)
        command: dgm-sampler-table RUN --n 1000 --rows heun:5,10   # optional, shown
        note: optional Markdown appended to the provenance line

Its provenance line gives the file's date (its modification time, UTC) and the run's
finish date, commit and dirty flag (the run's ``metrics.json``); a missing file gives a
"not run" table (:func:`read_sampler_table`, :func:`render_sampler_table`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from dgm_runner.io.atomic import read_json
from dgm_runner.io.layout import RunPaths
from dgm_runner.io.markdown import md_code, md_text

#: The command that regenerates the tables, as the provenance line names it.
GENERATOR = "python scripts/results_table.py --update"
#: Where the spec lives, relative to the repository root.
DEFAULT_SPEC = Path("docs") / "results" / "tables.yaml"

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_HEX = re.compile(r"[0-9a-f]{40}")


class SpecError(ValueError):
    """The table spec is unreadable or not of the documented form; one line naming the
    table and the key."""


@dataclass(frozen=True)
class Column:
    """One value column of a results table.

    Attributes:
        key: the ``metrics.json`` key whose value the column shows.
        header: the column's header (plain text; escaped when rendered).
        fmt: a ``format()`` spec for numbers (``.2f``, ``.4g``, ``d``); other values are
            shown as text.
        alternatives: further keys, tried in order when a run has no ``key``.
        scale: a factor applied to numbers (seconds -> minutes).
    """

    key: str
    header: str
    fmt: str = ".4g"
    alternatives: tuple[str, ...] = ()
    scale: float = 1.0

    def value(self, metrics: dict[str, Any]) -> tuple[Any, Any]:
        """``(value, standard error)`` of this column in a run's ``metrics``: the first of
        ``key`` and its ``alternatives`` the run recorded (models name their likelihood
        differently: ``test/nll``, ``test/nll_iwae_k5000``), and the run's ``<key>_se``
        beside it (None where not recorded)."""
        for key in (self.key, *self.alternatives):
            value, se = metrics.get(key), metrics.get(f"{key}_se")
            if value is None:
                continue
            if self.scale != 1.0 and _number(value):
                value, se = value * self.scale, se * self.scale if _number(se) else se
            return value, se
        return None, None


#: Column names that are not metrics.json keys: name -> the column they stand for.
BUILTIN_COLUMNS = {
    "epochs": Column("epoch", "epochs", "d"),
    "s/epoch": Column("time_per_epoch_s", "s/epoch", ".1f"),
    "train min": Column("train_time_s", "train min", ".0f", scale=1 / 60),
    "parameters": Column("n_parameters", "parameters", ",d"),
}


@dataclass(frozen=True)
class Row:
    """One row of a results table: a label and the run directory its values come from.

    Attributes:
        label: the first cell (plain text; escaped when rendered).
        run: the run directory as the spec gives it (relative to the repository root, or
            absolute).
        published: the published number beside it, if any (adds the columns published,
            gap and source to the table).
        paper: the command of the paper's budget (its passes), listed under the table.
        match: ``(dotted config key, value)`` pairs a run's saved config must hold to stand
            for this row in a report of any outputs folder (:func:`match_records`); empty:
            the row is filled only from ``run``.
    """

    label: str
    run: str
    published: "Published | None" = None
    paper: str = ""
    match: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Published:
    """The published number a row stands beside (checked in the paper itself).

    Attributes:
        value: in the unit of the table's first value column.
        source: paper, table (e.g. ``Burda et al. 2016, Table 1``).
        protocol: binarization / dequantization, importance samples, NFE, ... of the
            published number.
    """

    value: float
    source: str
    protocol: str


@dataclass(frozen=True)
class TableSpec:
    """One table of the spec (see the module docstring for the YAML form).

    Attributes:
        name: the table's name, as the page markers give it.
        columns: the value columns, in order.
        rows: the rows, in order.
        label: the header of the label column.
        note: Markdown (the spec author's, not escaped) appended to the provenance line.
    """

    name: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    label: str = "run"
    note: str = ""


#: Where ``dgm-sampler-table`` writes its rows by default, relative to the run directory.
DEFAULT_SAMPLER_TABLE = f"{RunPaths.EVAL}/{RunPaths.SAMPLER_TABLE}.json"


@dataclass(frozen=True)
class SamplerTableSpec:
    """A table of ``kind: sampler_table``: the rows ``dgm-sampler-table`` wrote for one run
    (see the module docstring for the YAML form).

    Attributes:
        name: the table's name, as the page markers give it.
        run: the run directory as the spec gives it (relative to the repository root, or
            absolute).
        file: the rows' JSON file, relative to ``run``.
        command: the ``dgm-sampler-table`` command that made the file, shown under the
            table (plain text; empty: not shown).
        note: Markdown (the spec author's, not escaped) appended to the provenance line.
    """

    name: str
    run: str
    file: str = DEFAULT_SAMPLER_TABLE
    command: str = ""
    note: str = ""

    @property
    def rows(self) -> tuple[Row, ...]:
        """No rows of run directories (the table's rows are its file's), so that code
        walking the row tables' rows (``dgm-report``'s matching) passes over it."""
        return ()

    @property
    def path(self) -> str:
        """The file as the page names it: ``run/file``."""
        return f"{self.run.rstrip('/')}/{self.file}"


#: A table of the spec, of either kind.
AnyTableSpec = TableSpec | SamplerTableSpec


@dataclass
class RunRecord:
    """What one row read from its run directory.

    Attributes:
        row: the spec's row.
        state: ``"ok"``, ``"not run"`` (no such directory) or ``"unreadable"`` (no
            readable ``metrics.json`` in it).
        metrics: ``metrics.json``'s content (empty unless ``state`` is ``"ok"``).
        overrides: the run's command-line overrides (``.hydra/overrides.yaml``), or None
            where not recorded.
        run_dir: the directory read (``None`` for a row matched to no run).
    """

    row: Row
    state: str
    metrics: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] | None = None
    run_dir: Path | None = None


# -- the spec


def _column(table: str, name: str, entry: Any) -> Column:
    where = f"table {table!r}, column {name!r}"
    if entry is None:
        entry = {}
    if not isinstance(entry, dict) or set(entry) - {"header", "fmt", "keys"}:
        raise SpecError(f"{where}: expected null or a mapping with keys header, fmt, keys")
    base = BUILTIN_COLUMNS.get(name, Column(name, name))
    header = str(entry.get("header", base.header))
    fmt = str(entry.get("fmt", base.fmt))
    if not any(_formats(value, fmt) for value in (0.5, 1)):
        raise SpecError(f"{where}: fmt {fmt!r} formats no number")
    keys = entry.get("keys", [base.key])
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise SpecError(f"{where}: keys must be a non-empty list of metrics.json keys")
    return Column(keys[0], header, fmt, tuple(keys[1:]), base.scale)


def _formats(value: float, fmt: str) -> bool:
    try:
        format(value, fmt)
    except (ValueError, TypeError):
        return False
    return True


def _row(table: str, i: int, entry: Any) -> Row:
    where = f"table {table!r}, row {i + 1}"
    if (
        not isinstance(entry, dict)
        or not {"label", "run"} <= set(entry) <= {"label", "run", "published", "paper", "match"}
        or not isinstance(entry["run"], str)
        or not entry["run"]
    ):
        raise SpecError(
            f"{where}: expected {{label: ..., run: RUN_DIR[, published, paper, match]}}"
        )
    match = entry.get("match") or {}
    if not isinstance(match, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, (str, int, float, bool)))
        for k, v in match.items()
    ):
        raise SpecError(f"{where}: match must map dotted config keys to plain values")
    published = entry.get("published")
    if published is not None:
        if (
            not isinstance(published, dict)
            or set(published) != {"value", "source", "protocol"}
            or not _number(published["value"])
        ):
            raise SpecError(f"{where}: published must be {{value: NUMBER, source, protocol}}")
        published = Published(
            float(published["value"]), str(published["source"]), str(published["protocol"])
        )
    return Row(
        str(entry["label"]),
        entry["run"],
        published,
        str(entry.get("paper") or ""),
        tuple(match.items()),
    )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_spec(data: Any) -> dict[str, AnyTableSpec]:
    """The tables of a spec already read from YAML, by name, in the spec's order: a
    :class:`TableSpec` per table of run directories (the default kind), a
    :class:`SamplerTableSpec` per ``kind: sampler_table``.

    Raises:
        SpecError: not a mapping with ``tables``; a table name that a page marker cannot
            name; an unknown kind; a table without columns or rows; a sampler table without
            ``run``; an unknown key.
    """
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("tables"), dict)
        or set(data) - {"tables", "include"}
    ):
        raise SpecError("the spec must be a mapping with a 'tables' mapping (and 'include')")
    tables: dict[str, AnyTableSpec] = {}
    for name, entry in data["tables"].items():
        name = str(name)
        if not _NAME.fullmatch(name):
            raise SpecError(f"table {name!r}: names are letters, digits, '_', '-' and '.'")
        kind = entry.get("kind", "runs") if isinstance(entry, dict) else "runs"
        if kind not in ("runs", "sampler_table"):
            raise SpecError(f"table {name!r}: kind must be runs (the default) or sampler_table")
        if kind == "sampler_table":
            tables[name] = _sampler_spec(name, entry)
            continue
        allowed = {"kind", "columns", "rows", "label", "note"}
        if not isinstance(entry, dict) or set(entry) - allowed:
            raise SpecError(f"table {name!r}: expected a mapping with keys {sorted(allowed)}")
        columns, rows = entry.get("columns"), entry.get("rows")
        if not isinstance(columns, dict) or not columns:
            raise SpecError(f"table {name!r}: 'columns' must be a non-empty mapping")
        if not isinstance(rows, list) or not rows:
            raise SpecError(f"table {name!r}: 'rows' must be a non-empty list")
        tables[name] = TableSpec(
            name=name,
            columns=tuple(_column(name, str(k), v) for k, v in columns.items()),
            rows=tuple(_row(name, i, r) for i, r in enumerate(rows)),
            label=str(entry.get("label", "run")),
            note=str(entry.get("note", "") or "").strip(),
        )
    return tables


def _sampler_spec(name: str, entry: dict[str, Any]) -> SamplerTableSpec:
    allowed = {"kind", "run", "file", "command", "note"}
    if set(entry) - allowed:
        raise SpecError(f"table {name!r}: a sampler_table has the keys {sorted(allowed)}")
    strings = {key: entry.get(key) for key in ("run", "file", "command", "note")}
    for key, value in strings.items():
        if value is not None and not isinstance(value, str):
            raise SpecError(f"table {name!r}: {key} must be a string")
    if not strings["run"]:
        raise SpecError(f"table {name!r}: a sampler_table needs run: RUN_DIR")
    return SamplerTableSpec(
        name=name,
        run=strings["run"],
        file=strings["file"] or DEFAULT_SAMPLER_TABLE,
        command=(strings["command"] or "").strip(),
        note=(strings["note"] or "").strip(),
    )


def load_spec(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, AnyTableSpec]:
    """The tables of the spec file ``path`` (YAML), by name: its own, then those of the
    files its ``include`` list names (relative to ``path``'s folder), in that order.

    Raises:
        SpecError: the file is missing or not YAML, or as :func:`parse_spec`; an include
            that is not a list of paths, that includes itself, or that names a table twice.
    """
    path = Path(path)
    if path.resolve() in _seen:
        raise SpecError(f"{path}: included by itself")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SpecError(f"cannot read the table spec {path}: {str(err).splitlines()[0]}") from None
    try:
        tables = parse_spec(data)
    except SpecError as err:
        raise SpecError(f"{path}: {err}") from None
    include = data.get("include") or []
    if not isinstance(include, list) or not all(isinstance(i, str) for i in include):
        raise SpecError(f"{path}: include must be a list of spec files")
    for other in include:
        more = load_spec(path.parent / other, (*_seen, path.resolve()))
        twice = sorted(set(more) & set(tables))
        if twice:
            raise SpecError(f"{path}: table {twice[0]!r} is defined twice (include {other})")
        tables.update(more)
    return tables


# -- the rows


def read_run(row: Row, root: str | Path) -> RunRecord:
    """What ``row``'s run directory (``root / row.run``) holds; never raises for a missing
    or broken run (its state says so)."""
    return read_run_dir(row, Path(root) / row.run)


def read_run_dir(row: Row, run_dir: Path) -> RunRecord:
    """What the run directory ``run_dir`` holds, as ``row``'s record (:func:`read_run`)."""
    if not run_dir.is_dir():
        return RunRecord(row, "not run", run_dir=run_dir)
    paths = RunPaths(run_dir)
    metrics = read_json(paths.metrics)
    try:
        overrides = yaml.safe_load(paths.overrides_yaml.read_text())
    except (OSError, yaml.YAMLError):
        overrides = None
    overrides = [str(o) for o in overrides] if isinstance(overrides, list) else None
    if not isinstance(metrics, dict):
        return RunRecord(row, "unreadable", overrides=overrides, run_dir=run_dir)
    return RunRecord(row, "ok", metrics, overrides, run_dir)


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        try:
            return format(value, fmt)
        except ValueError:  # fmt "d" for a float: an integral one as an int, else 4 digits
            if isinstance(value, float) and value.is_integer():
                return format(int(value), fmt)
            return f"{value:.4g}"
    return md_text(value)


def _row_cells(record: RunRecord, columns: tuple[Column, ...]) -> list[str]:
    label = md_text(record.row.label)
    if record.state != "ok":
        why = "not run" if record.state == "not run" else "no readable metrics.json"
        return [label, why, *["-"] * (len(columns) - 1)]
    status = record.metrics.get("status", "completed")
    if status != "completed":
        label += f" ({md_text(status)})"
    cells = []
    for column in columns:
        value, se = column.value(record.metrics)
        cell = _cell(value, column.fmt)
        cells.append(cell + (f" ± {_cell(se, column.fmt)}" if _number(se) else ""))
    return [label, *cells]


def _published_cells(record: RunRecord, first: Column) -> list[str]:
    """``published``, ``gap`` (ours - published, in the first column's unit) and
    ``source (protocol)`` of a row; dashes for a row without a published number."""
    published = record.row.published
    if published is None:
        return ["-", "-", "-"]
    ours, _ = first.value(record.metrics) if record.state == "ok" else (None, None)
    gap = _cell(ours - published.value, f"+{first.fmt}") if _number(ours) else "-"
    source = f"{md_text(published.source)} ({md_text(published.protocol)})"
    return [_cell(published.value, first.fmt), gap, source]


# -- the provenance line


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _dates(records: list[RunRecord]) -> str:
    dates = []
    for r in records:
        finished = r.metrics.get("finished")
        dates.append(str(finished)[:10] if isinstance(finished, str) and finished else None)
    known = sorted({d for d in dates if d})
    missing = dates.count(None)
    if not known:
        return "on dates not recorded"
    text = known[0] if len(known) == 1 else f"{known[0]} to {known[-1]}"
    return text + (f" ({_plural(missing, 'run')} without a date)" if missing else "")


def _code(record: RunRecord) -> tuple[str, str] | None:
    """``(short commit, dirty)`` of a run, or None when its metrics.json records none."""
    code = record.metrics.get("code")
    commit = code.get("commit") if isinstance(code, dict) else None
    if not isinstance(commit, str) or not _HEX.fullmatch(commit):
        return None
    dirty = code.get("dirty")
    return commit[:7], {True: "yes", False: "no"}.get(dirty, "unknown")


def _commits(records: list[RunRecord]) -> str:
    groups: dict[tuple[str, str] | None, int] = {}
    for r in records:
        key = _code(r)
        groups[key] = groups.get(key, 0) + 1
    if list(groups) == [None]:
        return "commit not recorded"
    if len(groups) == 1:
        ((commit, dirty),) = groups
        return f"commit {commit}, dirty: {dirty}"
    parts = [
        f"{commit} (dirty: {dirty}; {_plural(n, 'run')})"
        for (commit, dirty), n in ((k, n) for k, n in groups.items() if k is not None)
    ]
    if None in groups:
        parts.append(f"not recorded ({_plural(groups[None], 'run')})")
    return "commits " + ", ".join(parts)


def _commands(records: list[RunRecord]) -> str:
    """The ``dgm-train`` command of each row, the overrides all rows share written once."""
    ran = [r for r in records if r.state != "not run"]
    recorded = [r for r in ran if r.overrides is not None]
    if not recorded:
        return "Commands not recorded." if ran else ""
    shared = [o for o in recorded[0].overrides if all(o in r.overrides for r in recorded)]
    own = {id(r): [o for o in r.overrides if o not in shared] for r in recorded}
    command = " ".join(["dgm-train", *shared])
    if not any(own.values()):
        unrecorded = [md_text(r.row.label) for r in ran if r.overrides is None]
        text = f"Command: {md_code(command)}."
        return text + (f" Not recorded for: {', '.join(unrecorded)}." if unrecorded else "")
    per_row = []
    for r in ran:
        if r.overrides is None:
            text = "not recorded"
        else:
            text = md_code(" ".join(own[id(r)])) if own[id(r)] else "nothing more"
        per_row.append(f"{md_text(r.row.label)}: {text}")
    return f"Command: {md_code(command + ' ...')} with, per row, " + "; ".join(per_row) + "."


def provenance_line(
    records: list[RunRecord], columns: tuple[Column, ...] = (), generator: str = GENERATOR
) -> str:
    """The paragraph under a table: how it was made, from how many run directories,
    finished on which dates, by which commits, with which commands; and that seconds per
    epoch depend on the machine's load when the table shows them.

    Example: ``Generated by `python scripts/results_table.py --update` from 4 run
    directories finished 2026-12-07 (commit 4134e59, dirty: no). Command: ...``
    """
    found = [r for r in records if r.state == "ok"]
    unread = sum(r.state == "unreadable" for r in records)
    not_run = sum(r.state == "not run" for r in records)
    dirs = {0: "no run directory", 1: "1 run directory"}.get(
        len(found), f"{len(found)} run directories"
    )
    text = f"Generated by `{generator}` from {dirs}"
    if found:
        text += f" finished {_dates(found)} ({_commits(found)})"
    missing = [f"{_plural(not_run, 'row')} not run"] if not_run else []
    missing += [f"{unread} without a readable metrics.json"] if unread else []
    text += (f"; {', '.join(missing)}" if missing else "") + "."
    commands = _commands(records)
    if commands:
        text += " " + commands
    if any(c.key == "time_per_epoch_s" for c in columns):
        text += " s/epoch: training wall time per epoch, which depends on the machine's load."
    return text


# -- the table


def render_table(spec: TableSpec, root: str | Path) -> str:
    """The Markdown of ``spec``'s table from the run directories under ``root``: the table,
    a blank line and the provenance paragraph (plus the spec's note)."""
    records = [read_run(row, root) for row in spec.rows]
    return render_records(spec, records)


def render_records(spec: TableSpec, records: list[RunRecord], generator: str = GENERATOR) -> str:
    """:func:`render_table` from records already read (one per row of ``spec``); the
    provenance line names ``generator`` as the command that made the table."""
    headers = [md_text(spec.label), *(md_text(c.header) for c in spec.columns)]
    published = any(r.published is not None for r in spec.rows)
    if published:  # beside the first value column
        headers[2:2] = ["published", "gap", "source (protocol)"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for record in records:
        cells = _row_cells(record, spec.columns)
        if published:
            cells[2:2] = _published_cells(record, spec.columns[0])
        lines.append("| " + " | ".join(cells) + " |")
    paragraph = provenance_line(records, spec.columns, generator)
    if spec.note:
        paragraph += " " + spec.note
    papers = [f"- {md_text(r.label)}: {md_code(r.paper)}" for r in spec.rows if r.paper]
    if papers:
        paragraph += "\n\nThe paper's budget, for a machine with more time:\n\n" + "\n".join(papers)
    return "\n".join([*lines, "", paragraph])


# -- the samplers x NFE table of one run (kind: sampler_table)

#: The keys of a ``dgm-sampler-table`` row that have columns of their own (or none: ``n``,
#: the feature extractor's identity); any other key of a row (``method``, ``guidance``,
#: ``eta``, ...) is part of the row's sampler, shown as ``, key=value``.
SAMPLER_TABLE_KEYS = frozenset(
    {
        "sampler",
        "steps",
        "nfe",
        "seconds_per_1000",
        "fid",
        "kid",
        "kid_std",
        "precision",
        "recall",
        "class_accuracy",
        "n",
        "reference",
        "classifier_sha256",
        "classifier_shipped",
    }
)
_SAMPLER_NUMBERS = ("nfe", "seconds_per_1000", "fid", "kid", "kid_std", "precision", "recall")
_SAMPLER_HEADERS = (
    "sampler",
    "steps",
    "NFE",
    "FID",
    "KID",
    "precision",
    "recall",
    "s / 1000 images",
)


def sampler_rows_valid(rows: Any) -> bool:
    """Whether ``rows`` is what ``dgm-sampler-table`` writes: a non-empty list of dicts,
    each with a string ``sampler``, an integer or null ``steps``, numbers for ``nfe``,
    ``seconds_per_1000``, ``fid``, ``kid``, ``kid_std``, ``precision``, ``recall``, and a
    number or nothing for ``class_accuracy``."""
    if not isinstance(rows, list) or not rows:
        return False
    for row in rows:
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("sampler"), str)
            or "steps" not in row
            or not (row["steps"] is None or _integer(row["steps"]))
            or not all(_number(row.get(key)) for key in _SAMPLER_NUMBERS)
            or not (row.get("class_accuracy") is None or _number(row["class_accuracy"]))
        ):
            return False
    return True


def sampler_table_markdown(rows: list[dict[str, Any]]) -> str:
    """The rows of ``dgm-sampler-table`` (:func:`sampler_rows_valid`) as a Markdown table:
    sampler (and the row's other keys as ``, key=value``), steps (``-`` for an adaptive
    sampler's null), NFE, FID (``.1f``), KID (``.1f +- .1f``), precision and recall
    (``.3f``), seconds per 1000 images (``.1f``), and class accuracy (``.4f``) when some row
    has it. Text is escaped (:func:`~dgm_runner.io.markdown.md_text`); for plain sampler
    names and values the lines are those of ``dgm-sampler-table``'s own ``.md`` file
    (:func:`dgm_runner.cli.sampler_table.format_markdown`).
    """
    accuracy = any(r.get("class_accuracy") is not None for r in rows)
    headers = [*_SAMPLER_HEADERS, *(["class accuracy"] if accuracy else [])]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        extra = "".join(f", {k}={v}" for k, v in r.items() if k not in SAMPLER_TABLE_KEYS)
        cells = [
            md_text(f"{r['sampler']}{extra}"),
            "-" if r["steps"] is None else md_text(r["steps"]),
            md_text(r["nfe"]),
            f"{r['fid']:.1f}",
            f"{r['kid']:.1f} +- {r['kid_std']:.1f}",
            f"{r['precision']:.3f}",
            f"{r['recall']:.3f}",
            f"{r['seconds_per_1000']:.1f}",
        ]
        if accuracy:
            value = r.get("class_accuracy")
            cells.append("-" if value is None else f"{value:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class SamplerTableRecord:
    """What a sampler table read from its run directory.

    Attributes:
        spec: the spec's table.
        state: ``"ok"``, ``"not run"`` (no such file) or ``"unreadable"`` (not the rows
            ``dgm-sampler-table`` writes: :func:`sampler_rows_valid`).
        rows: the file's rows (empty unless ``state`` is ``"ok"``).
        made: the file's modification date (``YYYY-MM-DD``, UTC; empty unless ``state``
            is ``"ok"``).
        run: the run directory's record (:func:`read_run_dir`): its finish date, commit
            and dirty flag.
    """

    spec: SamplerTableSpec
    state: str
    rows: list[dict[str, Any]]
    made: str
    run: RunRecord


def read_sampler_table(spec: SamplerTableSpec, root: str | Path) -> SamplerTableRecord:
    """What ``spec``'s file (``root / spec.run / spec.file``) and its run directory hold;
    never raises for a missing or broken file (its state says so)."""
    run_dir = Path(root) / spec.run
    run = read_run_dir(Row(spec.run, spec.run), run_dir)
    path = run_dir / spec.file
    if not path.is_file():
        return SamplerTableRecord(spec, "not run", [], "", run)
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return SamplerTableRecord(spec, "unreadable", [], "", run)
    rows = read_json(path)
    if not sampler_rows_valid(rows):
        return SamplerTableRecord(spec, "unreadable", [], "", run)
    made = datetime.fromtimestamp(mtime, tz=timezone.utc).date().isoformat()
    return SamplerTableRecord(spec, "ok", rows, made, run)


def _run_provenance(run: RunRecord) -> str:
    """``the run: finished DATE, commit X, dirty: no`` (or what of it is not recorded)."""
    if run.state == "not run":
        return "the run: no such directory"
    if run.state != "ok":
        return "the run: no readable metrics.json"
    status = run.metrics.get("status", "completed")
    who = "the run" + (f" ({md_text(status)})" if status != "completed" else "")
    finished = run.metrics.get("finished")
    date = str(finished)[:10] if isinstance(finished, str) and finished else ""
    when = f"finished {date}" if date else "finished on a date not recorded"
    return f"{who}: {when}, {_commits([run])}"


def sampler_provenance_line(record: SamplerTableRecord, generator: str = GENERATOR) -> str:
    """The paragraph under a sampler table: how it was made, from which file, made when
    (the file's modification date, UTC), from which run (its finish date, commit and dirty
    flag), with which command, and the spec's note.

    Example: ``Generated by `python scripts/results_table.py --update` from
    `outputs/r/eval/sampler_table.json` (made 2026-12-08; the run: finished 2026-12-07,
    commit 4134e59, dirty: no). Command: `dgm-sampler-table ...`.``
    """
    spec = record.spec
    text = f"Generated by `{generator}` from {md_code(spec.path)}"
    if record.state == "ok":
        text += f" (made {record.made}; {_run_provenance(record.run)})."
    elif record.state == "not run":
        text += ": not run (no such file)."
    else:
        text += ": no readable sampler table (not the rows `dgm-sampler-table` writes)."
    if spec.command:
        text += f" Command: {md_code(spec.command)}."
    if spec.note:
        text += " " + spec.note
    return text


def render_sampler_table(record: SamplerTableRecord, generator: str = GENERATOR) -> str:
    """The Markdown of a sampler table already read (:func:`read_sampler_table`): the
    table (:func:`sampler_table_markdown`; one "not run" or "unreadable" row when the
    file is missing or broken), a blank line and the provenance paragraph
    (:func:`sampler_provenance_line`)."""
    if record.state == "ok":
        table = sampler_table_markdown(record.rows)
    else:
        why = "not run" if record.state == "not run" else "no readable sampler table"
        cells = [why, *["-"] * (len(_SAMPLER_HEADERS) - 1)]
        table = "\n".join(
            [
                "| " + " | ".join(_SAMPLER_HEADERS) + " |",
                "|" + "---|" * len(_SAMPLER_HEADERS),
                "| " + " | ".join(cells) + " |",
            ]
        )
    return "\n".join([table, "", sampler_provenance_line(record, generator)])


# -- rows matched in any outputs folder (dgm-report)

#: What :func:`config_value` returns for a key the config lacks.
MISSING_KEY = object()


def config_value(config: Any, dotted: str) -> Any:
    """The value at ``dotted`` (``objective.k``) in a nested mapping, or a private sentinel
    when a key on the way is missing (so ``None`` in a config still matches ``None``)."""
    node = config
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return MISSING_KEY
        node = node[key]
    return node


def match_records(spec: TableSpec, runs: list[tuple[Path, Any]]) -> list[RunRecord]:
    """One record per row of ``spec`` from the runs of any outputs folder.

    Args:
        spec: a table whose rows carry ``match`` (rows without one are "not run" here).
        runs: ``(run directory, its saved config as a dict)`` of every run found.

    Returns:
        Per row, the record of the matching run whose ``metrics.json`` says it finished
        last (a completed run before any other state), or a "not run" record.
    """
    records = []
    for row in spec.rows:
        found = [
            read_run_dir(row, d)
            for d, config in runs
            if row.match and all(config_value(config, k) == v for k, v in row.match)
        ]
        if not found:
            records.append(RunRecord(row, "not run"))
            continue
        records.append(
            max(
                found,
                key=lambda r: (
                    r.state == "ok" and r.metrics.get("status", "completed") == "completed",
                    str(r.metrics.get("finished") or ""),
                ),
            )
        )
    return records
