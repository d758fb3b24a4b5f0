"""The time bounds of a windowed-counts query (``since`` / ``until``). No I/O here."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import NamedTuple


class WindowBounds(NamedTuple):
    """Epoch seconds; None leaves that side open."""

    since: float | None
    until: float | None


# Query text echoed back in an error is cut to this many characters: a 5,000-digit ``since``
# came back whole.
ECHOED_CHARS = 40


def shown(text: str, limit: int = ECHOED_CHARS) -> str:
    """``text`` for an error message: repr'd, and cut with its length when long."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


def parse_time(name: str, text: str | None) -> float | None:
    """ISO-8601 (naive means UTC) or epoch seconds; empty means no bound."""
    if text is None or text.strip() == "":
        return None
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"{name}: not an ISO time or epoch seconds: {shown(text)}") from exc
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    if not math.isfinite(seconds):
        raise ValueError(f"{name}: epoch seconds must be a finite number, got {shown(text)}")
    return seconds


def parse_window_bounds(since: str | None, until: str | None) -> WindowBounds:
    bounds = WindowBounds(parse_time("since", since), parse_time("until", until))
    if bounds.since is not None and bounds.until is not None and bounds.since > bounds.until:
        raise ValueError(f"since ({shown(since or '')}) is after until ({shown(until or '')})")
    return bounds
