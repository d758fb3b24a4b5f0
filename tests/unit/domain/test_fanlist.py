"""Fanlist files (SPEC 2.2): keys, headers, rows, identifiers, de-duplication, stored items
and the count summary. Pure domain, no I/O."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from vfstream.domain.fanlist import (
    MAX_PARTITION_KEY_CHARS,
    FanlistCounts,
    FanlistFileError,
    FanlistKey,
    FanlistRow,
    InputCounts,
    SinkCounts,
    check_fanlist_header,
    email_problem,
    fanlist_item,
    fanlist_sk,
    fanlist_stream_record,
    iso_utc,
    keep_highest_scores,
    parse_fanlist_key,
    validate_fanlist_row,
)

# --- object keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "campaign", "moment"),
    [
        (
            "fanlist/scored/c1001/1792497600000.csv",
            "c1001",
            datetime(2026, 10, 20, 12, 0, tzinfo=UTC),
        ),
        (
            "fanlist/scored/c1001/1792497600.csv",
            "c1001",
            datetime(2026, 10, 20, 12, 0, tzinfo=UTC),
        ),
        (
            "fanlist/scored/summer-tour.2026/20261020T120000Z.csv",
            "summer-tour.2026",
            datetime(2026, 10, 20, 12, 0, tzinfo=UTC),
        ),
        (
            "fanlist/scored/c1/2026-10-20T12:00:00.250+02:00.csv",
            "c1",
            datetime(2026, 10, 20, 12, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=2))),
        ),
        ("fanlist/scored/c1/2026-10-20.csv", "c1", datetime(2026, 10, 20, tzinfo=UTC)),
    ],
)
def test_a_fanlist_key_gives_campaign_and_timestamp(
    key: str, campaign: str, moment: datetime
) -> None:
    parsed = parse_fanlist_key(key)
    assert parsed.campaign_id == campaign
    assert parsed.scored_at == moment
    assert parsed.timestamp == key.rsplit("/", 1)[1].removesuffix(".csv")


@pytest.mark.parametrize(
    "key",
    [
        "scrubbed/registrants.c1.tour.20261020T120000Z.cleaned.prepared.merged.csv",
        "fanlist/c1/1792497600000.csv",
        "fanlist/scored/1792497600000.csv",
        "fanlist/scored//1792497600000.csv",
        "fanlist/scored/c1/.csv",
        "fanlist/scored/c1/extra/1792497600000.csv",
        "fanlist/scored/c1/1792497600000.csv.gz",
        "fanlist/scored/c1/1792497600000.CSV",
        "fanlist/scored/c1/1792497600000",
        "/fanlist/scored/c1/1792497600000.csv",
        "archive/fanlist/scored/c1/1792497600000.csv",
        "",
    ],
)
def test_a_key_of_another_shape_is_refused_with_the_expected_shape(key: str) -> None:
    with pytest.raises(FanlistFileError, match=r"does not match fanlist/scored/<campaignId>"):
        parse_fanlist_key(key)


@pytest.mark.parametrize("stamp", ["banana", "20261340T000000Z", "12345678901", "2026-02-30"])
def test_a_key_whose_timestamp_is_no_time_is_refused(stamp: str) -> None:
    with pytest.raises(FanlistFileError, match=f"invalid timestamp '{stamp}'"):
        parse_fanlist_key(f"fanlist/scored/c1/{stamp}.csv")


# --- header --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        ["memberId", "email", "globalUserId", "score"],
        ["score", "memberId"],
        ["email", "score", "unknown"],
    ],
)
def test_a_header_with_score_and_an_identifier_column_is_accepted(header: list[str]) -> None:
    check_fanlist_header(header)


@pytest.mark.parametrize(
    ("header", "missing"),
    [
        (["memberId", "email", "globalUserId"], "score"),
        (["globalUserId", "score"], "memberId or email"),
        (["globalUserId"], "score, memberId or email"),
    ],
)
def test_a_header_without_required_columns_fails_the_file(header: list[str], missing: str) -> None:
    with pytest.raises(FanlistFileError, match=f"lacks required columns: {missing}$"):
        check_fanlist_header(header)


def test_an_empty_header_or_a_repeated_column_fails_the_file() -> None:
    with pytest.raises(FanlistFileError, match="no header row"):
        check_fanlist_header(["", " "])
    with pytest.raises(FanlistFileError, match=r"repeats columns: score$"):
        check_fanlist_header(["memberId", "score", "score", "x", "x"])


NOT_A_NUMBER = "score: Input should be a valid number, unable to parse string as a number"
NOT_FINITE = "score: Input should be a finite number"

# --- rows ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"memberId": "m1", "score": "0.5"}, FanlistRow(memberId="m1", score=0.5)),
        (
            {"email": "  Ana.Ruiz@Example.COM ", "score": "1"},
            FanlistRow(email="ana.ruiz@example.com", score=1.0),
        ),
        (
            {"memberId": " m1 ", "email": "a@b.c", "globalUserId": " g1 ", "score": " 0.25 "},
            FanlistRow(memberId="m1", email="a@b.c", globalUserId="g1", score=0.25),
        ),
        (
            {"memberId": "m1", "email": "", "globalUserId": "  ", "score": "3"},
            FanlistRow(memberId="m1", score=3.0),
        ),
        ({"memberId": "m1", "score": "-0.5"}, FanlistRow(memberId="m1", score=-0.5)),
        (
            {"memberId": "m1", "score": "1e-3", "firstName": "x"},
            FanlistRow(memberId="m1", score=0.001),
        ),
    ],
)
def test_valid_rows(values: dict[str, str], expected: FanlistRow) -> None:
    assert validate_fanlist_row(values) == expected


@pytest.mark.parametrize("email", ["a@b@c", "@b.c", "a@", "ab.c", "a b@c.d", "@"])
def test_a_malformed_email_beside_a_member_id_is_left_out_not_stored(email: str) -> None:
    assert validate_fanlist_row({"memberId": "m1", "email": email, "score": "0.5"}) == (
        FanlistRow(memberId="m1", score=0.5)
    )


@pytest.mark.parametrize(
    ("values", "reasons"),
    [
        (
            {"score": "0.5"},
            ["memberId, email: both are missing or empty; one must identify the fan"],
        ),
        (
            {"memberId": " ", "email": "", "globalUserId": "g1", "score": "0.5"},
            ["memberId, email: both are missing or empty; one must identify the fan"],
        ),
        (
            {"email": "Ana@@example.com", "score": "0.5"},
            [
                "email: 'ana@@example.com' is not an email address (it needs exactly one @), "
                "and there is no memberId"
            ],
        ),
        (
            {"email": "ana@", "score": "0.5"},
            [
                "email: 'ana@' is not an email address (text is needed on both sides of the @), "
                "and there is no memberId"
            ],
        ),
        (
            {"email": "ana maria@example.com", "score": "0.5"},
            [
                "email: 'ana maria@example.com' is not an email address (it contains "
                "whitespace), and there is no memberId"
            ],
        ),
        ({"memberId": "m1"}, ["score: required value is missing or empty"]),
        ({"memberId": "m1", "score": "  "}, ["score: required value is missing or empty"]),
        (
            {"memberId": "m1", "score": "high"},
            [f"{NOT_A_NUMBER} (got 'high')"],
        ),
        ({"memberId": "m1", "score": "nan"}, [f"{NOT_FINITE} (got 'nan')"]),
        ({"memberId": "m1", "score": "-inf"}, [f"{NOT_FINITE} (got '-inf')"]),
        (
            {"email": "nobody", "score": "x"},
            [
                "email: 'nobody' is not an email address (it needs exactly one @), "
                "and there is no memberId",
                f"{NOT_A_NUMBER} (got 'x')",
            ],
        ),
        (
            {},
            [
                "memberId, email: both are missing or empty; one must identify the fan",
                "score: required value is missing or empty",
            ],
        ),
    ],
)
def test_invalid_rows_give_every_reason(values: dict[str, str], reasons: list[str]) -> None:
    assert validate_fanlist_row(values) == reasons


def test_email_problem_accepts_one_at_with_text_on_both_sides() -> None:
    assert email_problem("a@b") is None
    assert email_problem("first.last+tag@sub.example.co.uk") is None
    assert email_problem("a@b@c") is not None
    assert email_problem("") is not None


@pytest.mark.parametrize(
    "fields",
    [
        {"score": 0.5},
        {"email": "not-an-email", "score": 0.5},
        {"email": "Upper@Example.com", "score": 0.5},
        {"memberId": "", "score": 0.5},
        {"memberId": "m1", "score": float("nan")},
        {"memberId": "m1", "score": 0.5, "phone": "1"},
    ],
)
def test_a_row_model_cannot_be_built_unsound(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FanlistRow.model_validate(fields)


# --- identifiers and keys ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "identifier", "identifier_key", "item_pk", "partition_key"),
    [
        (
            FanlistRow(memberId="m1", email="a@b.c", globalUserId="g1", score=1),
            "m1",
            "sid:m1",
            "fan:g1",
            "g1",
        ),
        (FanlistRow(memberId="m1", email="a@b.c", score=1), "m1", "sid:m1", "sid:m1", "m1"),
        (FanlistRow(email="a@b.c", score=1), "a@b.c", "email:a@b.c", "email:a@b.c", "a@b.c"),
        (
            FanlistRow(email="a@b.c", globalUserId="g1", score=1),
            "a@b.c",
            "email:a@b.c",
            "fan:g1",
            "g1",
        ),
    ],
)
def test_identifier_item_key_and_partition_key(
    row: FanlistRow, identifier: str, identifier_key: str, item_pk: str, partition_key: str
) -> None:
    assert (row.identifier, row.identifier_key, row.item_pk, row.partition_key) == (
        identifier,
        identifier_key,
        item_pk,
        partition_key,
    )


def test_an_overlong_partition_key_is_replaced_by_its_stable_hash() -> None:
    at_limit = "m" * MAX_PARTITION_KEY_CHARS
    assert FanlistRow(memberId=at_limit, score=1).partition_key == at_limit
    long_id = "g" * (MAX_PARTITION_KEY_CHARS + 1)
    key = FanlistRow(memberId="m1", globalUserId=long_id, score=1).partition_key
    assert key == hashlib.sha256(long_id.encode()).hexdigest()
    assert key == FanlistRow(email="x@y", globalUserId=long_id, score=2).partition_key


# --- de-duplication ------------------------------------------------------------------------


def row(
    score: float, member: str | None = None, email: str | None = None, fan: str | None = None
) -> FanlistRow:
    return FanlistRow(memberId=member, email=email, globalUserId=fan, score=score)


def test_duplicates_of_a_member_id_keep_the_highest_score() -> None:
    rows = [row(0.2, "m1"), row(0.9, "m2"), row(0.7, "m1"), row(0.5, "m1")]
    assert keep_highest_scores(rows) == ([row(0.7, "m1"), row(0.9, "m2")], 2)


def test_duplicates_of_an_email_are_found_after_normalisation() -> None:
    first = validate_fanlist_row({"email": "Ana@Example.com", "score": "0.1"})
    second = validate_fanlist_row({"email": " ana@example.COM ", "score": "0.8"})
    assert isinstance(first, FanlistRow) and isinstance(second, FanlistRow)
    assert keep_highest_scores([first, second]) == ([second], 1)


def test_on_equal_scores_the_first_row_stays() -> None:
    first, second = row(0.5, "m1", "a@b.c"), row(0.5, "m1", "z@b.c")
    assert keep_highest_scores([first, second]) == ([first], 1)


def test_kept_rows_keep_the_order_their_identifiers_first_appear() -> None:
    rows = [row(0.1, "m3"), row(0.1, "m1"), row(0.1, "m2"), row(0.9, "m3")]
    kept, _ = keep_highest_scores(rows)
    assert [r.memberId for r in kept] == ["m3", "m1", "m2"]
    assert kept[0].score == 0.9


def test_a_member_id_equal_to_an_email_is_another_fan() -> None:
    rows = [row(0.1, member="a@b.c"), row(0.2, email="a@b.c")]
    assert keep_highest_scores(rows) == (rows, 0)


def test_rows_stored_as_one_item_are_duplicates_too() -> None:
    # Two memberIds of one globalUserId would both be put as fan:g1 / fanlist:<id>.
    rows = [row(0.4, "m1", fan="g1"), row(0.6, "m2", fan="g1"), row(0.5, "m3")]
    assert keep_highest_scores(rows) == ([row(0.6, "m2", fan="g1"), row(0.5, "m3")], 1)


def test_nothing_in_nothing_out() -> None:
    assert keep_highest_scores([]) == ([], 0)
    assert keep_highest_scores(iter([row(1, "m1")])) == ([row(1, "m1")], 0)


members = st.sampled_from(["m1", "m2", "m3", "m4", None])
emails = st.sampled_from(["a@x.io", "b@x.io", "c@x.io", None])
fans = st.sampled_from(["g1", "g2", None])
# Storable numbers only (limits.number_refusal): 0, or a magnitude of at least 1e-130.
scores = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False).filter(
    lambda score: score == 0.0 or abs(score) >= 1e-130
)


@st.composite
def fanlist_rows(draw: st.DrawFn, with_fans: bool = True) -> FanlistRow:
    member = draw(members)
    email = draw(emails)
    if member is None and email is None:
        email = "d@x.io"
    fan = draw(fans) if with_fans else None
    return FanlistRow(memberId=member, email=email, globalUserId=fan, score=draw(scores))


@given(st.lists(fanlist_rows(), max_size=40))
def test_dedupe_keeps_one_row_per_identifier_and_per_item_and_counts_the_rest(
    rows: list[FanlistRow],
) -> None:
    kept, duplicates = keep_highest_scores(rows)
    assert len(kept) + duplicates == len(rows)
    assert all(any(r is k for r in rows) for k in kept)
    assert len({k.identifier_key for k in kept}) == len(kept)
    assert len({k.item_pk for k in kept}) == len(kept)
    if rows:
        assert max(k.score for k in kept) == max(r.score for r in rows)
    assert keep_highest_scores(kept) == (kept, 0)


@given(st.lists(fanlist_rows(with_fans=False), max_size=40), st.randoms())
def test_without_global_user_ids_each_identifier_keeps_its_highest_score_in_any_order(
    rows: list[FanlistRow], random: object
) -> None:
    highest: dict[str, float] = {}
    for r in rows:
        highest[r.identifier_key] = max(r.score, highest.get(r.identifier_key, r.score))
    kept, duplicates = keep_highest_scores(rows)
    assert {k.identifier_key: k.score for k in kept} == highest
    assert duplicates == len(rows) - len(highest)
    shuffled = list(rows)
    random.shuffle(shuffled)  # type: ignore[attr-defined]
    assert {k.identifier_key: k.score for k in keep_highest_scores(shuffled).kept} == highest


# --- stored items and stream records -------------------------------------------------------

KEY = FanlistKey(
    campaign_id="c7", timestamp="1792497600000", scored_at=datetime(2026, 10, 20, 12, tzinfo=UTC)
)
NOW = datetime(2026, 10, 21, 8, 30, 5, 123_456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("stored", "pk", "fields"),
    [
        (
            row(0.5, "m1", "a@b.c", "g1"),
            "fan:g1",
            {"memberId": "m1", "email": "a@b.c", "globalUserId": "g1"},
        ),
        (row(0.5, "m1", "a@b.c"), "sid:m1", {"memberId": "m1", "email": "a@b.c"}),
        (row(0.5, email="a@b.c"), "email:a@b.c", {"email": "a@b.c"}),
    ],
)
def test_a_fanlist_item_is_keyed_by_fan_and_campaign_with_only_present_fields(
    stored: FanlistRow, pk: str, fields: dict[str, str]
) -> None:
    assert fanlist_item(stored, KEY, updated=NOW) == {
        "PK": pk,
        "SK": "fanlist:c7",
        **fields,
        "score": 0.5,
        "campaignId": "c7",
        "date": {"updated": "2026-10-21T08:30:05.123Z", "scored": "2026-10-20T12:00:00.000Z"},
    }


def test_a_stream_record_carries_the_stored_fields_and_meta() -> None:
    record = fanlist_stream_record(row(0.75, "m1", fan="g1"), "c7", correlation="run-1", date=NOW)
    assert record == {
        "memberId": "m1",
        "globalUserId": "g1",
        "score": 0.75,
        "campaignId": "c7",
        "__meta": {"correlation": "run-1", "date": "2026-10-21T08:30:05.123Z"},
    }


def test_times_are_written_in_utc() -> None:
    assert iso_utc(datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))) == (
        "2026-01-01T00:00:00.000Z"
    )
    assert fanlist_sk("c1") == "fanlist:c1"


# --- counts --------------------------------------------------------------------------------


def test_counts_are_reported_exactly_as_the_spec_names_them() -> None:
    counts = FanlistCounts.tally(
        rows_in=12, invalid=3, duplicate=2, dynamo_failed=1, stream_failed=2
    )
    assert counts.as_dict() == {
        "input": {"in": 12, "invalid": 3, "duplicate": 2, "valid": 7},
        "dynamo": {"in": 7, "failed": 1, "out": 6},
        "stream": {"in": 6, "failed": 2, "out": 4},
    }
    assert FanlistCounts().as_dict() == {
        "input": {"in": 0, "invalid": 0, "duplicate": 0, "valid": 0},
        "dynamo": {"in": 0, "failed": 0, "out": 0},
        "stream": {"in": 0, "failed": 0, "out": 0},
    }


def test_counts_that_do_not_add_up_cannot_be_built() -> None:
    with pytest.raises(ValidationError, match=r"invalid \+ duplicate \+ valid"):
        InputCounts.model_validate({"in": 3, "invalid": 1, "duplicate": 0, "valid": 1})
    with pytest.raises(ValidationError, match=r"failed \+ out"):
        SinkCounts.model_validate({"in": 3, "failed": 1, "out": 1})
    with pytest.raises(ValidationError, match=r"dynamo\.in must equal input\.valid"):
        FanlistCounts(input=InputCounts(in_=2, valid=2), dynamo=SinkCounts(in_=1, out=1))
    with pytest.raises(ValidationError, match=r"stream\.in must equal dynamo\.out"):
        FanlistCounts(
            input=InputCounts(in_=2, valid=2),
            dynamo=SinkCounts(in_=2, out=2),
            stream=SinkCounts(in_=1, out=1),
        )
    with pytest.raises(ValidationError):
        FanlistCounts.tally(rows_in=1, invalid=2, duplicate=0)


@given(
    invalid=st.integers(0, 50),
    duplicate=st.integers(0, 50),
    valid=st.integers(0, 50),
    data=st.data(),
)
def test_tallied_counts_chain_from_stage_to_stage(
    invalid: int, duplicate: int, valid: int, data: st.DataObject
) -> None:
    dynamo_failed = data.draw(st.integers(0, valid))
    stream_failed = data.draw(st.integers(0, valid - dynamo_failed))
    counts = FanlistCounts.tally(
        rows_in=invalid + duplicate + valid,
        invalid=invalid,
        duplicate=duplicate,
        dynamo_failed=dynamo_failed,
        stream_failed=stream_failed,
    )
    assert counts.input.valid == counts.dynamo.in_ == valid
    assert counts.stream.in_ == counts.dynamo.out == valid - dynamo_failed
    assert counts.stream.out == valid - dynamo_failed - stream_failed
