"""Parsing the since/until bounds of a windowed-counts query (pure domain)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfstream.domain.windows import WindowBounds, parse_time, parse_window_bounds


def test_missing_and_empty_bounds_are_open() -> None:
    assert parse_window_bounds(None, "") == WindowBounds(None, None)
    assert parse_window_bounds("  ", None) == WindowBounds(None, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-10-20T12:00:00Z", datetime(2026, 10, 20, 12, tzinfo=UTC).timestamp()),
        ("2026-10-20T12:00:00", datetime(2026, 10, 20, 12, tzinfo=UTC).timestamp()),
        ("2026-10-20T14:00:00+02:00", datetime(2026, 10, 20, 12, tzinfo=UTC).timestamp()),
        ("1792497600", 1792497600.0),
        (" 1792497600.5 ", 1792497600.5),
    ],
)
def test_iso_times_and_epoch_seconds_are_accepted(text: str, expected: float) -> None:
    assert parse_time("since", text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not-a-time", "since: not an ISO time"),
        ("2026-13-40T00:00:00Z", "since: not an ISO time"),
        ("nan", "finite"),
        ("inf", "finite"),
        ("-Infinity", "finite"),
    ],
)
def test_bad_bounds_are_refused_with_the_parameter_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_window_bounds(text, None)


def test_since_after_until_is_refused() -> None:
    with pytest.raises(ValueError, match="after until"):
        parse_window_bounds("2026-10-21T00:00:00Z", "2026-10-20T00:00:00Z")


@given(st.floats(0, 4e9), st.floats(0, 4e9))
def test_ordered_epoch_bounds_round_trip(a: float, b: float) -> None:
    since, until = sorted((a, b))
    assert parse_window_bounds(repr(since), repr(until)) == WindowBounds(since, until)
