"""Reading a partition's committed records by offset range, on the real broker."""

from __future__ import annotations

import uuid

from vfstream import kafka
from vfstream.settings import Settings
from vfstream.stream.partition_reader import CommittedRangeReader


async def produce_three_transactions(settings: Settings) -> dict[bytes, int]:
    """A committed, an aborted and a committed transaction on partition 0; offsets by value."""
    producer = kafka.producer(
        settings,
        transactional_id=f"{settings.app_id}-range-{uuid.uuid4().hex[:6]}",
    )
    topic = settings.score_records_topic
    offsets: dict[bytes, int] = {}
    await producer.start()
    try:
        for values, commit in (([b"a", b"b", b"c"], True), ([b"x", b"y"], False), ([b"d"], True)):
            await producer.begin_transaction()
            for value in values:
                sent = await producer.send_and_wait(topic, value, key=value, partition=0)
                offsets[value] = sent.offset
            if commit:
                await producer.commit_transaction()
            else:
                await producer.abort_transaction()
    finally:
        await producer.stop()
    return offsets


async def test_a_range_holds_committed_records_only_in_offset_order(isolated: Settings) -> None:
    offsets = await produce_three_transactions(isolated)
    reader = CommittedRangeReader(isolated, isolated.score_records_topic)
    try:
        whole = await reader.read(0, 0, offsets[b"d"] + 1)
        assert [(r.offset, r.value) for r in whole] == [
            (offsets[v], v) for v in (b"a", b"b", b"c", b"d")
        ]
        # Bounds: start included, end excluded.
        middle = await reader.read(0, offsets[b"b"], offsets[b"d"])
        assert [r.value for r in middle] == [b"b", b"c"]
    finally:
        await reader.stop()


async def test_a_range_of_markers_and_aborted_records_reads_empty(isolated: Settings) -> None:
    offsets = await produce_three_transactions(isolated)
    reader = CommittedRangeReader(isolated, isolated.score_records_topic)
    try:
        # After "c": its commit marker, the aborted pair and their abort marker.
        hole = await reader.read(0, offsets[b"c"] + 1, offsets[b"d"])
        assert offsets[b"d"] - offsets[b"c"] > 3
        assert hole == []
        assert await reader.read(0, 5, 5) == []
    finally:
        await reader.stop()
