"""The delivery half of the verification ledger: per-partition bookkeeping around the
fan-state table: no holes, consumer generations, gap and tail fills, held acks, recorded
positions, flushes and re-announcements. What a batch counts is the counting half's
(``vfstream.stream.counting.PartitionCounter``, plain and synchronous).

The verify agent hands every event here; an event is one score batch (``domain.batches``).
Partials are flushed into the same table as the fan states (one changelog partition, written
in order), and the events of a partition are acked only after the flush that covers them, so
an offset is never committed ahead of the counts it changed. See ``vfstream.domain.ledger``
for why this is exact.

Each flush also records the partition's position (the offset after the last event it
covers), and the worker resumes a partition at the earlier of that and Kafka's committed
offset (``vfstream.stream.transport``): Faust's own offset bookkeeping can commit past records it
fetched and dropped at a rebalance.

Delivery is not trusted beyond that: messages are applied in offset order with no holes.
When the stream skips ahead of the offset the ledger expects next (its last event's, or the
recorded position at a generation's start), the skipped range is read directly
(``PartitionSource``) and applied first; a partition whose stream went quiet short of the
position its consumer reached has that tail read the same way. A hole that holds only
transaction markers or aborted records reads as empty.

The ledger is driven through its public methods (``handle``, ``flush``, ``flush_idle``,
``fill_tails``, ``release``, ``snapshots_for``, ``recorded_position``) against any
``StateStore`` and ``PartitionSource``: the unit tests use fakes of both and no Faust
(``tests/support/ledger.py``), and ``counters`` builds each partition's counting half.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vfstream.domain.fans import WriteStatus
from vfstream.domain.keys import position_key
from vfstream.domain.ledger import PartialTally, RunTally
from vfstream.domain.limits import DEFAULT_LIMITS, Limits
from vfstream.metrics import (
    DEAD_LETTERS,
    FILLED_RECORDS,
    FLUSHES,
    RECORDS_IN,
    RECORDS_OUT,
    SNAPSHOTS,
    STALE_EVENTS,
    WRITE_STATUSES,
)
from vfstream.stream.counting import Letter, PartitionCounter, every_snapshot
from vfstream.stream.ports import FlushPolicy, PartitionSource, Snapshot, StateStore

log = logging.getLogger(__name__)

# What a flush announced is announced again for this long (``snapshots_for``).
REANNOUNCE_WINDOW_SECONDS = 120.0


# Labelled children made once: ``labels()`` per call took about 4% of the agent's time.
VERIFY_RECORDS_IN = RECORDS_IN.labels("verify")
VERIFY_RECORDS_OUT = RECORDS_OUT.labels("verify")
STATUS_COUNTERS = {status: WRITE_STATUSES.labels(status.value) for status in WriteStatus}
SCORE_DEAD_LETTERS = DEAD_LETTERS.labels("score-record")

Ack = Callable[[Any], Awaitable[Any]]


@dataclass
class PartitionBook:
    """What the ledger holds of one partition between flushes: its delivery bookkeeping,
    and what it counted (``counter``)."""

    counter: PartitionCounter
    generation: int | None = None  # the consumer generation its events were fetched in
    next_offset: int | None = None  # after the last event handled
    recorded: int | None = None  # the position the last flush wrote
    unacked: list[Any] = field(default_factory=list)
    unflushed_records: int = 0
    last_flush: float = field(default_factory=time.monotonic)
    last_event: float = field(default_factory=time.monotonic)

    # The counter's tallies, oldest first, bounded by ``FlushPolicy.cached_tallies``.
    @property
    def partials(self) -> dict[str, PartialTally]:
        return self.counter.partials

    @property
    def flushed(self) -> dict[str, int]:
        return self.counter.flushed

    @property
    def runs(self) -> dict[str, RunTally]:
        return self.counter.runs

    def expected_offset(self, store: StateStore, partition: int) -> int:
        """The offset the partition's next message must have: after the book's last event,
        or the position the last flush recorded when the book has none yet (the start of
        the partition when nothing was ever recorded)."""
        if self.next_offset is not None:
            return self.next_offset
        return stored_position(store, partition) or 0

    def older_than(self, current: int | None) -> bool:
        """Fetched before the current generation: its events come again (``Books.for_event``)."""
        return self.generation is not None and current is not None and self.generation < current

    def flush_due(self, policy: FlushPolicy, now: float) -> bool:
        return (
            self.unflushed_records >= policy.every_records
            or now - self.last_flush >= policy.every_seconds
        )

    def acked(self) -> None:
        """Its events are acked: nothing waits for a flush."""
        self.unacked.clear()
        self.unflushed_records = 0
        self.last_flush = time.monotonic()


def stored_position(store: StateStore, partition: int) -> int | None:
    """The offset after the last event a flush of ``partition`` covered, if any."""
    raw = store.get(partition, position_key(partition))
    return int(raw) if raw else None


class Reannouncements:
    """What to announce again of each partition (``VerificationLedger.snapshots_for``).

    Snapshots are absolute, so announcing one again is harmless, and it heals one lost
    between a flush and its send, or a tally update lost in a crash (README "Exact
    counts"). Both happen around a flush or a rebalance, so: once after each rebalance,
    every partial and run of the partition (in-memory books first, the table otherwise);
    then only what a flush announced in the last ``REANNOUNCE_WINDOW_SECONDS``. An idle
    worker announces nothing, however many campaigns it holds.
    """

    def __init__(self) -> None:
        # The generation each partition was last fully re-announced in, and per partition
        # what its flushes announced lately.
        self._swept: dict[int, int | None] = {}
        self._recent: dict[int, dict[str, tuple[float, Snapshot]]] = {}

    def forget(self, partition: int) -> None:
        self._recent.pop(partition, None)
        self._swept.pop(partition, None)

    def announced(self, partition: int, names: list[str], snapshots: list[Snapshot]) -> None:
        recent = self._recent.setdefault(partition, {})
        at = time.monotonic()
        for name, snapshot in zip(names, snapshots, strict=True):
            recent[name] = (at, snapshot)

    def due(
        self,
        partitions: set[int],
        generation: int | None,
        everything: Callable[[int], list[Snapshot]],
    ) -> list[Snapshot]:
        out: list[Snapshot] = []
        now = time.monotonic()
        for partition in sorted(partitions):
            recent = self._recent.setdefault(partition, {})
            for name, (when, _) in list(recent.items()):
                if now - when > REANNOUNCE_WINDOW_SECONDS:
                    del recent[name]
            if partition in self._swept and self._swept[partition] == generation:
                out.extend(snapshot for _, snapshot in recent.values())
                continue
            self._swept[partition] = generation
            out.extend(everything(partition))
        return out


class Books:
    """Each owned partition's book, by the consumer generation its events were fetched in."""

    def __init__(self, counters: Callable[[int], PartitionCounter]) -> None:
        self.by_partition: dict[int, PartitionBook] = {}
        self.generation: int | None = None  # the newest an event was fetched in
        # Each partition's counting half, made new with each book.
        self._counters = counters

    def new(self, partition: int, generation: int | None) -> PartitionBook:
        book = self.by_partition[partition] = PartitionBook(
            self._counters(partition), generation=generation
        )
        return book

    def for_event(self, partition: int, generation: int | None) -> PartitionBook | None:
        """The partition's book for an event fetched in ``generation``; None when stale.

        A rebalance restarts every assigned partition at its resume offset, which is at or
        before the first event a book has not flushed; so a book of an older generation is
        dropped unflushed and unacked, as its events come again. An event fetched before the
        rebalance that reaches the agent after it is stale: it belongs to no book.
        """
        if generation is not None:
            if self.generation is not None and generation < self.generation:
                return None
            self.generation = generation
        book = self.by_partition.get(partition)
        if book is None or book.generation != generation:
            book = self.new(partition, generation)
        return book

    def current(self, partition: int, generation: int | None, now: float) -> PartitionBook:
        """The partition's book of ``generation`` (the current one), for a tail fill."""
        book = self.by_partition.get(partition)
        if book is None or (generation is not None and book.generation != generation):
            # No event of this generation yet: the recorded position is expected.
            book = self.new(partition, generation)
            book.last_event = now
        return book


class VerificationLedger:
    def __init__(
        self,
        store: StateStore,
        emit: Callable[[list[Snapshot]], Awaitable[None]],
        dead_letter: Callable[[bytes, bytes], Awaitable[None]],
        current_generation: Callable[[], int | None] = lambda: None,
        source: PartitionSource | None = None,
        limits: Limits = DEFAULT_LIMITS,
        partitions: int | None = None,
        known_gap: Callable[[int, int, int], bool] | None = None,
        policy: FlushPolicy | None = None,
        counters: Callable[[int], PartitionCounter] | None = None,
    ) -> None:
        self.store = store
        self.policy = policy or FlushPolicy()
        self.limits = limits
        self.partitions = partitions
        self._generations = Books(
            counters or (lambda partition: PartitionCounter(store, partition, limits, partitions))
        )
        self._books = self._generations.by_partition
        self._emit = emit
        self._dead_letter = dead_letter
        self._current_generation = current_generation
        self._source = source
        # (partition, start, end) -> whether the stream's fetcher proved the range holds no
        # record (transaction markers only): then no direct read is needed.
        self._known_gap = known_gap
        self.known_gaps = 0
        self.filled_records = 0
        self.stale_events = 0
        self.statuses: Counter[str] = Counter()
        self.records_in = 0
        self.batches_in = 0
        self._lock = asyncio.Lock()
        self._ack: Ack | None = None
        self._reannouncements = Reannouncements()

    # --- lifecycle -----------------------------------------------------------------------
    def forget(self, partitions: set[int]) -> None:
        """Drop the in-memory books of partitions this worker no longer owns."""
        for partition in partitions:
            self._books.pop(partition, None)
            self._reannouncements.forget(partition)

    async def release(self, partitions: set[int]) -> None:
        """Forget the books of revoked partitions once a flush in progress has finished.

        Faust does not wait for it (``stream_wait_empty`` is off); without the lock a flush
        could write a partition's changelog after the partition moved, between the new
        owner's writes, and leave an older partial as the latest value.
        """
        try:
            await asyncio.wait_for(self._lock.acquire(), timeout=self.policy.release_wait_seconds)
        except TimeoutError:
            log.warning(
                "a flush still running after %ss; forgetting anyway",
                self.policy.release_wait_seconds,
            )
            self.forget(partitions)
            return
        try:
            self.forget(partitions)
        finally:
            self._lock.release()

    def recorded_position(self, partition: int) -> int | None:
        """The offset after the last event a flush of ``partition`` covered, if any."""
        return stored_position(self.store, partition)

    # --- the work ------------------------------------------------------------------------
    async def handle(self, event: Any, ack: Ack) -> Counter[str] | None:
        """Apply one event (a score batch); its records' write statuses, or None when the
        event is stale (fetched before the latest rebalance)."""
        self._ack = ack
        async with self._lock:
            return await self._handle(event, ack)

    async def flush_idle(self) -> int:
        """Flush partitions whose last events wait for a flush that no new event will bring."""
        flushed = 0
        if self._ack is None:
            return 0
        async with self._lock:
            now = time.monotonic()
            current = self._current_generation()
            for partition, book in list(self._books.items()):
                if book.older_than(current):
                    del self._books[partition]
                    continue
                if not book.unacked or now - book.last_flush < self.policy.every_seconds:
                    continue
                await self._flush_book(partition, book, self._ack)
                flushed += 1
        return flushed

    async def _handle(self, event: Any, ack: Ack) -> Counter[str] | None:
        message = event.message
        partition, offset = message.partition, message.offset
        book = self._generations.for_event(partition, getattr(message, "generation_id", None))
        if book is None:
            self.stale_events += 1
            STALE_EVENTS.inc()
            return None
        if book.next_offset is None:
            log.info("partition %s: generation %s starts at %s", partition, book.generation, offset)
        await self._fill_up_to(partition, book, offset)
        statuses = await self._apply_message(partition, offset, book, event.key, event.value)
        delivered = sum(statuses.values())
        self.records_in += delivered
        VERIFY_RECORDS_IN.inc(delivered)
        book.unacked.append(event)
        book.next_offset = max(book.next_offset or 0, offset + 1)
        book.last_event = time.monotonic()
        if book.flush_due(self.policy, book.last_event):
            await self._flush_book(partition, book, ack)
        return statuses

    async def _fill_up_to(self, partition: int, book: PartitionBook, end: int) -> None:
        """Apply, in order, the messages before ``end`` the stream skipped."""
        expected = book.expected_offset(self.store, partition)
        if self._source is None or end <= expected:
            return
        if self._known_gap is not None and self._known_gap(partition, expected, end):
            self.known_gaps += 1
            book.next_offset = max(book.next_offset or 0, end)
            return
        found = await self._source.read(partition, expected, end)
        records = 0
        for item in found:
            applied = await self._apply_message(partition, item.offset, book, item.key, item.value)
            records += sum(applied.values())
            book.next_offset = max(book.next_offset or 0, item.offset + 1)
        if found:
            self.filled_records += records
            FILLED_RECORDS.inc(records)
            log.warning(
                "partition %s: the stream skipped %s message(s) (%s records) between offsets "
                "%s and %s; applied them from a direct read",
                partition,
                len(found),
                records,
                expected,
                end - 1,
            )
        else:
            # Transaction markers or aborted records: nothing to apply.
            book.next_offset = max(book.next_offset or 0, end)

    async def _apply_message(
        self,
        partition: int,
        offset: int,
        book: PartitionBook,
        key: bytes | None,
        value: bytes | None,
    ) -> Counter[str]:
        """Apply every record of one message, in order (``PartitionCounter.apply``), and
        send the dead letters of the records it refused."""
        self.batches_in += 1
        letters: list[Letter] = []
        statuses, records = book.counter.apply(offset, key, value, letters)
        for letter_key, letter in letters:
            await self._dead_letter(letter_key, letter)
            SCORE_DEAD_LETTERS.inc()
        # Metrics once a batch, not once a record.
        for status, count in statuses.items():
            self.statuses[str(status)] += count
            STATUS_COUNTERS[WriteStatus(status)].inc(count)
        book.unflushed_records += records
        return statuses

    async def fill_tails(self, consumed: Mapping[int, int | None]) -> int:
        """Apply what the stream consumed but never handed over, for quiet partitions.

        ``consumed`` maps each owned partition to its consumer's position (the offset after
        the last message the stream took from the broker). A message dropped by the stream
        is otherwise noticed when a later one arrives; a partition's last ones have none.
        Returns how many records were applied.
        """
        if self._source is None:
            return 0
        applied = 0
        async with self._lock:
            now = time.monotonic()
            current = self._current_generation()
            for partition, position in sorted(consumed.items()):
                book = self._generations.current(partition, current, now)
                quiet = now - book.last_event >= self.policy.tail_idle_seconds
                if position is None or book.unacked or not quiet:
                    continue
                expected = book.expected_offset(self.store, partition)
                if position <= expected:
                    continue
                before = self.filled_records
                await self._fill_up_to(partition, book, position)
                applied += self.filled_records - before
                await self._flush_book(partition, book, _no_ack)
        return applied

    async def flush(self, partition: int, ack: Ack) -> None:
        book = self._books.get(partition)
        if book is not None:
            await self._flush_book(partition, book, ack)

    async def _flush_book(self, partition: int, book: PartitionBook, ack: Ack) -> None:
        """Write what the book staged, then ack its events. The book is changed only once the
        broker holds the write: a write that fails leaves everything staged for the next
        flush, and no later flush can ack events whose states never reached the changelog.
        A book no longer current (its partition revoked while a range read ran) writes and
        acks nothing: its events come again to the partition's next owner."""
        if self._books.get(partition) is not book:
            return
        plan = book.counter.plan()
        items = plan.items
        recorded = book.recorded
        if book.next_offset is not None and book.next_offset != book.recorded:
            # Last: the changelog holds everything before it once it holds this.
            items.append((position_key(partition), str(book.next_offset).encode()))
            recorded = book.next_offset
        if items:
            # Faust commits the offsets of acked events without waiting for changelog
            # writes; so ack only once the broker holds every write this flush made.
            await self.store.write(partition, items)
        book.counter.commit(plan, self.policy.cached_tallies)
        book.recorded = recorded
        if plan.snapshots:
            await self._emit(plan.snapshots)
            SNAPSHOTS.inc(len(plan.snapshots))
            self._reannouncements.announced(partition, plan.names, plan.snapshots)
        FLUSHES.inc()
        VERIFY_RECORDS_OUT.inc(book.unflushed_records)
        for pending in book.unacked:
            await ack(pending)
        book.acked()

    def snapshots_for(self, partitions: set[int]) -> list[Snapshot]:
        """What to announce again of the given partitions (the re-announcement timer; see
        ``Reannouncements``)."""
        return self._reannouncements.due(partitions, self._current_generation(), self._every)

    def _every(self, partition: int) -> list[Snapshot]:
        book = self._books.get(partition)
        return every_snapshot(self.store, partition, book.counter if book else None)


async def _no_ack(event: Any) -> None:
    """A flush of records read directly: there are no stream events to acknowledge."""
    return None
