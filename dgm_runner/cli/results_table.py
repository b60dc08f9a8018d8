"""``python scripts/results_table.py``: the results tables of the docs, made from run
directories (:mod:`dgm_runner.io.results_tables`) instead of typed by hand.

* ``results_table.py [TABLE ...]`` prints each table of ``docs/results/tables.yaml``
  between its page markers, ready to paste;
* ``--update`` rewrites, in place, every block ``<!-- results-table: NAME -->`` ...
  ``<!-- /results-table -->`` of the pages under ``docs/`` (only the blocks; the rest of a
  page is kept byte for byte; atomic writes);
* ``--check`` rewrites nothing and exits 1 when a block differs from what the run
  directories give, or when a row's run directory is missing (it cannot be checked), as
  is a sampler table's file (``kind: sampler_table``);
* ``results_table.py LABEL=RUN_DIR ... --keys K1,K2`` prints a table of those runs
  without a spec.

A missing run directory (or sampler-table file) is a "not run" row, never an error. Exit
status: 0; 1 for a failed ``--check``; 2 for a broken spec or page markers (nothing is
written then).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dgm_runner.io.atomic import WriteError, write_bytes
from dgm_runner.io.marked_blocks import (
    BEGIN,
    END,
    MarkerError,
    block_body,
    find_blocks,
    replace_blocks,
)
from dgm_runner.io.results_tables import (
    BUILTIN_COLUMNS,
    DEFAULT_SPEC,
    AnyTableSpec,
    Column,
    Row,
    SamplerTableSpec,
    SpecError,
    TableSpec,
    load_spec,
    read_run,
    read_sampler_table,
    render_records,
    render_sampler_table,
)


def _pages(docs: Path) -> list[Path]:
    """The Markdown pages under ``docs`` that hold a results-table marker, sorted."""
    return sorted(p for p in docs.rglob("*.md") if b"results-table" in p.read_bytes())


def _read(page: Path) -> str:
    """A page's text as its bytes hold it (UTF-8; ``\\r\\n`` kept, unlike ``read_text``)."""
    return page.read_bytes().decode("utf-8")


def _adhoc_spec(pairs: list[str], keys: str) -> TableSpec:
    """A spec-less table of ``LABEL=RUN_DIR`` pairs with columns epochs, s/epoch and
    ``keys`` (comma-separated), numbers to 4 significant digits."""
    rows = []
    for item in pairs:
        label, sep, run = item.rpartition("=")
        if not sep or not label or not run:
            raise SpecError(f"expected LABEL=RUN_DIR, got {item!r}")
        rows.append(Row(label, run))
    columns = [BUILTIN_COLUMNS["epochs"], BUILTIN_COLUMNS["s/epoch"]]
    columns += [Column(k, k) for k in keys.split(",") if k]
    return TableSpec("adhoc", tuple(columns), tuple(rows))


def _render(spec: AnyTableSpec, root: Path, missing: list[str]) -> str:
    """The table's Markdown; each row whose run directory is missing is added to
    ``missing`` as ``"not run: TABLE: LABEL (RUN_DIR)"`` (or ``"unreadable: ..."``), and
    so is a sampler table's missing or broken file (``"not run: TABLE: RUN_DIR/FILE"``) or
    its run's missing or unreadable ``metrics.json`` (the provenance it cannot give)."""
    if isinstance(spec, SamplerTableSpec):
        sampler = read_sampler_table(spec, root)
        if sampler.state != "ok":
            missing.append(f"{sampler.state}: {spec.name}: {spec.path}")
        elif sampler.run.state != "ok":
            missing.append(f"{sampler.run.state}: {spec.name}: run {spec.run} (no metrics.json)")
        return render_sampler_table(sampler)
    records = [read_run(row, root) for row in spec.rows]
    missing += [
        f"{r.state}: {spec.name}: {r.row.label} ({r.row.run})" for r in records if r.state != "ok"
    ]
    return render_records(spec, records)


