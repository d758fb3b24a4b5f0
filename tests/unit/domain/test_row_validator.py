"""The fast row validator gives exactly what the pydantic path gives (issue #13): the same
record for a plainly valid row, and for anything else it stands aside (None) so that
``build_score_record`` decides with every reason."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.domain.test_records import valid_rows
from vfstream.domain.limits import Limits
from vfstream.domain.records import (
    CSV_COLUMNS,
    ScoreRecord,
    ScoringKey,
    build_score_record,
)
from vfstream.domain.row_validator import RowValidator

SOURCE = {"bucket": "b", "key": "k", "etag": "e", "run": "r1"}
SMALL = Limits(field_bytes=40, id_bytes=16, events_per_fan=50)
_SPOILERS = st.sampled_from(
    [
        "",
        " ",
        "x",
        "1",
        "0",
        "-1",
        "2",
        "1e400",
        "nan",
        "inf",
        "1_0",
        "\u0661",
        "0x1",
        " 0.5 ",
        "TRUE",
        "yes",
        "maybe",
        "LOW",
        "huge",
        "a|b| |c",
        "u1",
        "u1000",
        "u1050",
        "u1\u0661\u0662\u0663",
        "\x07",
        "é" * 15,
        "x" * 41,
    ]
)


def both(values: dict[str, str], key: ScoringKey, limits: Limits) -> tuple[object, object]:
    header = list(values)
    fields = [values[column] for column in header]
    kept = [(column, index) for index, column in enumerate(header) if column in CSV_COLUMNS]
    fast = RowValidator(kept, key, SOURCE, limits).validate(fields, 7)
    slow = build_score_record(values, key, {**SOURCE, "line": 7}, limits)
    return fast, slow


def check(values: dict[str, str], key: ScoringKey, limits: Limits) -> object:
    fast, slow = both(values, key, limits)
    if fast is not None:
        assert isinstance(slow, ScoreRecord), (values, slow)
        assert orjson.loads(orjson.dumps(fast)) == orjson.loads(slow.to_json())
    return fast


@settings(max_examples=300, deadline=None)
@given(valid_rows())
def test_a_valid_row_gives_the_pydantic_record(case: tuple[dict[str, str], ScoringKey]) -> None:
    values, key = case
    assert check(values, key, Limits()) is not None or not isinstance(
        build_score_record(values, key, {**SOURCE, "line": 7}), ScoreRecord
    )


@settings(max_examples=500, deadline=None)
@given(valid_rows(), st.data())
def test_a_spoiled_row_is_never_accepted_where_pydantic_refuses_it(
    case: tuple[dict[str, str], ScoringKey], data: st.DataObject
) -> None:
    values, key = case
    for column in data.draw(st.lists(st.sampled_from(list(CSV_COLUMNS)), max_size=3)):
        values[column] = data.draw(_SPOILERS)
    check(values, key, SMALL)
    check(values, key, Limits())


def test_most_plain_rows_take_the_fast_path() -> None:
    from tests.support.rows import MINIMAL_ROW

    key = ScoringKey(
        campaign_id="c1",
        campaign_name="Tour",
        scored_at=__import__("datetime").datetime(2026, 1, 1, tzinfo=__import__("datetime").UTC),
        gzipped=False,
    )
    assert check(dict(MINIMAL_ROW), key, Limits()) is not None
