"""Score records published as JSON to Kinesis: validated exactly like scoring-file rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.rows import MINIMAL_ROW
from vfstream.domain.kinesis_feed import (
    FeedPosition,
    FeedRejection,
    feed_run_id,
    parse_feed_record,
)
from vfstream.domain.records import (
    CSV_COLUMNS,
    MAX_ROW_BYTES,
    RecordSource,
    ScoreRecord,
    ScoringKey,
    build_score_record,
)
from vfstream.domain.state import apply_score_record

ARRIVED = datetime(2026, 10, 21, 8, 30, tzinfo=UTC)
WHERE = FeedPosition(
    stream="vf-score-feed",
    shardId="shardId-000000000001",
    sequenceNumber="49680649071127596045896063575634663697386316597794177042",
    partitionKey="u1",
    arrivedAt=ARRIVED,
)


def feed(**fields: Any) -> dict[str, Any]:
    """A valid feed record of fan u1, rank 0, campaign c1, unless overridden."""
    return {**MINIMAL_ROW, "campaignId": "c1", **fields}


def parse(document: Any) -> ScoreRecord | FeedRejection:
    return parse_feed_record(orjson.dumps(document), WHERE)


def valid(document: Any) -> ScoreRecord:
    result = parse(document)
    assert isinstance(result, ScoreRecord), result
    return result


def rejected(data: bytes | Any) -> FeedRejection:
    raw = data if isinstance(data, bytes) else orjson.dumps(data)
    result = parse_feed_record(raw, WHERE)
    assert isinstance(result, FeedRejection), result
    return result


# ---- valid records -----------------------------------------------------------------------


def test_a_minimal_record_becomes_a_score_record_that_says_where_it_was_read() -> None:
    record = valid(feed())
    assert record.key == "c1:u1"
    assert (record.campaignId, record.globalUserId, record.rank, record.eventId) == (
        "c1",
        "u1",
        0,
        "ev1",
    )
    assert record.source == RecordSource(
        bucket="",
        key="",
        etag="",
        line=0,
        run=feed_run_id("vf-score-feed", "c1"),
        stream="vf-score-feed",
        shardId="shardId-000000000001",
        sequenceNumber=WHERE.sequenceNumber,
    )


def test_without_scored_at_the_arrival_time_orders_the_record() -> None:
    assert valid(feed()).scoredAt == ARRIVED


def test_scored_at_in_the_record_is_used_basic_or_extended() -> None:
    assert valid(feed(scoredAt="20261020T120000Z")).scoredAt == datetime(
        2026, 10, 20, 12, tzinfo=UTC
    )
    assert valid(feed(scoredAt="2026-10-20T14:00:00+02:00")).scoredAt == datetime(
        2026, 10, 20, 12, tzinfo=UTC
    )


def test_without_campaign_name_the_record_carries_none_so_state_keeps_the_known_name() -> None:
    assert valid(feed()).campaignName is None
    assert valid(feed(campaignName=" Summer Tour ")).campaignName == "Summer Tour"
    assert valid(feed(campaignName="  ")).campaignName is None


def test_json_numbers_booleans_nulls_and_tag_arrays_stand_for_their_csv_text() -> None:
    record = valid(
        feed(
            score=0.75,
            isVerified=False,
            verdict=None,
            localFanscore=1,
            codes=["vip", "presale"],
            review_notes="a|b",
            **{"nudetect.score": 0.2, "nudetect.scoreBand": "HIGH"},
        )
    )
    assert record.score == 0.75 and record.isVerified is False and record.verdict is None
    assert record.localFanscore == 1.0
    assert record.codes == ["vip", "presale"] and record.tags == ["a", "b"]
    assert (record.nudetectScore, record.nudetectScoreBand) == (0.2, "high")


def test_unknown_fields_are_ignored_like_unknown_columns() -> None:
    assert valid(feed(somethingElse={"nested": True})).key == "c1:u1"


def test_the_record_json_round_trips_and_file_sources_serialize_as_before() -> None:
    record = valid(feed())
    assert ScoreRecord.from_json(record.to_json()) == record
    file_source = RecordSource(bucket="b", key="k", etag="e", line=2)
    assert orjson.loads(file_source.model_dump_json()) == {
        "bucket": "b",
        "key": "k",
        "etag": "e",
        "line": 2,
        "run": None,
    }


def test_a_feed_record_applies_to_state_without_erasing_a_campaign_name() -> None:
    from_file = valid(feed(campaignName="Summer Tour", scoredAt="2026-10-20T12:00:00Z"))
    state = apply_score_record(None, from_file, ARRIVED).state
    later = valid(feed(score="0.9"))
    transition = apply_score_record(state, later, ARRIVED)
    assert transition.state.campaignName == "Summer Tour"
    assert transition.state.score == 0.9
    assert transition.state.source is not None
    assert transition.state.source.sequenceNumber == WHERE.sequenceNumber


# ---- invalid records ---------------------------------------------------------------------


def test_a_rejection_says_stream_shard_sequence_raw_text_and_kind() -> None:
    rejection = rejected(b"not json")
    assert rejection.kind == "kinesis-record"
    assert (rejection.stream, rejection.shardId, rejection.sequenceNumber) == (
        WHERE.stream,
        WHERE.shardId,
        WHERE.sequenceNumber,
    )
    assert rejection.partitionKey == "u1"
    assert rejection.raw == "not json"
    assert rejection.key == f"kinesis://{WHERE.stream}/{WHERE.shardId}/{WHERE.sequenceNumber}"
    assert orjson.loads(rejection.to_json())["kind"] == "kinesis-record"
    assert rejection.reasons[0].startswith("record: not valid JSON")


@pytest.mark.parametrize(
    ("document", "kind"),
    [([feed()], "an array"), ("text", "str"), (3, "int"), (None, "NoneType")],
)
def test_json_that_is_not_an_object_is_rejected(document: Any, kind: str) -> None:
    assert rejected(document).reasons == [f"record: expected a JSON object, got {kind}"]


def test_bytes_that_are_not_utf8_are_rejected_and_shown_escaped() -> None:
    rejection = rejected(b'{"id": "\xff\xfe"}')
    assert rejection.reasons == ["record: not valid UTF-8"]
    assert rejection.raw == '{"id": "\\xff\\xfe"}'


def test_a_record_over_64_kib_is_rejected_with_its_raw_text_cut() -> None:
    big = orjson.dumps(feed(firstName="x" * MAX_ROW_BYTES))
    rejection = rejected(big)
    assert rejection.reasons == ["record: longer than 64 KiB"]
    assert len(rejection.raw) == MAX_ROW_BYTES


def test_a_missing_campaign_id_is_rejected_with_every_other_reason() -> None:
    document = feed(score="2")
    del document["campaignId"]
    rejection = rejected(document)
    assert rejection.campaignId is None
    assert rejection.reasons[0] == "campaignId: required value is missing or empty"
    assert any(reason.startswith("score:") for reason in rejection.reasons)
    assert not any("differs" in reason for reason in rejection.reasons)


@pytest.mark.parametrize("campaign", ["", "   ", None])
def test_an_empty_campaign_id_is_missing(campaign: Any) -> None:
    assert rejected(feed(campaignId=campaign)).reasons == [
        "campaignId: required value is missing or empty"
    ]


def test_a_campaign_id_that_is_not_a_string_is_rejected() -> None:
    assert rejected(feed(campaignId=12)).reasons == ["campaignId: expected a string, got int"]


def test_a_row_of_another_campaign_is_rejected_like_in_a_file() -> None:
    rejection = rejected(feed(campaignId="c2"))
    assert rejection.campaignId == "c2"
    assert rejection.reasons == ["campaign_id: 'c1' differs from the file's campaign 'c2'"]


def test_every_reason_is_reported_at_once() -> None:
    rejection = rejected(
        feed(
            id="zz1",
            score=1.5,
            isVerified="maybe",
            event_id=None,
            codes={"a": 1},
            scoredAt="yesterday",
            campaignName=7,
        )
    )
    fields = [reason.split(":")[0] for reason in rejection.reasons]
    assert sorted(fields) == sorted(
        ["campaignName", "scoredAt", "codes", "id", "event_id", "score", "isVerified"]
    )


# ---- the same validation as a CSV row ----------------------------------------------------

CELL = st.one_of(
    st.sampled_from(["", " ", "0", "1", "0.5", "2", "-1", "nan", "true", "No", "yes", "high"]),
    st.text(max_size=6),
)


@st.composite
def csv_rows(draw: st.DrawFn) -> dict[str, str]:
    """Rows near the valid one: each column kept, dropped or replaced by a tricky cell."""
    row = dict(MINIMAL_ROW)
    for column in draw(st.lists(st.sampled_from(sorted(CSV_COLUMNS)), max_size=5)):
        action = draw(st.sampled_from(["drop", "replace"]))
        if action == "drop":
            row.pop(column, None)
        else:
            row[column] = draw(CELL)
    if draw(st.booleans()):
        user = row.get("globalUserId", "u1")
        row["id"] = user + draw(st.sampled_from(["000", "007", "12", "x00"]))
    return row


@settings(max_examples=300, deadline=None)
@given(row=csv_rows())
def test_a_feed_record_is_valid_exactly_when_the_same_csv_row_would_be(
    row: dict[str, str],
) -> None:
    scoring_key = ScoringKey(campaign_id="c1", campaign_name="", scored_at=ARRIVED, gzipped=False)
    from_file = build_score_record(
        row, scoring_key, {"bucket": "", "key": "", "etag": "", "line": 0}
    )
    from_feed = parse_feed_record(orjson.dumps({**row, "campaignId": "c1"}), WHERE)
    if isinstance(from_file, list):
        assert isinstance(from_feed, FeedRejection)
        assert from_feed.reasons == from_file
    else:
        assert isinstance(from_feed, ScoreRecord)
        ignored = {"source", "campaignName"}
        assert from_feed.model_dump(exclude=ignored) == from_file.model_dump(exclude=ignored)


def test_a_scored_at_beyond_the_future_skew_is_refused_naming_it() -> None:
    rejected = parse_feed_record(orjson.dumps(feed(scoredAt="9999-12-31T23:59:59Z")), WHERE)

    assert isinstance(rejected, FeedRejection)
    assert any(
        reason.startswith("scoredAt: ") and "past the allowed skew of 24 h" in reason
        for reason in rejected.reasons
    ), rejected.reasons


def test_a_feed_number_too_small_to_store_is_refused() -> None:
    rejected = parse(feed(score=1e-320))

    assert isinstance(rejected, FeedRejection)
    assert any("cannot be stored" in reason for reason in rejected.reasons), rejected.reasons
