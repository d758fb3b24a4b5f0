"""The ledger's two halves alone (issue #22): the counting half is plain synchronous code over
a store (no event loop, no Faust), and the delivery half drives any counting half in offset
order, without holes, against a fake stream."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson

from tests.support.ledger import PARTITION, FakeSource, FakeTable, event, fan_record, recount
from vfstream.domain.batches import encode_batch
from vfstream.domain.fans import WriteStatus
from vfstream.domain.keys import fan_key, index_key, partial_key, position_key, run_key
from vfstream.domain.limits import DEFAULT_LIMITS
from vfstream.domain.records import RecordSource
from vfstream.stream.counting import FlushPlan, Letter, PartitionCounter, every_snapshot
from vfstream.stream.verification import VerificationLedger


def counter(table: FakeTable, partitions: int | None = None) -> PartitionCounter:
    return PartitionCounter(table, PARTITION, DEFAULT_LIMITS, partitions)


def write(table: FakeTable, plan: FlushPlan) -> None:
    """What the delivery half does with a plan, without an event loop."""
    for key, value in plan.items:
        table.data[key] = value
        table.changelog.append((key, value))


def test_a_counter_stages_fans_and_plans_states_then_partials_then_runs_then_the_index() -> None:
    table = FakeTable()
    count = counter(table)
    source = RecordSource(bucket="b", key="k", etag="e", line=2, run="r1")
    records = [fan_record("u1").model_copy(update={"source": source}), fan_record("u2")]
    letters: list[Letter] = []

    statuses, size = count.apply(0, None, event(0, *records).value, letters)

    assert (sum(statuses.values()), size, letters) == (2, 2, [])
    assert table.data == {}, "a counter reads the table and never writes it"
    plan = count.plan()
    keys = [key for key, _ in plan.items]
    fans = [fan_key("c1", fan).encode() for fan in ("u1", "u2")]
    assert keys == [*fans, partial_key(PARTITION, "c1"), run_key(PARTITION, "r1"), index_key(0)]
    assert plan.names == ["partial:c1", "run:r1"]
    assert count.staged, "planning changes nothing: a failed write leaves it staged"

    write(table, plan)
    count.commit(plan, cached_tallies=4_096)
    assert (count.staged, count.dirty_partials, count.dirty_runs) == ({}, set(), set())
    assert recount(table.data) == {"c1": (2, 0, 0)}
    assert [campaign for campaign, _ in every_snapshot(table, PARTITION, None)] == ["c1", "c1"]

    again = PartitionCounter(table, PARTITION, DEFAULT_LIMITS, None)  # after a restart
    statuses, _ = again.apply(0, None, event(0, *records).value, letters)
    assert statuses == Counter({WriteStatus.UNCHANGED: 2})
    before = dict(table.data)
    rewritten = again.plan().items  # a redelivery rewrites what it vouches for (kill -9)
    assert rewritten and all(before[key] == value for key, value in rewritten)


def test_a_counter_returns_its_refusals_as_letters_in_record_order() -> None:
    count = counter(FakeTable(), partitions=64)
    records = [fan_record(f"u{n}") for n in range(40)]
    value = encode_batch([record.to_json() for record in records])
    letters: list[Letter] = []

    statuses, size = count.apply(7, b"k", value, letters)

    refused = [orjson.loads(letter) for _, letter in letters]
    assert size == 40
    assert statuses[WriteStatus.INVALID] == len(letters) > 0
    assert [letter["index"] for letter in refused] == sorted(letter["index"] for letter in refused)
    assert {(letter["offset"], letter["campaignId"]) for letter in refused} == {(7, "c1")}
    assert all("arrived on partition 0" in letter["reasons"][0] for letter in refused)

    malformed: list[Letter] = []
    assert count.apply(8, None, b"{not json", malformed) == (Counter({WriteStatus.INVALID: 1}), 0)
    assert [orjson.loads(letter)["offset"] for _, letter in malformed] == [8]


class Tape(PartitionCounter):
    """A counting half that only notes what the delivery half hands it."""

    def __init__(self, store: Any, partition: int) -> None:
        super().__init__(store, partition, DEFAULT_LIMITS, None)
        self.offsets: list[int] = []
        self.pending: list[int] = []

    def apply(
        self, offset: int, key: bytes | None, value: bytes | None, letters: list[Letter]
    ) -> tuple[Counter[str], int]:
        self.offsets.append(offset)
        self.pending.append(offset)
        return Counter({WriteStatus.CREATED: 1}), 1

    def plan(self) -> FlushPlan:
        return FlushPlan([(f"applied:{offset}".encode(), b"1") for offset in self.pending])

    def commit(self, plan: FlushPlan, cached_tallies: int) -> None:
        self.pending.clear()


def test_the_delivery_half_hands_a_counter_every_message_in_order_and_records_after_it() -> None:
    events = [event(offset, fan_record(f"u{offset}")) for offset in range(5)]
    source = FakeSource(events)
    table = FakeTable()
    tapes: list[Tape] = []

    def tape(partition: int) -> Tape:
        tapes.append(Tape(table, partition))
        return tapes[-1]

    async def no_emit(snapshots: list[tuple[str, bytes]]) -> None:
        return None

    async def no_letter(key: bytes, value: bytes) -> None:
        raise AssertionError("no letters")

    ledger = VerificationLedger(table, no_emit, no_letter, source=source, counters=tape)
    acked: list[int] = []

    async def ack(item: Any) -> None:
        assert table.changelog[-1] == (position_key(PARTITION), b"5"), "acked after the write"
        acked.append(item.message.offset)

    async def scenario() -> None:
        for item in (events[0], events[3], events[4]):  # the stream dropped 1 and 2
            await ledger.handle(item, ack)
        await ledger.flush(PARTITION, ack)

    asyncio.run(scenario())
    assert [tape.offsets for tape in tapes] == [[0, 1, 2, 3, 4]]
    assert source.reads == [(1, 3)]
    assert acked == [0, 3, 4]
    assert [key for key, _ in table.changelog] == [
        *(f"applied:{offset}".encode() for offset in range(5)),
        position_key(PARTITION),
    ]
