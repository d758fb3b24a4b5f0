"""The hot path's rows, states and stored envelopes (issue #13)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.domain.test_records import valid_rows
from vfstream.domain.batches import MalformedBatch, encode_batch
from vfstream.domain.fans import (
    TOO_DEEP,
    Envelope,
    Refused,
    ScoreRow,
    decode_envelope,
    encode_envelope,
    position_of,
    read_batch,
    row_from_json,
)
from vfstream.domain.records import RecordSource, ScoreRecord, ScoringKey, build_score_record
from vfstream.domain.state import apply_score_record, fan_state_of, verification_state_of

SOURCE = RecordSource(bucket="b", key="k", etag="e", line=2, run="r1")
NOW = datetime(2026, 11, 30, 3, 4, 5, 123456, tzinfo=UTC)


def record_of(case: tuple[dict[str, str], ScoringKey]) -> ScoreRecord:
    values, key = case
    record = build_score_record(values, key, SOURCE)
    assert isinstance(record, ScoreRecord), record
    return record


@settings(max_examples=150, deadline=None)
@given(valid_rows(), st.integers(0, 10**9), st.integers(-3, 3))
def test_an_envelope_round_trips_and_shows_the_verification_states_json(
    case: tuple[dict[str, str], ScoringKey], position: int, pending: int
) -> None:
    state = apply_score_record(None, record_of(case), NOW).state
    fan = fan_state_of(state)
    envelope = Envelope(position=position, pending=(pending, -pending, 0), state=fan)
    again = decode_envelope(encode_envelope(envelope))
    assert again == envelope
    assert again.state.public_json() == state.model_dump(mode="json")
    assert verification_state_of(again.state) == state


@settings(max_examples=150, deadline=None)
@given(valid_rows())
def test_a_records_json_becomes_a_row_with_its_values(
    case: tuple[dict[str, str], ScoringKey],
) -> None:
    record = record_of(case)
    row = row_from_json(record.to_json())
    assert isinstance(row, ScoreRow), row
    assert (row.campaignId, row.globalUserId, row.rank) == (
        record.campaignId,
        record.globalUserId,
        record.rank,
    )
    assert row.score == record.score and row.isVerified == record.isVerified
    assert row.tags == record.tags and row.key == record.key


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"rank": "1"}, "$.rank"),
        ({"rank": 1000}, "$.rank"),
        ({"score": 2}, "$.score"),
        ({"score": None}, "$.score"),
        ({"isVerified": "true"}, "$.isVerified"),
        ({"campaignId": ""}, "$.campaignId"),
        ({"scoredAt": "yesterday"}, "scoredAt"),
        ({"tags": "a|b"}, "$.tags"),
        ({"surprise": 1}, "surprise"),
        ({"nudetectScoreBand": "LOW"}, "$.nudetectScoreBand"),
        ({"bandScore": 1e999}, "$.bandScore"),
    ],
)
def test_a_malformed_record_is_refused_with_its_reason(change: dict, reason: str) -> None:
    body = {
        "campaignId": "c1",
        "globalUserId": "u1",
        "id": "u1000",
        "rank": 0,
        "eventId": "e",
        "score": 0.5,
        "isVerified": True,
        "scoredAt": "2026-10-20T12:00:00Z",
        **change,
    }
    raw = (
        orjson.dumps(body)
        if change != {"bandScore": 1e999}
        else orjson.dumps({**body, "bandScore": 0}).replace(b'"bandScore":0', b'"bandScore":1e999')
    )
    refused = row_from_json(raw)
    assert isinstance(refused, Refused)
    assert any(reason in r for r in refused.reasons), refused.reasons
    # Inside a batch it is refused alone; the records around it are read.
    good = {k: v for k, v in body.items() if k not in change}
    good.update({k: v for k, v in GOOD.items() if k in change})
    batch = encode_batch([orjson.dumps(good), raw, orjson.dumps(good)])
    kinds = [type(item).__name__ for item in read_batch(batch)]
    assert kinds == ["ScoreRow", "Refused", "ScoreRow"]


GOOD = {
    "campaignId": "c1",
    "rank": 0,
    "score": 0.5,
    "isVerified": True,
    "scoredAt": "2026-10-20T12:00:00Z",
    "tags": [],
    "nudetectScoreBand": "low",
    "bandScore": 0.1,
}


def test_a_message_that_is_no_batch_is_malformed() -> None:
    for value in (b"", b"[1]", b"nope", b'{"v": 2, "records": []}'):
        with pytest.raises(MalformedBatch):
            read_batch(value)


def test_positions_order_records_by_message_then_index() -> None:
    assert position_of(5, 999) < position_of(6, 0) < position_of(6, 1)


def test_anything_else_is_not_an_envelope() -> None:
    for data in (b"", b"{}", b"[1, 2]", b"[3" + b", 0" * 29 + b"]", b"[2, 0, [0, 0, 0], []]"):
        with pytest.raises(ValueError):
            decode_envelope(data)


def test_the_hot_path_row_has_exactly_the_edge_records_fields() -> None:
    """ScoreRow (msgspec, hot path) and ScoreRecord (pydantic, edge) are two shapes of one
    record on purpose; a field added to one and not the other fails here."""
    from vfstream.domain.fans import ScoreRow
    from vfstream.domain.records import ScoreRecord

    assert set(ScoreRow.__struct_fields__) == set(ScoreRecord.model_fields)


def test_json_nested_deeper_than_the_decoder_goes_is_malformed_not_a_crash() -> None:
    for deep in (b"[" * 30_000, b'{"v":1,"records":[' + b"[" * 30_000 + b"]" * 30_000 + b"]}"):
        with pytest.raises(MalformedBatch, match="nested deeper"):
            read_batch(deep)
    deep_record = b'{"source":{"a":' + b"[" * 30_000 + b"]" * 30_000 + b"}}"
    with pytest.raises(MalformedBatch, match="nested deeper"):
        read_batch(b'{"v":1,"records":[' + deep_record + b"]}")
    refused = row_from_json(deep_record)
    assert isinstance(refused, Refused) and refused.reasons == [TOO_DEEP]


def test_a_changelog_value_nested_too_deep_is_not_an_envelope() -> None:
    with pytest.raises(ValueError, match="not a stored fan envelope"):
        decode_envelope(b"[2,0,[0,0,0]," + b"[" * 30_000 + b"]" * 30_000 + b"]")
