"""The ledger applies every record of a partition in offset order, whatever the stream
drops: a skipped range is read directly before the next event, a quiet partition's tail
up to its consumer's position, and a hole of transaction markers reads as nothing."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import orjson
import pytest

from tests.support.ledger import (
    PARTITION,
    FakeSource,
    FakeTable,
    Run,
    fan_record,
    fetched_in,
    recount,
    replay_changelog,
)
from vfstream.domain.keys import position_key


def partition_events(offsets: list[int]) -> list[Any]:
    return [fetched_in(1, offset, fan_record(f"u{offset}")) for offset in offsets]


def run_with(source: FakeSource, table: FakeTable | None = None) -> Run:
    return Run(table or FakeTable(), flush_every=100, source=source, flush_seconds=60.0)


def test_records_the_stream_skipped_are_read_and_applied_before_the_next_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = partition_events([0, 1, 2, 3, 4])
    source = FakeSource(events)
    run = run_with(source)

    async def scenario() -> None:
        for item in (events[0], events[3], events[4]):  # 1 and 2 dropped by the stream
            await run.ledger.handle(item, run._ack)
        await run.ledger.flush(PARTITION, run._ack)

    with caplog.at_level(logging.WARNING, logger="vfstream.stream.verification"):
        asyncio.run(scenario())
    assert source.reads == [(1, 3)]
    assert run.ledger.filled_records == 2
    assert run.acked == [0, 3, 4]  # only stream events are acknowledged
    assert recount(replay_changelog(run.table.changelog)) == {"c1": (5, 0, 0)}
    assert run.ledger.recorded_position(PARTITION) == 5
    assert "skipped 2 message(s) (2 records) between offsets 1 and 2" in caplog.text


def test_a_hole_of_transaction_markers_reads_empty_and_is_not_read_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = partition_events([0, 1, 3, 4, 6])  # 2 and 5: commit markers
    source = FakeSource(events)
    run = run_with(source)

    async def scenario() -> None:
        for item in events:
            await run.ledger.handle(item, run._ack)
        await run.ledger.flush(PARTITION, run._ack)

    with caplog.at_level(logging.WARNING, logger="vfstream.stream.verification"):
        asyncio.run(scenario())
    assert source.reads == [(2, 3), (5, 6)]
    assert run.ledger.filled_records == 0
    assert "skipped" not in caplog.text
    assert recount(run.table.data) == {"c1": (5, 0, 0)}


def test_a_generation_starting_past_the_recorded_position_reads_the_records_between() -> None:
    events = partition_events(list(range(6)))
    source = FakeSource(events)

    async def scenario() -> Run:
        first = run_with(source)
        for item in events[:2]:
            await first.ledger.handle(item, first._ack)
        await first.ledger.flush(PARTITION, first._ack)
        # Another worker takes over; the offset was committed past 2..3, never applied.
        second = run_with(source, FakeTable(replay_changelog(first.table.changelog)))
        second.table.changelog = list(first.table.changelog)
        for offset in (4, 5):
            await second.ledger.handle(fetched_in(2, offset, fan_record(f"u{offset}")), second._ack)
        await second.ledger.flush(PARTITION, second._ack)
        return second

    second = asyncio.run(scenario())
    assert source.reads == [(2, 4)]
    assert recount(replay_changelog(second.table.changelog)) == {"c1": (6, 0, 0)}


def test_a_quiet_partition_short_of_its_consumer_position_has_its_tail_applied() -> None:
    events = partition_events([0, 1, 2, 3])
    source = FakeSource(events)
    run = run_with(source)
    run.ledger.policy = replace(run.ledger.policy, tail_idle_seconds=0.0)

    async def scenario() -> int:
        await run.ledger.handle(events[0], run._ack)
        await run.ledger.flush(PARTITION, run._ack)
        # The stream consumed up to 4 but handed over only offset 0.
        return await run.ledger.fill_tails({PARTITION: 4})

    assert asyncio.run(scenario()) == 3
    assert source.reads == [(1, 4)]
    assert run.table.changelog[-1] == (position_key(PARTITION), b"4")
    assert recount(replay_changelog(run.table.changelog)) == {"c1": (4, 0, 0)}


def test_a_partition_with_recent_events_or_nothing_missing_is_not_read() -> None:
    events = partition_events([0, 1, 2])
    source = FakeSource(events)
    run = run_with(source)

    async def scenario() -> tuple[int, int]:
        for item in events:
            await run.ledger.handle(item, run._ack)
        await run.ledger.flush(PARTITION, run._ack)
        busy = await run.ledger.fill_tails({PARTITION: 5})  # its last event just now
        run.ledger.policy = replace(run.ledger.policy, tail_idle_seconds=0.0)
        caught_up = await run.ledger.fill_tails({PARTITION: 3})
        return busy, caught_up

    assert asyncio.run(scenario()) == (0, 0)
    assert source.reads == []


def test_a_partition_never_recorded_is_read_from_its_start() -> None:
    events = partition_events([0, 1, 2])
    source = FakeSource(events)
    run = run_with(source)

    async def scenario() -> None:
        # Offsets committed at 2 before anything was applied (a fresh group, say).
        await run.ledger.handle(events[2], run._ack)
        await run.ledger.flush(PARTITION, run._ack)

    asyncio.run(scenario())
    assert source.reads == [(0, 2)]
    assert recount(run.table.data) == {"c1": (3, 0, 0)}


def test_a_malformed_record_in_a_skipped_range_is_dead_lettered_and_the_rest_applied() -> None:
    events = partition_events([0, 1, 2, 3])
    events[1].value = b'{"campaignId": "c1", "globalUserId": '  # truncated JSON
    source = FakeSource(events)
    run = run_with(source)
    letters: list[dict[str, Any]] = []

    async def dead_letter(key: bytes, value: bytes) -> None:
        letters.append(orjson.loads(value))

    run.ledger._dead_letter = dead_letter

    async def scenario() -> None:
        for item in (events[0], events[3]):  # 1 and 2 skipped by the stream
            await run.ledger.handle(item, run._ack)
        await run.ledger.flush(PARTITION, run._ack)

    asyncio.run(scenario())
    assert [(letter["kind"], letter["offset"]) for letter in letters] == [("score-record", 1)]
    assert letters[0]["raw"].startswith('{"campaignId": "c1"')
    assert letters[0]["reasons"]
    assert run.ledger.statuses["invalid"] == 1
    assert recount(replay_changelog(run.table.changelog)) == {"c1": (3, 0, 0)}
    assert run.ledger.recorded_position(PARTITION) == 4


def test_a_range_the_fetcher_proved_empty_is_not_read() -> None:
    events = partition_events([0, 2, 4])  # 1 and 3: transaction markers the fetcher passed
    source = FakeSource(events)
    run = run_with(source)
    run.ledger._known_gap = lambda partition, start, end: (start, end) in {(1, 2), (3, 4)}

    async def scenario() -> None:
        for item in events:
            await run.ledger.handle(item, run._ack)
        await run.ledger.flush(PARTITION, run._ack)

    asyncio.run(scenario())
    assert source.reads == []
    assert run.ledger.known_gaps == 2
    assert recount(run.table.data) == {"c1": (3, 0, 0)}
