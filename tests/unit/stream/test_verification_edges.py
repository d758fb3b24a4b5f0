"""The ledger's edges (issue #21, item 7): a changelog write that fails, and a partition
revoked while a direct read of it still runs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.ledger import PARTITION, FakeSource, FakeTable, event, fan_record, recount
from vfstream.stream.ports import FlushPolicy
from vfstream.stream.verification import VerificationLedger


class FailingOnce(FakeTable):
    """A changelog whose first write fails, as when the broker is away."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    async def write(self, partition: int, items: list[tuple[bytes, bytes]]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the broker is away")
        await super().write(partition, items)


async def no_emit(snapshots: list[tuple[str, bytes]]) -> None:
    return None


async def no_letter(key: bytes, value: bytes) -> None:
    raise AssertionError("no invalid record here")


def test_a_failed_write_leaves_everything_for_the_next_flush_and_acks_nothing_before() -> None:
    table = FailingOnce()
    ledger = VerificationLedger(table, no_emit, no_letter, policy=FlushPolicy(every_records=100))
    acked: list[int] = []
    written_when_acked: list[bool] = []

    async def ack(item: Any) -> None:
        acked.append(item.message.offset)
        written_when_acked.append(b"c1:u1" in table.data)

    async def scenario() -> None:
        await ledger.handle(event(0, fan_record("u1")), ack)
        with pytest.raises(ConnectionError):
            await ledger.flush(PARTITION, ack)
        assert acked == [] and table.changelog == []
        await ledger.flush(PARTITION, ack)

    asyncio.run(scenario())

    assert acked == [0] and written_when_acked == [True]
    assert recount(table.data) == {"c1": (1, 0, 0)}
    assert table.data[b"#position:%d" % PARTITION] == b"1"


class BlockingSource(FakeSource):
    """A direct read that waits until the test lets it go."""

    def __init__(self, events: list[Any]) -> None:
        super().__init__(events)
        self.started = asyncio.Event()
        self.go_on = asyncio.Event()

    async def read(self, partition: int, start: int, end: int) -> list[Any]:
        self.started.set()
        await self.go_on.wait()
        return await super().read(partition, start, end)


def test_a_partition_revoked_during_a_direct_read_is_not_written_by_that_read() -> None:
    events = [event(offset, fan_record(f"u{offset}")) for offset in range(6)]

    async def scenario() -> tuple[FakeTable, list[int]]:
        table = FakeTable()
        source = BlockingSource(events)
        ledger = VerificationLedger(
            table,
            no_emit,
            no_letter,
            source=source,
            policy=FlushPolicy(every_records=1, release_wait_seconds=0.05),
        )
        acked: list[int] = []

        async def ack(item: Any) -> None:
            acked.append(item.message.offset)

        # Offsets 0-4 were skipped by the stream: the ledger reads them directly first.
        handling = asyncio.create_task(ledger.handle(events[5], ack))
        await source.started.wait()
        await ledger.release({PARTITION})  # times out waiting, forgets the partition
        source.go_on.set()
        await handling
        return table, acked

    table, acked = asyncio.run(scenario())

    assert table.changelog == [], "the partition moved: its next owner writes it"
    assert acked == []


def test_an_idle_ledger_announces_nothing_again_and_everything_once_after_a_rebalance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue #21 item 5: every partial and run was announced again every 5 s, so idle work
    grew with every campaign ever seen."""
    import vfstream.stream.verification as verification

    generation = [1]
    table = FakeTable()
    ledger = VerificationLedger(table, no_emit, no_letter, current_generation=lambda: generation[0])

    async def ack(item: Any) -> None:
        return None

    async def scenario() -> None:
        for n in range(300):
            record = fan_record("u1").model_copy(update={"campaignId": f"camp{n:03d}"})
            await ledger.handle(event(n, record), ack)
        await ledger.flush(PARTITION, ack)

    asyncio.run(scenario())
    first = ledger.snapshots_for({PARTITION})
    assert len(first) == 300, "every partial once after the (first) assignment"
    assert len(ledger.snapshots_for({PARTITION})) == 300, "flushed lately: announced again"

    monkeypatch.setattr(verification, "REANNOUNCE_WINDOW_SECONDS", 0.0)
    assert ledger.snapshots_for({PARTITION}) == [], "idle: nothing"
    generation[0] = 2  # a rebalance
    assert len(ledger.snapshots_for({PARTITION})) == 300
    assert ledger.snapshots_for({PARTITION}) == []