def run(
    root: Path,
    spec_path: Path,
    docs: Path,
    names: list[str],
    mode: str,
) -> int:
    """Print, update or check the tables ``names`` (all of the spec's when empty).

    Args:
        root: the repository root; the spec's run directories are relative to it.
        spec_path: the table spec (YAML).
        docs: the directory of the pages whose marked blocks are updated or checked.
        names: the tables to work on.
        mode: ``"print"``, ``"update"`` or ``"check"``.

    Returns:
        The exit status: 1 for a failed check, else 0.

    Raises:
        SpecError: the spec is broken or names an unknown table.
        MarkerError: a page's markers do not pair up, or name a table the spec lacks.
        WriteError: a page could not be written.
    """
    tables = load_spec(spec_path)
    unknown = [n for n in names if n not in tables]
    if unknown:
        raise SpecError(f"{spec_path} has no table {', '.join(map(repr, unknown))}")
    chosen = names or list(tables)
    missing: list[str] = []
    if mode == "print":
        for name in chosen:
            body = block_body(_render(tables[name], root, missing))
            print(f"{BEGIN.format(name=name)}{body}{END}\n")
        for line in missing:
            print(line, file=sys.stderr)
        return 0
    pages = {page: _read(page) for page in _pages(docs)}
    placed: dict[str, list[Path]] = {}
    for page, text in pages.items():
        try:
            blocks = find_blocks(text)
        except MarkerError as err:
            raise MarkerError(f"{page}: {err}") from None
        for block in blocks:
            if block.name not in tables:
                raise MarkerError(
                    f"{page}, line {block.line}: results-table {block.name!r} is not in {spec_path}"
                )
            placed.setdefault(block.name, []).append(page)
    bodies = {n: block_body(_render(tables[n], root, missing)) for n in chosen if n in placed}
    stale = []
    for page, text in pages.items():
        changed = [
            b.name
            for b in find_blocks(text)
            if b.name in bodies and text[b.start : b.end] != bodies[b.name]
        ]
        if not changed:
            continue
        stale.append(f"{_shown(page, root)} ({', '.join(changed)})")
        if mode == "update":
            write_bytes(page, replace_blocks(text, bodies).encode("utf-8"))
    for name in chosen:
        if name not in placed:
            print(f"note: table {name} is in no page under {_shown(docs, root)}", file=sys.stderr)
    verb = "updated" if mode == "update" else "stale"
    for line in stale:
        print(f"{verb}: {line}")
    for line in missing:
        print(line, file=sys.stderr)
    if mode == "check":
        if not stale and not missing:
            print(f"up to date: {', '.join(n for n in chosen if n in placed)}")
        return 1 if stale or missing else 0
    return 0


def _shown(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when inside it (for messages)."""
    try:
        return os.path.relpath(path, root) if path.is_relative_to(root) else str(path)
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None, default_root: Path | None = None) -> int:
    """Console entry point (``scripts/results_table.py``); returns the exit status.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
        default_root: the repository root when ``--root`` is not given (default: the
            current directory).
    """
    parser = argparse.ArgumentParser(
        prog="results_table.py",
        description="The results tables of the docs, from run directories.",
    )
    parser.add_argument(
        "items",
        nargs="*",
        help="table names of the spec (default: all); with --keys, LABEL=RUN_DIR pairs",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--update", action="store_true", help="rewrite the pages' blocks")
    group.add_argument(
        "--check", action="store_true", help="exit 1 if a block is stale or a run is missing"
    )
    parser.add_argument("--root", type=Path, default=None, help="the repository root")
    parser.add_argument("--spec", type=Path, default=None, help=f"default: ROOT/{DEFAULT_SPEC}")
    parser.add_argument("--docs", type=Path, default=None, help="default: ROOT/docs")
    parser.add_argument("--keys", default=None, help="without a spec: comma-separated keys")
    args = parser.parse_args(argv)
    root = args.root or default_root or Path.cwd()
    try:
        if args.keys is not None:
            if args.update or args.check or not args.items:
                parser.error("--keys prints a table of LABEL=RUN_DIR pairs; give at least one")
            missing: list[str] = []
            print(_render(_adhoc_spec(args.items, args.keys), Path.cwd(), missing))
            return 0
        mode = "update" if args.update else "check" if args.check else "print"
        return run(
            root,
            args.spec or root / DEFAULT_SPEC,
            args.docs or root / "docs",
            args.items,
            mode,
        )
    except (SpecError, MarkerError, WriteError) as err:
        print(f"results_table.py: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
