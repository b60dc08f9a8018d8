"""Text from run directories (names, overrides, paths, values) made inert in the Markdown
that ``dgm-report`` and the sweep summary write: it can neither inject HTML nor break a
table, a heading or a link."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import quote

_MARKDOWN_ACTIVE = re.compile(r"([\\|\[\]`])")  # table cells, links and code spans
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def md_text(value: Any) -> str:
    """``str(value)`` as literal text for a Markdown table cell, heading or line: ``< > &
    " '`` as HTML entities, ``\\ | [ ] ``` backslash-escaped, line breaks as ``<br>``.

    Example: ``md_text("<b>|x")`` -> ``"&lt;b&gt;\\|x"``.
    """
    text = _MARKDOWN_ACTIVE.sub(r"\\\1", html.escape(str(value), quote=True))
    return _LINE_BREAK.sub("<br>", text)


def md_link(path: str) -> str:
    """A relative file path as the target of a Markdown link or image: percent-encoded
    (spaces, ``<>()[]|`` and the like), ``/`` kept."""
    return quote(path, safe="/")


def md_code(value: Any) -> str:
    """``str(value)`` as a Markdown code span (a command, an override): literal inside
    backticks; text holding a backtick or a line break, which a code span cannot carry
    safely, is given as :func:`md_text` instead.

    Example: ``md_code("dgm-train a=1")`` -> ``"`dgm-train a=1`"``.
    """
    text = str(value)
    if "`" in text or _LINE_BREAK.search(text):
        return md_text(text)
    return f"`{text}`"
