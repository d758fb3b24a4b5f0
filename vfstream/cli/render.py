"""Human tables for the terminal, in the style of ``faust tables``; values from files and
topics are made printable first, so a crafted row cannot move the cursor or recolour the
terminal (ANSI escapes and other control characters are shown as ``\\x..``)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from terminaltables import AsciiTable

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(value: object, width: int | None = None) -> str:
    """``value`` as one terminal-safe line, cut to ``width`` characters with "…"."""
    text = "" if value is None else str(value)
    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def table(
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    right: Iterable[int] = (),
    widths: dict[int, int] | None = None,
) -> str:
    """Columns separated by bars, ``right`` ones right-aligned (numbers)."""
    widths = widths or {}
    data = [list(header)]
    data += [[printable(v, widths.get(i)) for i, v in enumerate(row)] for row in rows]
    rendered = AsciiTable(data)
    rendered.outer_border = False
    rendered.justify_columns = {i: "right" for i in right}
    return rendered.table


def number(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"
