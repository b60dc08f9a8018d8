"""Generated blocks inside hand-written Markdown pages: the text between the lines
``<!-- results-table: NAME -->`` and ``<!-- /results-table -->`` belongs to a generator
(``scripts/results_table.py``), the rest of the page to its authors. A marker is a line
of its own; the same text inside a sentence is not a marker.

:func:`find_blocks` lists a page's blocks; :func:`replace_blocks` swaps the bodies of some
of them and leaves every other byte of the page as it was. The markers are HTML comments,
so the rendered page does not show them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The opening marker; NAME is letters, digits, ``_``, ``-`` and ``.``.
BEGIN = "<!-- results-table: {name} -->"
#: The closing marker.
END = "<!-- /results-table -->"

_BEGIN = re.compile(r"<!-- results-table: ([A-Za-z0-9_.-]+) -->")
# A marker is a line of its own (trailing blanks allowed); one quoted inside a sentence or
# a code span (`<!-- results-table: NAME -->` in these docs' own instructions) is text.
_ANY_MARKER = re.compile(r"^<!-- /?results-table\b[^>\n]*-->[ \t\r]*$", re.MULTILINE)


class MarkerError(ValueError):
    """A page's markers do not pair up (a block not closed, a closing marker without an
    opening one, one block inside another) or a marker is malformed; the message is one
    line naming the line number."""


@dataclass(frozen=True)
class Block:
    """One generated block of a page.

    Attributes:
        name: the table's name (the NAME of its opening marker).
        start: offset in the page of the first character after the opening marker's line
            (before its line break).
        end: offset of the closing marker's first character (``page[start:end]`` is the
            body, newlines around the table included).
        line: 1-based line number of the opening marker (for messages).
    """

    name: str
    start: int
    end: int
    line: int


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def find_blocks(text: str) -> list[Block]:
    """The generated blocks of a page, in page order.

    Raises:
        MarkerError: an opening marker without its closing one, a closing marker without
            an opening one, nested blocks, or a ``results-table`` comment of another form.
    """
    blocks: list[Block] = []
    opened: tuple[str, re.Match[str]] | None = None  # (name, its opening marker)
    for marker in _ANY_MARKER.finditer(text):
        where = f"line {_line(text, marker.start())}"
        found = marker.group(0).rstrip()
        if found == END:
            if opened is None:
                raise MarkerError(f"{where}: {END} without an opening results-table marker")
            name, begin = opened
            blocks.append(Block(name, begin.end(), marker.start(), _line(text, begin.start())))
            opened = None
            continue
        named = _BEGIN.fullmatch(found)
        if named is None:
            raise MarkerError(
                f"{where}: malformed marker {found!r} "
                f"(expected {BEGIN.format(name='NAME')} or {END})"
            )
        if opened is not None:
            raise MarkerError(
                f"{where}: results-table {named.group(1)!r} opens inside block "
                f"{opened[0]!r} of line {_line(text, opened[1].start())}"
            )
        opened = (named.group(1), marker)
    if opened is not None:
        raise MarkerError(
            f"line {_line(text, opened[1].start())}: results-table {opened[0]!r} "
            f"is not closed by {END}"
        )
    return blocks


def block_body(table: str) -> str:
    """The body written between the markers for a rendered ``table`` (Markdown): the table
    set off by blank lines, so that Markdown reads it as a block of its own."""
    return f"\n\n{table.strip(chr(10))}\n\n"


def replace_blocks(text: str, bodies: dict[str, str]) -> str:
    """``text`` with the body of every block named in ``bodies`` replaced by
    ``bodies[name]``; markers, other blocks and the text around them are kept byte for byte.

    Raises:
        MarkerError: as :func:`find_blocks`.
    """
    out, pos = [], 0
    for block in find_blocks(text):
        if block.name in bodies:
            out += [text[pos : block.start], bodies[block.name]]
            pos = block.end
    out.append(text[pos:])
    return "".join(out)
