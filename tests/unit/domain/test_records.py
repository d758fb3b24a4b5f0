"""Behaviour of scoring-file keys, headers and row validation (SPEC 2.1)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from tests.support.rows import MINIMAL_ROW
from vfstream.domain.limits import Limits
from vfstream.domain.records import (
    CSV_COLUMNS,
    REQUIRED_COLUMNS,
    FlexibleBool,
    RecordSource,
    ScoreRecord,
    ScoringFileError,
    ScoringKey,
    build_score_record,
    check_header,
    parse_iso_datetime,
    parse_scoring_key,
)
from vfstream.sources.s3.csvrows import read_scoring_rows
from vfstream.sources.s3.s3body import open_text

SAMPLE_KEY = "scrubbed/registrants.c1001.summer-tour.20261020T120000Z.cleaned.prepared.merged.csv"
# A copy of ../shared/samples: the SPEC's sample file, whose counts its README gives.
SAMPLE_PATH = Path(__file__).parents[2] / "data" / Path(SAMPLE_KEY).name
NOON = datetime(2026, 10, 20, 12, 0, tzinfo=UTC)
KEY = ScoringKey(campaign_id="c1", campaign_name="Tour", scored_at=NOON, gzipped=False)
SOURCE = RecordSource(bucket="bucket", key="scrubbed/x.csv", etag="etag-1", line=2)


def row(**overrides: str) -> dict[str, str]:
    """A valid CSV row (column -> text) of fan u1 at rank 0 of campaign c1, unless overridden.

    Keyword names use ``_`` for ``.`` (``nudetect_score`` -> ``nudetect.score``).
    """
    values = dict(MINIMAL_ROW)
    values.update(
        {name.replace("nudetect_", "nudetect."): text for name, text in overrides.items()}
    )
    return values


def build(values: dict[str, str], key: ScoringKey = KEY) -> ScoreRecord | list[str]:
    return build_score_record(values, key, SOURCE)


def valid(values: dict[str, str]) -> ScoreRecord:
    outcome = build(values)
    assert isinstance(outcome, ScoreRecord), outcome
    return outcome


def reasons_of(values: dict[str, str]) -> list[str]:
    outcome = build(values)
    assert isinstance(outcome, list), f"expected the row to be invalid, got {outcome!r}"
    assert outcome, "an invalid row must carry at least one reason"
    return outcome


# --- object keys ------------------------------------------------------------------------


def test_basic_iso_key_gives_campaign_name_and_utc_time() -> None:
    key = parse_scoring_key(SAMPLE_KEY)

    assert key == ScoringKey(
        campaign_id="c1001", campaign_name="summer-tour", scored_at=NOON, gzipped=False
    )


@pytest.mark.parametrize(
    ("date_time", "expected"),
    [
        ("2026-10-20T12:00:00Z", NOON),
        ("2026-10-20T12:00:00z", NOON),
        ("20261020T120000z", NOON),
        ("2026-10-20T14:00:00+02:00", NOON),
        ("20261020T140000+0200", NOON),
        ("2026-10-20T12:00:00", NOON),
        ("2026-10-20T12:00:00.250Z", NOON + timedelta(milliseconds=250)),
        ("20261020T120000.5Z", NOON + timedelta(milliseconds=500)),
    ],
)
def test_key_accepts_basic_and_extended_date_times(date_time: str, expected: datetime) -> None:
    key = parse_scoring_key(f"scrubbed/registrants.c1.Tour.{date_time}.cleaned.prepared.merged.csv")

    assert key.scored_at == expected
    assert key.scored_at.tzinfo is not None


def test_gz_suffix_marks_the_key_as_gzipped() -> None:
    key = parse_scoring_key(SAMPLE_KEY + ".gz")

    assert key.gzipped is True
    assert key.campaign_id == "c1001"


def test_campaign_name_may_contain_dots() -> None:
    key = parse_scoring_key(
        "scrubbed/registrants.c7.world.tour.2027.20261020T120000Z.cleaned.prepared.merged.csv"
    )

    assert (key.campaign_id, key.campaign_name) == ("c7", "world.tour.2027")


@pytest.mark.parametrize(
    "key",
    [
        "registrants.c1.Tour.20261020T120000Z.cleaned.prepared.merged.csv",  # no scrubbed/
        "fanlist/registrants.c1.Tour.20261020T120000Z.cleaned.prepared.merged.csv",
        "scrubbed/nested/registrants.c1.Tour.20261020T120000Z.cleaned.prepared.merged.csv",
        "scrubbed/registrants.c1.Tour.20261020T120000Z.csv",  # wrong suffix
        "scrubbed/registrants.c1.Tour.20261020T120000Z.cleaned.prepared.merged.csv.zip",
        "scrubbed/registrants.c1.Tour.cleaned.prepared.merged.csv",  # no dateTime
        "scrubbed/registrants.c1.20261020T120000Z.cleaned.prepared.merged.csv",  # no name
        "scrubbed/registrants..Tour.20261020T120000Z.cleaned.prepared.merged.csv",  # no id
        "scrubbed/registrants.c1.Tour.2026-10-20.cleaned.prepared.merged.csv",  # date only
        "scrubbed/registrants.c1.Tour.20261020T120000Z.cleaned.prepared.merged.csv ",
        "",
    ],
)
def test_key_that_does_not_match_the_pattern_is_rejected_naming_the_pattern(key: str) -> None:
    with pytest.raises(ScoringFileError) as caught:
        parse_scoring_key(key)

    message = str(caught.value)
    assert repr(key) in message
    assert "does not match" in message
    assert "scrubbed/registrants.<campaignId>.<campaignName>.<dateTime>" in message


@pytest.mark.parametrize(
    "date_time", ["20261340T120000Z", "2026-02-30T12:00:00Z", "20261020T250000Z"]
)
def test_key_with_impossible_date_time_is_rejected_as_invalid_date_time(date_time: str) -> None:
    key = f"scrubbed/registrants.c1.Tour.{date_time}.cleaned.prepared.merged.csv"

    with pytest.raises(ScoringFileError, match="invalid dateTime"):
        parse_scoring_key(key)


@pytest.mark.parametrize(
    "text",
    ["2026-10-20T12:00:00Z", "2026-10-20T12:00:00z", "20261020T120000Z", "20261020T120000z"],
)
def test_parse_iso_datetime_takes_upper_and_lower_case_z_as_utc(text: str) -> None:
    assert parse_iso_datetime(text) == NOON
    assert parse_iso_datetime(text).utcoffset() == timedelta(0)


def test_parse_iso_datetime_takes_naive_time_as_utc() -> None:
    assert parse_iso_datetime(" 2026-10-20T12:00:00 ").tzinfo is UTC


def test_parse_iso_datetime_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_iso_datetime("yesterday")


# --- header ------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [[], [""], ["  ", ""]])
def test_missing_header_row_fails_the_file(header: list[str]) -> None:
    with pytest.raises(ScoringFileError, match="no header row"):
        check_header(header)


@pytest.mark.parametrize("missing", REQUIRED_COLUMNS)
def test_header_without_a_required_column_fails_naming_it(missing: str) -> None:
    header = [column for column in REQUIRED_COLUMNS if column != missing] + ["email"]

    with pytest.raises(ScoringFileError, match="lacks required columns") as caught:
        check_header(header)

    assert missing in str(caught.value)


def test_header_lacking_several_columns_names_them_all() -> None:
    with pytest.raises(ScoringFileError) as caught:
        check_header(["globalUserId", "email"])

    message = str(caught.value)
    for column in REQUIRED_COLUMNS[1:]:
        assert column in message


@pytest.mark.parametrize("duplicate", ["score", "email", "nudetect.score"])
def test_header_repeating_a_known_column_fails_naming_it(duplicate: str) -> None:
    header = [*REQUIRED_COLUMNS, "email", "nudetect.score", duplicate]

    with pytest.raises(ScoringFileError, match="repeats columns") as caught:
        check_header(header)

    assert duplicate in str(caught.value)


def test_header_may_repeat_unknown_columns_in_any_order() -> None:
    header = ["extra", *reversed(REQUIRED_COLUMNS), "extra", "note", "note"]

    check_header(header)


# --- rows ----------------------------------------------------------------------------------


def test_valid_row_becomes_a_record_of_the_files_campaign_and_time() -> None:
    record = valid(row(hbase="London", unknown_column="ignored"))

    assert record.key == "c1:u1"
    assert (record.campaignId, record.campaignName) == ("c1", "Tour")
    assert (record.globalUserId, record.id, record.rank) == ("u1", "u1000", 0)
    assert (record.eventId, record.market) == ("ev1", "London")
    assert record.score == 0.5
    assert record.isVerified is True
    assert record.verdict is None
    assert record.scoredAt == NOON
    assert record.source == SOURCE


@pytest.mark.parametrize(
    ("user", "row_id", "rank"),
    [("u1", "u1000", 0), ("u1", "u1002", 2), ("u1", "u1099", 99), ("u12", "u12007", 7)],
)
def test_rank_is_the_last_three_digits_of_id(user: str, row_id: str, rank: int) -> None:
    assert valid(row(globalUserId=user, id=row_id)).rank == rank


@pytest.mark.parametrize("column", REQUIRED_COLUMNS)
@pytest.mark.parametrize("how", ["absent", "empty", "blank"])
def test_missing_or_empty_required_field_is_reported_by_column(column: str, how: str) -> None:
    values = row()
    if how == "absent":
        del values[column]
    else:
        values[column] = "" if how == "empty" else "   "

    reasons = reasons_of(values)

    assert f"{column}: required value is missing or empty" in reasons


@pytest.mark.parametrize(
    ("overrides", "column", "fragment"),
    [
        ({"score": "abc"}, "score", "valid number"),
        ({"score": "1.7"}, "score", "less than or equal to 1"),
        ({"score": "-0.01"}, "score", "greater than or equal to 0"),
        ({"score": "nan"}, "score", "finite"),
        ({"score": "NaN"}, "score", "finite"),
        ({"score": "inf"}, "score", "finite"),
        ({"score": "-inf"}, "score", "finite"),
        ({"localFanscore": "high"}, "localFanscore", "valid number"),
        ({"accountFanscore": "nan"}, "accountFanscore", "finite"),
        ({"bandScore": "infinity"}, "bandScore", "finite"),
        ({"nudetect_score": "x"}, "nudetect.score", "valid number"),
        ({"nudetect_score": "nan"}, "nudetect.score", "finite"),
        ({"isVerified": "on"}, "isVerified", "true/false, 1/0 or yes/no"),
        ({"isVerified": "t"}, "isVerified", "true/false, 1/0 or yes/no"),
        ({"isVerified": "y"}, "isVerified", "true/false, 1/0 or yes/no"),
        ({"isVerified": "2"}, "isVerified", "true/false, 1/0 or yes/no"),
        ({"isVerified": "1.0"}, "isVerified", "true/false, 1/0 or yes/no"),
        ({"verdict": "maybe"}, "verdict", "true/false, 1/0 or yes/no"),
        ({"verdict": "off"}, "verdict", "true/false, 1/0 or yes/no"),
        ({"nudetect_scoreBand": "extreme"}, "nudetect.scoreBand", "'low', 'medium' or 'high'"),
        ({"id": "u1"}, "id", "3-digit rank"),
        ({"id": "u1000x"}, "id", "3-digit rank"),
        ({"id": "u10"}, "id", "3-digit rank"),
        ({"id": "u1ab"}, "id", "3-digit rank"),
        ({"id": "u2000"}, "id", "3-digit rank"),  # another fan's id
        ({"id": "u11000"}, "id", "3-digit rank"),  # u1 is a prefix of u11
        ({"campaign_id": "c2"}, "campaign_id", "differs from the file's campaign 'c1'"),
    ],
)
def test_invalid_value_is_reported_naming_its_column(
    overrides: dict[str, str], column: str, fragment: str
) -> None:
    reasons = reasons_of(row(**overrides))

    assert len(reasons) == 1, reasons
    assert reasons[0].startswith(f"{column}: ")
    assert fragment in reasons[0]


def test_reason_shows_the_offending_value() -> None:
    assert reasons_of(row(score="1.7")) == [
        "score: Input should be less than or equal to 1 (got '1.7')"
    ]


def test_id_of_another_user_names_both_values() -> None:
    (reason,) = reasons_of(row(id="u2000"))

    assert "'u2000'" in reason
    assert "globalUserId 'u1'" in reason


def test_row_with_several_faults_reports_every_reason() -> None:
    values = row(
        id="zz",
        campaign_id="c9",
        score="1.5",
        isVerified="maybe",
        verdict="x",
        nudetect_scoreBand="severe",
    )
    del values["event_id"]

    reasons = reasons_of(values)

    columns = sorted(reason.split(":", 1)[0] for reason in reasons)
    assert columns == sorted(
        ["id", "campaign_id", "score", "isVerified", "verdict", "nudetect.scoreBand", "event_id"]
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        (" True ", True),
        ("1", True),
        ("yes", True),
        ("YeS", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("NO", False),
    ],
)
def test_booleans_accept_true_false_one_zero_yes_no_in_any_case(text: str, expected: bool) -> None:
    record = valid(row(isVerified=text, verdict=text))

    assert record.isVerified is expected
    assert record.verdict is expected


def test_empty_verdict_is_pending() -> None:
    assert valid(row(verdict="")).verdict is None
    assert valid(row(verdict="  ")).verdict is None


@pytest.mark.parametrize("value", [True, False, 1, 0, "yes", "No"])
def test_flexible_bool_accepts_real_bools_and_the_listed_spellings(value: Any) -> None:
    assert TypeAdapter(FlexibleBool).validate_python(value) in (True, False)


@pytest.mark.parametrize(
    "value", ["on", "off", "t", "f", "y", "n", "", 2, -1, 1.0, 0.0, b"true", b"on", None]
)
def test_flexible_bool_rejects_what_pydantic_lax_mode_would_allow(value: Any) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(FlexibleBool).validate_python(value)


@pytest.mark.parametrize("text", ['"on"', '"t"', '"y"', "1.0", '"2"'])
def test_flexible_bool_rejects_lax_spellings_in_json_too(text: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(FlexibleBool).validate_json(text)


def test_score_bounds_are_inclusive() -> None:
    assert valid(row(score="0")).score == 0.0
    assert valid(row(score="1")).score == 1.0
    assert valid(row(score="1e-3")).score == 0.001


def test_optional_scores_are_not_range_limited() -> None:
    record = valid(row(localFanscore="3.5", accountFanscore="-1", bandScore="0.6"))

    assert (record.localFanscore, record.accountFanscore, record.bandScore) == (3.5, -1.0, 0.6)


def test_score_band_is_case_insensitive() -> None:
    assert valid(row(nudetect_scoreBand=" HIGH ")).nudetectScoreBand == "high"
    assert valid(row(nudetect_score="0.35", nudetect_scoreBand="Medium")).nudetectScore == 0.35


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" Ana.Ruiz@Example.COM ", "ana.ruiz@example.com"),
        ("bo@example.com", "bo@example.com"),
        ("\tCY@EXAMPLE.ORG\t", "cy@example.org"),
    ],
)
def test_email_is_trimmed_and_lower_cased(text: str, expected: str) -> None:
    assert valid(row(email=text)).email == expected


@pytest.mark.parametrize("text", ["", "   ", "\t \t"])
def test_blank_email_becomes_none(text: str) -> None:
    assert valid(row(email=text)).email is None


@pytest.mark.parametrize("email", ["   ", "", "\t"])
def test_blank_email_becomes_none_on_the_model_too(email: str) -> None:
    record = ScoreRecord.model_validate(valid(row()).model_dump() | {"email": email})

    assert record.email is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("vip", ["vip"]),
        ("dup-device|manual", ["dup-device", "manual"]),
        (" a | b ||c| ", ["a", "b", "c"]),
        ("", []),
        ("|", []),
    ],
)
def test_tags_and_codes_split_on_pipe(text: str, expected: list[str]) -> None:
    record = valid(row(review_notes=text, codes=text))

    assert record.tags == expected
    assert record.codes == expected


def test_tags_and_codes_default_to_empty_lists() -> None:
    record = valid(row())

    assert (record.tags, record.codes) == ([], [])


def test_contact_fields_are_kept_trimmed() -> None:
    record = valid(
        row(
            memberId=" m1 ",
            firstName="Ana",
            lastName="Lee, Jr.",
            phone="+13125550101",
            phoneType="mobile",
            phoneConfirmedDate="2026-09-01",
            locale="en-us",
        )
    )

    assert record.memberId == "m1"
    assert record.lastName == "Lee, Jr."
    assert (record.phone, record.phoneType, record.locale) == ("+13125550101", "mobile", "en-us")


def test_naive_scored_at_is_taken_as_utc() -> None:
    record = valid(row()).model_copy()
    naive = ScoreRecord.model_validate(
        record.model_dump() | {"scoredAt": NOON.replace(tzinfo=None)}
    )

    assert naive.scoredAt.tzinfo is not None
    assert naive.scoredAt == NOON


def test_naive_scored_at_in_json_is_taken_as_utc() -> None:
    document = valid(row()).to_json().replace(b"2026-10-20T12:00:00Z", b"2026-10-20T12:00:00")
    assert b"2026-10-20T12:00:00Z" not in document

    record = ScoreRecord.from_json(document)

    assert record.scoredAt.utcoffset() == timedelta(0)
    assert record.scoredAt == NOON


def test_scored_at_keeps_its_offset_and_instant() -> None:
    plus_two = datetime(2026, 10, 20, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    record = ScoreRecord.model_validate(valid(row()).model_dump() | {"scoredAt": plus_two})

    assert record.scoredAt == NOON
    assert record.scoredAt.utcoffset() == timedelta(hours=2)


def test_model_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        ScoreRecord.model_validate(valid(row()).model_dump() | {"surprise": 1})


def test_every_csv_column_maps_to_a_record_field() -> None:
    assert set(CSV_COLUMNS.values()) <= set(ScoreRecord.model_fields)
    assert set(REQUIRED_COLUMNS) <= set(CSV_COLUMNS)


# --- the shared sample file ----------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_outcomes() -> dict[str, list[tuple[int, ScoreRecord | list[str]]]]:
    key = parse_scoring_key(SAMPLE_KEY)
    outcomes: dict[str, list[tuple[int, ScoreRecord | list[str]]]] = {}
    with open_text(io.BytesIO(SAMPLE_PATH.read_bytes()), gzipped=False) as text:
        for csv_row in read_scoring_rows(text):
            assert csv_row.reasons == []
            source = RecordSource(bucket="b", key=SAMPLE_KEY, etag="e", line=csv_row.line)
            outcome = build_score_record(csv_row.values, key, source)
            outcomes.setdefault(csv_row.values["globalUserId"], []).append((csv_row.line, outcome))
    return outcomes


def test_sample_file_has_five_valid_and_two_invalid_rows(
    sample_outcomes: dict[str, list[tuple[int, ScoreRecord | list[str]]]],
) -> None:
    everything = [outcome for rows in sample_outcomes.values() for _, outcome in rows]
    records = [outcome for outcome in everything if isinstance(outcome, ScoreRecord)]
    invalid = [outcome for outcome in everything if isinstance(outcome, list)]

    assert sorted(sample_outcomes) == [f"u100{n}" for n in range(1, 7)]
    assert (len(records), len(invalid)) == (5, 2)
    assert {record.globalUserId for record in records} == {"u1001", "u1002", "u1003", "u1004"}


def test_sample_invalid_rows_give_the_right_reasons(
    sample_outcomes: dict[str, list[tuple[int, ScoreRecord | list[str]]]],
) -> None:
    ((line_5, reasons_5),) = sample_outcomes["u1005"]
    ((line_6, reasons_6),) = sample_outcomes["u1006"]

    assert line_5 == 7
    assert isinstance(reasons_5, list)
    assert len(reasons_5) == 1
    assert reasons_5[0].startswith("id: 'u1005' is not globalUserId followed by a 3-digit rank")
    assert line_6 == 8
    assert reasons_6 == ["score: Input should be less than or equal to 1 (got '1.7')"]


def test_sample_valid_rows_carry_the_described_values(
    sample_outcomes: dict[str, list[tuple[int, ScoreRecord | list[str]]]],
) -> None:
    records = {
        (outcome.globalUserId, outcome.rank): outcome
        for rows in sample_outcomes.values()
        for _, outcome in rows
        if isinstance(outcome, ScoreRecord)
    }

    assert sorted(records) == [("u1001", 0), ("u1001", 1), ("u1002", 1), ("u1003", 0), ("u1004", 0)]
    ana = records[("u1001", 0)]
    assert (ana.email, ana.isVerified, ana.verdict) == ("ana.ruiz@example.com", True, True)
    assert (ana.eventId, ana.market, ana.tags) == ("ev10", "chicago", ["vip"])
    assert (records[("u1001", 1)].eventId, records[("u1001", 1)].market) == ("ev11", "detroit")
    bo = records[("u1002", 1)]
    assert (bo.lastName, bo.isVerified, bo.verdict) == ("Lee, Jr.", False, None)
    assert (bo.tags, bo.codes, bo.nudetectScoreBand) == (["dup-device", "manual"], ["R7"], "high")
    cy = records[("u1003", 0)]
    assert (cy.lastName, cy.isVerified) == ('O"Neil', True)
    dee = records[("u1004", 0)]
    assert (dee.isVerified, dee.verdict, dee.memberId) == (False, False, None)
    assert all(record.scoredAt == NOON for record in records.values())
    assert all(record.campaignName == "summer-tour" for record in records.values())
    assert records[("u1003", 0)].source == RecordSource(
        bucket="b", key=SAMPLE_KEY, etag="e", line=5
    )


def test_sample_counts_match_the_readme(
    sample_outcomes: dict[str, list[tuple[int, ScoreRecord | list[str]]]],
) -> None:
    fans: dict[str, ScoreRecord] = {}
    for rows in sample_outcomes.values():
        for _, outcome in rows:
            if isinstance(outcome, ScoreRecord):
                fans[outcome.globalUserId] = outcome

    assert sum(fan.isVerified for fan in fans.values()) == 2
    assert sum(not fan.isVerified for fan in fans.values()) == 2
    assert sum(fan.verdict is True for fan in fans.values()) == 1


# --- round trip -----------------------------------------------------------------------------

# Sizes within the default limits (test_limits.py has the rows past them).
_NAME = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1, max_size=60
)
_FREE = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
_BOOL = st.sampled_from(["true", "false", "TRUE", "False", "1", "0", "yes", "no", "YES", "No"])
# What every store can hold (limits.number_refusal): 0, or a magnitude from 1e-130 to 1e126.
_STORABLE = st.one_of(
    st.just(0.0),
    st.floats(min_value=1e-130, max_value=9.9e125),
    st.floats(min_value=-9.9e125, max_value=-1e-130),
)
_FLOAT = _STORABLE.map(repr)
_TAGS = st.lists(
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="|"), max_size=20),
    max_size=10,
).map("|".join)
_ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=7))]
)


@st.composite
def valid_rows(draw: st.DrawFn) -> tuple[dict[str, str], ScoringKey]:
    user = draw(_NAME)
    campaign = draw(_NAME)
    values = {
        "globalUserId": user,
        "id": f"{user}{draw(st.integers(0, 99)):03d}",
        "campaign_id": campaign,
        "event_id": draw(_NAME),
        "score": repr(draw(st.one_of(st.just(0.0), st.floats(1e-130, 1.0)))),
        "isVerified": draw(_BOOL),
    }
    optional = {
        "hbase": _FREE,
        "localFanscore": _FLOAT,
        "accountFanscore": _FLOAT,
        "bandScore": _FLOAT,
        "verdict": st.one_of(st.just(""), _BOOL),
        "nudetect.score": _FLOAT,
        "nudetect.scoreBand": st.sampled_from(["", "low", "MEDIUM", "High"]),
        "review_notes": _TAGS,
        "codes": _TAGS,
        "memberId": _FREE,
        "email": _FREE,
        "firstName": _FREE,
        "lastName": _FREE,
        "phone": _FREE,
        "phoneType": _FREE,
        "phoneConfirmedDate": _FREE,
        "locale": _FREE,
    }
    for column, strategy in optional.items():
        if draw(st.booleans()):
            values[column] = draw(strategy)
    scored_at = draw(
        st.datetimes(
            min_value=datetime(1970, 1, 2),
            max_value=datetime(2100, 1, 1),
            timezones=st.one_of(st.none(), _ZONES),
        )
    )
    key = ScoringKey(
        campaign_id=campaign, campaign_name=draw(_NAME), scored_at=scored_at, gzipped=False
    )
    return values, key


@settings(max_examples=200, deadline=None)
@given(valid_rows())
def test_any_valid_row_round_trips_through_json(case: tuple[dict[str, str], ScoringKey]) -> None:
    values, key = case
    record = build(values, key)
    assert isinstance(record, ScoreRecord), record

    again = ScoreRecord.from_json(record.to_json())

    assert again == record
    assert again.to_json() == record.to_json()
    assert again.scoredAt.tzinfo is not None


# ---- issue #20: no timestamp freezes a fan, no score a store cannot hold ----------------

KEY_AT = "scrubbed/registrants.c1.tour.{}.cleaned.prepared.merged.csv"


def test_a_key_dated_beyond_the_future_skew_fails_the_file_and_one_within_it_does_not() -> None:
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)

    with pytest.raises(ScoringFileError, match="in the future, past the allowed skew of 24 h"):
        parse_scoring_key(KEY_AT.format("99991231T235959Z"), now=now)
    with pytest.raises(ScoringFileError, match="past the allowed skew"):
        parse_scoring_key(KEY_AT.format("20261203T120001Z"), now=now)
    assert parse_scoring_key(KEY_AT.format("20261203T115959Z"), now=now).scored_at.day == 3
    relaxed = Limits(future_skew_seconds=10 * 365 * 86400)
    assert parse_scoring_key(KEY_AT.format("20301231T000000Z"), relaxed, now=now)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0.2_5", "not a plainly written decimal number"),
        ("1_0", "not a plainly written decimal number"),
        ("1e-320", "cannot be stored"),
        ("4.9e-324", "cannot be stored"),
        ("1e-131", "cannot be stored"),
        ("1e-400", "too small to store"),
        ("0.000e-9999", None),
    ],
)
def test_a_score_python_would_parse_but_no_store_holds_is_refused(
    text: str, reason: str | None
) -> None:
    values = {**MINIMAL_ROW, "score": text}

    reasons = build_score_record(values, KEY, SOURCE)

    if reason is None:  # a zero written oddly is still zero
        assert isinstance(reasons, ScoreRecord) and reasons.score == 0.0
        return
    assert isinstance(reasons, list) and any(
        r.startswith("score: ") and reason in r for r in reasons
    ), reasons


def test_minus_zero_is_zero_and_the_smallest_storable_score_is_kept() -> None:
    for text, expected in (("-0", 0.0), ("-0.0", 0.0), ("1e-130", 1e-130)):
        record = build_score_record({**MINIMAL_ROW, "score": text}, KEY, SOURCE)
        assert isinstance(record, ScoreRecord), record
        assert record.score == expected and str(record.score) == str(expected)
