"""The small port between the verification ledger and the rest: the fan-state table as it
writes it (``StateStore``), the score-record topic as it reads skipped ranges
(``PartitionSource``), when it flushes (``FlushPolicy``), and the per-partition book it keeps
between flushes. Tests drive the ledger through these with fakes and no Faust."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from vfstream.domain.fans import Envelope
from vfstream.domain.ledger import PartialTally, RunTally


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


@dataclass
class PartitionBook:
    """What the ledger holds of one partition between flushes."""

    generation: int | None = None  # the consumer generation its events were fetched in
    next_offset: int | None = None  # after the last event handled
    recorded: int | None = None  # the position the last flush wrote
    # Tallies read or changed since the partition was assigned, oldest first; bounded by
    # ``FlushPolicy.cached_tallies`` after each flush (``VerificationLedger._trim``).
    partials: dict[str, PartialTally] = field(default_factory=dict)
    flushed: dict[str, int] = field(default_factory=dict)  # each partial's flushed watermark
    runs: dict[str, RunTally] = field(default_factory=dict)
    # Envelopes to write at the next flush, with their stored form.
    staged: dict[bytes, tuple[Envelope, bytes]] = field(default_factory=dict)
    dirty_partials: set[str] = field(default_factory=set)
    dirty_runs: set[str] = field(default_factory=set)
    index: dict[str, list[str]] | None = None
    unacked: list[Any] = field(default_factory=list)
    unflushed_records: int = 0
    last_flush: float = field(default_factory=time.monotonic)
    last_event: float = field(default_factory=time.monotonic)
