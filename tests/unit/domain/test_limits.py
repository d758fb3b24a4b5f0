"""Limits on rows and records (issue #12): each is refused with its reason, at the edge."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.support.rows import MINIMAL_ROW
from vfstream.domain.limits import Limits, over_bytes
from vfstream.domain.records import (
    RecordSource,
    ScoreRecord,
    ScoringFileError,
    ScoringKey,
    build_score_record,
    parse_scoring_key,
)

KEY = ScoringKey(
    campaign_id="c1",
    campaign_name="Tour",
    scored_at=datetime(2026, 1, 1, tzinfo=UTC),
    gzipped=False,
)
SOURCE = RecordSource(bucket="b", key="k", etag="e", line=2)
SMALL = Limits(field_bytes=64, id_bytes=16, events_per_fan=5)


def reasons(limits: Limits = SMALL, **overrides: str) -> list[str]:
    values = {**MINIMAL_ROW, **overrides}
    outcome = build_score_record(values, KEY, SOURCE, limits)
    assert isinstance(outcome, list), outcome
    return outcome


@pytest.mark.parametrize("column", ["event_id", "hbase", "review_notes", "firstName", "email"])
def test_a_text_field_past_the_field_limit_is_refused_with_its_size(column: str) -> None:
    found = reasons(**{column: "x" * 65})
    assert f"{column}: 65 bytes, over the limit of 64" in found


def test_the_field_limit_counts_utf8_bytes_not_characters() -> None:
    # 22 characters of 3 bytes each: 66 bytes.
    assert "event_id: 66 bytes, over the limit of 64" in reasons(event_id="€" * 22)
    record = build_score_record({**MINIMAL_ROW, "event_id": "€" * 21}, KEY, SOURCE, SMALL)
    assert isinstance(record, ScoreRecord)


def test_an_id_past_the_id_limit_is_refused() -> None:
    user = "u" * 17
    found = reasons(globalUserId=user, id=f"{user}000")
    assert "globalUserId: 17 bytes, over the limit of 16" in found


def test_a_rank_past_the_events_limit_is_refused() -> None:
    assert any("rank 5 is past the limit of 5 events per fan" in r for r in reasons(id="u1005"))
    assert isinstance(
        build_score_record({**MINIMAL_ROW, "id": "u1004"}, KEY, SOURCE, SMALL), ScoreRecord
    )


# Arabic-Indic 1 2 3, fullwidth 0 0 0, Arabic-Indic 0 0 0.
@pytest.mark.parametrize("digits", ["\u0661\u0662\u0663", "\uff10" * 3, "\u0660" * 3])
def test_a_rank_of_non_ascii_digits_is_refused(digits: str) -> None:
    found = reasons(Limits(), id=f"u1{digits}")
    assert any("3-digit rank" in reason for reason in found), found


def test_a_fan_id_with_control_characters_is_refused() -> None:
    found = reasons(Limits(), globalUserId="u\n1", id="u\n1000")
    assert "globalUserId: holds control characters" in found


def test_a_campaign_id_past_the_id_limit_fails_the_file() -> None:
    key = f"scrubbed/registrants.{'c' * 17}.Tour.20261020T120000Z.cleaned.prepared.merged.csv"
    with pytest.raises(ScoringFileError, match="campaignId is 17 bytes, over the limit of 16"):
        parse_scoring_key(key, SMALL)


def test_a_campaign_name_with_control_characters_fails_the_file() -> None:
    key = "scrubbed/registrants.c1.Tour\x07.20261020T120000Z.cleaned.prepared.merged.csv"
    with pytest.raises(ScoringFileError, match="campaignName holds control characters"):
        parse_scoring_key(key)


def test_over_bytes_is_none_within_the_limit() -> None:
    assert over_bytes("abc", 3) is None
    assert over_bytes("abcd", 3) == 4
