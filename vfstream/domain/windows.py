"""The time bounds of a windowed-counts query (``since`` / ``until``). No I/O here."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import NamedTuple


class WindowBounds(NamedTuple):
    """Epoch seconds; None leaves that side open."""

    since: float | None
    until: float | None


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
            raise ValueError(f"{name}: not an ISO time or epoch seconds: {text!r}") from exc
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    if not math.isfinite(seconds):
        raise ValueError(f"{name}: epoch seconds must be a finite number, got {text!r}")
    return seconds


def parse_window_bounds(since: str | None, until: str | None) -> WindowBounds:
    bounds = WindowBounds(parse_time("since", since), parse_time("until", until))
    if bounds.since is not None and bounds.until is not None and bounds.since > bounds.until:
        raise ValueError(f"since ({since}) is after until ({until})")
    return bounds
