import orjson

from vfstream.domain.dead_letters import RAW_CHARS, describe, latest

MS = 1_764_500_000_000


def _letter(**fields: object) -> bytes:
    return orjson.dumps({"kind": "row", "reasons": ["bad rank"], **fields})


def test_row_letter_names_file_and_line() -> None:
    letter = describe(
        _letter(campaignId="c1", bucket="b", key="scrubbed/x.csv", line=7, raw="a,b"), MS
    )

    assert letter is not None
    assert letter["where"] == "s3://b/scrubbed/x.csv:7"
    assert letter["line"] == 7
    assert letter["reasons"] == ["bad rank"]
    assert letter["raw"] == "a,b"
    assert letter["at"].startswith("2025-11-30")


def test_kinesis_letter_names_shard_and_sequence() -> None:
    letter = describe(
        _letter(kind="kinesis", stream="s", shardId="shard-0", sequenceNumber="42"), None
    )

    assert letter is not None
    assert letter["where"] == "kinesis://s/shard-0/42"
    assert letter["at"] is None


def test_score_record_letter_names_partition_offset_and_index() -> None:
    letter = describe(
        _letter(kind="record", partition=3, offset=10, index=2, records=[{"x": 1}]), MS
    )

    assert letter is not None
    assert letter["where"] == "score-records 3@10[2]"
    assert letter["raw"] == '[{"x":1}]'


def test_raw_text_is_cut_to_a_safe_length() -> None:
    letter = describe(_letter(raw="<" * (RAW_CHARS * 4)), MS)

    assert letter is not None
    assert len(letter["raw"]) == RAW_CHARS + 1
    assert letter["raw"].endswith("…")


def test_long_and_many_reasons_are_bounded() -> None:
    letter = describe(_letter(reasons=["r" * 10_000] * 100), MS)

    assert letter is not None
    assert len(letter["reasons"]) == 20
    assert all(len(reason) == RAW_CHARS for reason in letter["reasons"])


def test_messages_that_are_not_dead_letters_are_skipped() -> None:
    assert describe(b"not json", MS) is None
    assert describe(b"[1, 2]", MS) is None
    assert describe(b'{"reasons": []}', MS) is None


def _described(campaign: str, kind: str, at: int) -> dict[str, object]:
    letter = describe(_letter(campaignId=campaign, kind=kind), MS + at * 1000)
    assert letter is not None
    return letter


def test_latest_keeps_n_per_campaign_and_kind_newest_first() -> None:
    letters = [_described("c1", "row", i) for i in range(5)]
    letters += [_described("c1", "file", 10), _described("c2", "row", 20)]

    kept = latest(letters, campaign=None, kind=None, limit=2)

    assert [(x["campaignId"], x["kind"]) for x in kept] == [
        ("c2", "row"),
        ("c1", "file"),
        ("c1", "row"),
        ("c1", "row"),
    ]
    assert kept[2]["at"] > kept[3]["at"]


def test_latest_filters_by_campaign_and_kind() -> None:
    letters = [_described("c1", "row", 1), _described("c1", "file", 2), _described("c2", "row", 3)]

    assert [x["campaignId"] for x in latest(letters, campaign="c2", kind=None, limit=5)] == ["c2"]
    assert [x["kind"] for x in latest(letters, campaign="c1", kind="file", limit=5)] == ["file"]
