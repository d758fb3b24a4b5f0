"""The small port between the verification ledger and the rest: the fan-state table as it
writes it (``StateStore``), the score-record topic as it reads skipped ranges
(``PartitionSource``), and when it flushes (``FlushPolicy``). The book the ledger keeps of a
partition between flushes is its own (``verification.PartitionBook``, with the counting
half's ``counting.PartitionCounter``). Tests drive the ledger through these with fakes and
no Faust."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class FlushPolicy:
    """When a partition's book is flushed, and how long the ledger waits on quiet and
    revoked partitions (settings ``flush_every_records`` and the others)."""

    every_records: int = 2_000
    every_seconds: float = 0.05
    # A partition with no event for this long is checked against its consumer's position.
    tail_idle_seconds: float = 5.0
    # A revoke waits this long for a flush in progress before forgetting its books.
    release_wait_seconds: float = 20.0
    # Partials and run tallies a book keeps between flushes (the rest are read again).
    cached_tallies: int = 4_096


class StateStore(Protocol):
    """The fan-state table as the ledger uses it (``vfstream.stream.tables.FanStateStore``)."""

    def get(self, partition: int, key: bytes) -> bytes | None: ...

    def get_many(self, partition: int, keys: list[bytes]) -> list[bytes | None]: ...

    def scan(self, partition: int, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every stored key starting with ``prefix``, in key order, with its value."""
        ...

    async def write(self, partition: int, items: list[tuple[bytes, bytes]]) -> None:
        """Write to the local store and the changelog, in order; return once the broker
        holds every changelog write."""


class SourceRecord(Protocol):
    offset: int
    key: bytes | None
    value: bytes | None


class PartitionSource(Protocol):
    """The score-record topic read directly (``vfstream.stream.partition_reader``)."""

    async def read(self, partition: int, start: int, end: int) -> list[SourceRecord]: ...


Snapshot = tuple[str, bytes]  # (campaignId, JSON)
