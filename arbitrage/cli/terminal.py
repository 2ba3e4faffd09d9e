"""Text from data (Keepa titles, record keys and values, dead-letter reasons) made safe to print.

A title holding `ESC [2J` clears the operator's screen, one with `\r` or a bidi override hides
or reorders what a line says; escape sequences can even retitle the window or, in some
terminals, write to the clipboard. Every CLI printer passes data through `printable`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
# Bidi embeddings, overrides, isolates and marks: invisible, they reorder what is shown.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Control characters (C0, DEL, C1) and the line and paragraph separators.
_CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def _escaped(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: object) -> str:
    """str(value) with every terminal control character escaped (`\\x1b`, `\\r`, `\\u202e`)."""
    text = str(value)
    return "".join(
        _escaped(char)
        if char in _BIDI or unicodedata.category(char) in _CONTROL_CATEGORIES
        else char
        for char in text
    )


def printable_lines(text: str) -> str:
    """A block of our own lines (a table, a digest) with the data in each line escaped."""
    return "\n".join(printable(line) for line in text.split("\n"))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns aligned, every cell made printable first."""
    cells = [list(map(printable, headers))] + [[printable(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )
