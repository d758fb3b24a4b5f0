"""The score-record topic's message format (issue #13): pinned, since consumers outside
vfstream read it."""

from __future__ import annotations

import json

import orjson
import pytest

from vfstream.domain.batches import (
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    BatchBuilder,
    MalformedBatch,
    decode_batch,
    encode_batch,
)


def test_the_batch_format_is_a_versioned_json_object_of_records() -> None:
    records = [orjson.dumps({"campaignId": "c1", "n": n}) for n in range(3)]
    message = encode_batch(records)
    assert message == (
        b'{"v":1,"records":[{"campaignId":"c1","n":0},'
        b'{"campaignId":"c1","n":1},{"campaignId":"c1","n":2}]}'
    )
    # Any JSON parser reads it.
    assert json.loads(message) == {
        "v": 1,
        "records": [{"campaignId": "c1", "n": n} for n in range(3)],
    }
    assert decode_batch(message) == [{"campaignId": "c1", "n": n} for n in range(3)]


def test_a_bare_record_reads_as_a_batch_of_one() -> None:
    assert decode_batch(b'{"campaignId": "c1"}') == [{"campaignId": "c1"}]


@pytest.mark.parametrize(
    "message", [b"", b"not json", b"[1]", b'{"v": 2, "records": []}', b'{"v": 1, "records": 3}']
)
def test_anything_else_is_a_malformed_batch(message: bytes) -> None:
    with pytest.raises(MalformedBatch):
        decode_batch(message)


def test_batches_close_at_the_record_limit_and_keep_partitions_apart() -> None:
    builder = BatchBuilder()
    done = []
    for n in range(MAX_BATCH_RECORDS * 2 + 5):
        finished = builder.add(n % 2, orjson.dumps({"n": n}))
        if finished is not None:
            done.append(finished)
    done.extend(batch for _, batch in builder.drain())
    decoded = [decode_batch(batch) for batch in done]
    assert all(len(batch) <= MAX_BATCH_RECORDS for batch in decoded)
    assert sorted(record["n"] for batch in decoded for record in batch) == list(
        range(MAX_BATCH_RECORDS * 2 + 5)
    )
    assert all(len({record["n"] % 2 for record in batch}) == 1 for batch in decoded)


def test_batches_close_before_the_byte_limit() -> None:
    builder = BatchBuilder()
    big = orjson.dumps({"pad": "x" * 100_000})
    sizes = [len(done) for n in range(12) if (done := builder.add(0, big)) is not None]
    sizes += [len(batch) for _, batch in builder.drain()]
    assert sum(sizes) > 1_000_000 and max(sizes) <= MAX_BATCH_BYTES
