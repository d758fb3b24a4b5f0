"""Fakes and helpers for the verification ledger's unit tests: a table that records its
changelog, a source of score batches, a run that can crash anywhere, and recounts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from hypothesis import strategies as st

from vfstream.domain.batches import encode_batch
from vfstream.domain.fans import decode_envelope
from vfstream.domain.keys import partial_key
from vfstream.domain.ledger import PartialCounts
from vfstream.domain.records import ScoreRecord
from vfstream.stream.ports import FlushPolicy
from vfstream.stream.verification import VerificationLedger

T0 = datetime(2026, 10, 20, 12, tzinfo=UTC)
PARTITION = 0


class FakeTable:
    """A local store plus an ordered changelog, like one partition of the fan-state table
    (``verification.StateStore``)."""

    def __init__(self, data: dict[bytes, bytes] | None = None) -> None:
        self.data: dict[bytes, bytes] = dict(data or {})
        self.changelog: list[tuple[bytes, bytes]] = []

    def get(self, partition: int, key: bytes) -> bytes | None:
        assert partition == PARTITION
        return self.data.get(key)

    def get_many(self, partition: int, keys: list[bytes]) -> list[bytes | None]:
        return [self.get(partition, key) for key in keys]

    def scan(self, partition: int, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        assert partition == PARTITION
        for key in sorted(self.data):
            if key.startswith(prefix):
                yield key, self.data[key]

    async def write(self, partition: int, items: list[tuple[bytes, bytes]]) -> None:
        assert partition == PARTITION
        for key, value in items:
            self.data[key] = value
            self.changelog.append((key, value))


class FakeSource:
    """The score-record partition read directly: every event, holes where markers are."""

    def __init__(self, events: list[Any]) -> None:
        self.by_offset = {item.message.offset: item for item in events}
        self.reads: list[tuple[int, int]] = []

    async def read(self, partition: int, start: int, end: int) -> list[Any]:
        assert partition == PARTITION
        self.reads.append((start, end))
        return [
            SimpleNamespace(offset=offset, key=item.key, value=item.value)
            for offset, item in sorted(self.by_offset.items())
            if start <= offset < end
        ]


def event(offset: int, *batch: ScoreRecord) -> Any:
    """A message of the score-record topic: a score batch of the given records."""
    return SimpleNamespace(
        key=None,
        value=encode_batch([record.to_json() for record in batch]),
        message=SimpleNamespace(partition=PARTITION, offset=offset),
    )


records = st.builds(
    lambda campaign, fan, rank, hours, verified, verdict: ScoreRecord(
        campaignId=campaign,
        globalUserId=fan,
        id=f"{fan}{rank:03d}",
        rank=rank,
        eventId=f"ev{rank}",
        score=0.5,
        isVerified=verified,
        verdict=verdict,
        scoredAt=T0 + timedelta(hours=hours),
    ),
    st.sampled_from(["c1", "c2"]),
    st.sampled_from(["u1", "u2", "u3", "u4"]),
    st.integers(0, 2),
    st.integers(0, 2),
    st.booleans(),
    st.sampled_from([True, False, None]),
)


class Run:
    """One worker incarnation: processes events, acks after flushes, may crash."""

    def __init__(
        self,
        table: FakeTable,
        flush_every: int,
        source: FakeSource | None = None,
        *,
        flush_seconds: float = 0.05,
        tail_idle_seconds: float = 5.0,
    ) -> None:
        self.table = table
        self.acked: list[int] = []
        self.durable_len = len(table.changelog)  # writes a completed flush vouched for
        policy = FlushPolicy(
            every_records=flush_every,
            every_seconds=flush_seconds,
            tail_idle_seconds=tail_idle_seconds,
        )
        self.ledger = VerificationLedger(
            table, self._emit, self._dead_letter, source=source, policy=policy
        )

    async def _emit(self, snapshots: list[tuple[str, bytes]]) -> None:
        return None

    async def _dead_letter(self, key: bytes, value: bytes) -> None:
        raise AssertionError("no invalid records here")

    async def _ack(self, event: Any) -> None:
        self.acked.append(event.message.offset)
        self.durable_len = len(self.table.changelog)

    async def process(
        self, events: list[Any], stop_after: int | None, mid_flush: bool = False
    ) -> None:
        for index, item in enumerate(events):
            if stop_after is not None and index >= stop_after:
                if mid_flush:
                    # Killed inside a flush: sent, never acknowledged. The store writes the
                    # local copy only once the broker holds the changelog writes
                    # (``FanStateStore.write``), so the local store does not have them.
                    local = dict(self.table.data)
                    await self.ledger.flush(PARTITION, _never_acked)
                    self.table.data = local
                return
            await self.ledger.handle(item, self._ack)
        if stop_after is None and events:
            await self.ledger.flush(PARTITION, self._ack)


async def _never_acked(event: Any) -> None:
    return None


def recount(store: dict[bytes, bytes]) -> dict[str, tuple[int, int, int]]:
    out: dict[str, list[int]] = {}
    for key, value in store.items():
        if key.startswith(b"#"):
            continue
        state = decode_envelope(value).state
        counts = out.setdefault(state.campaignId, [0, 0, 0])
        counts[0 if state.isVerified else 1] += 1
        counts[2] += state.verdict is True
    return {campaign: tuple(c) for campaign, c in out.items()}  # type: ignore[misc]


def partials(store: dict[bytes, bytes]) -> dict[str, tuple[int, int, int]]:
    out = {}
    for campaign in ("c1", "c2"):
        raw = store.get(partial_key(PARTITION, campaign))
        if raw:
            p = PartialCounts.model_validate_json(raw)
            if (p.verified, p.rejected, p.selected) != (0, 0, 0):
                out[campaign] = (p.verified, p.rejected, p.selected)
    return out


def replay_changelog(changelog: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    store: dict[bytes, bytes] = {}
    for key, value in changelog:
        store[key] = value
    return store


def with_markers(
    items: list[ScoreRecord], markers: set[int], sizes: list[int] | None = None
) -> list[Any]:
    """Batches at increasing offsets, of ``sizes`` records each (cycled; one by default); an
    offset in ``markers`` holds a transaction marker."""
    events, offset, start, turn = [], 0, 0, 0
    sizes = sizes or [1]
    while start < len(items):
        while offset in markers:
            offset += 1
        size = sizes[turn % len(sizes)]
        events.append(event(offset, *items[start : start + size]))
        start, offset, turn = start + size, offset + 1, turn + 1
    return events


def fan_record(fan: str) -> ScoreRecord:
    return ScoreRecord(
        campaignId="c1",
        globalUserId=fan,
        id=f"{fan}000",
        rank=0,
        eventId="ev0",
        score=0.5,
        isVerified=True,
        scoredAt=T0,
    )


def fetched_in(generation: int, offset: int, record: ScoreRecord) -> Any:
    item = event(offset, record)
    item.message.generation_id = generation
    return item
