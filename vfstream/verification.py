"""Per-partition bookkeeping around the fan-state table: partial counts, run progress, acks.

The agent hands every event here. Partials are flushed into the same table as the fan
states (one changelog partition, written in order), and the events of a partition are
acked only after the flush that covers them, so an offset is never committed ahead of the
counts it changed. See ``vfstream.domain.ledger`` for why this is exact.

Each flush also records the partition's position (the offset after the last event it
covers), and the worker resumes a partition at the earlier of that and Kafka's committed
offset (``vfstream.transport``): Faust's own offset bookkeeping can commit past records it
fetched and dropped at a rebalance.

Delivery is not trusted beyond that: records are applied in offset order with no holes.
When the stream skips ahead of the offset the ledger expects next (its last event's, or the
recorded position at a generation's start), the skipped range is read directly
(``PartitionSource``) and applied first; a partition whose stream went quiet short of the
position its consumer reached has that tail read the same way. A hole that holds only
transaction markers or aborted records reads as empty.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from faust.streams import _current_event
from pydantic import ValidationError

from vfstream.domain.ledger import (
    FanEnvelope,
    Outcome,
    PartialCounts,
    RunProgress,
    process_record,
)
from vfstream.domain.limits import DEFAULT_LIMITS, Limits
from vfstream.domain.records import MAX_ROW_BYTES, ScoreRecord
from vfstream.domain.state import WriteStatus
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
from vfstream.tables import durable_set

log = logging.getLogger(__name__)

FLUSH_EVERY_EVENTS = 1_000
FLUSH_EVERY_SECONDS = 0.25
RELEASE_WAIT_SECONDS = 20.0
# A partition with no event for this long is checked against its consumer's position.
TAIL_CHECK_IDLE_SECONDS = 5.0


def partial_key(partition: int, campaign_id: str) -> bytes:
    return f"#counts:{partition}:{campaign_id}".encode()


def run_key(partition: int, run_id: str) -> bytes:
    return f"#run:{partition}:{run_id}".encode()


def index_key(partition: int) -> bytes:
    return f"#index:{partition}".encode()


def position_key(partition: int) -> bytes:
    return f"#position:{partition}".encode()


def run_id_of(record: ScoreRecord) -> str | None:
    source = record.source
    if source is None:
        return None
    return source.run or f"s3://{source.bucket}/{source.key}@{source.etag}"


# Labelled children made once: ``labels()`` per record took about 4% of the agent's time.
VERIFY_RECORDS_IN = RECORDS_IN.labels("verify")
STATUS_COUNTERS = {status: WRITE_STATUSES.labels(status.value) for status in WriteStatus}


@dataclass
class _PartitionBook:
    generation: int | None = None  # the consumer generation its events were fetched in
    next_offset: int | None = None  # after the last event handled
    recorded: int | None = None  # the position the last flush wrote
    partials: dict[str, PartialCounts] = field(default_factory=dict)
    flushed: dict[str, int] = field(default_factory=dict)
    runs: dict[str, RunProgress] = field(default_factory=dict)
    # Envelopes to write at the next flush, with their stored form.
    staged: dict[bytes, tuple[FanEnvelope, bytes]] = field(default_factory=dict)
    dirty_partials: set[str] = field(default_factory=set)
    dirty_runs: set[str] = field(default_factory=set)
    index: dict[str, list[str]] | None = None
    unacked: list[Any] = field(default_factory=list)
    last_flush: float = field(default_factory=time.monotonic)
    last_event: float = field(default_factory=time.monotonic)


Snapshot = tuple[str, bytes]  # (campaignId, JSON)


class SourceRecord(Protocol):
    offset: int
    key: bytes | None
    value: bytes | None


class PartitionSource(Protocol):
    """The score-record topic read directly (``vfstream.sources.partition_reader``)."""

    async def read(self, partition: int, start: int, end: int) -> list[SourceRecord]: ...


@dataclass
class _StandInEvent:
    """Stands in for an event of ``partition`` where no stream event is at hand."""

    partition: int

    @property
    def message(self) -> _StandInEvent:
        return self


@contextmanager
def _inside(event: Any) -> Iterator[None]:
    """Run table writes as if inside ``event``: the table picks its store by the current
    event's partition."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class VerificationLedger:
    def __init__(
        self,
        table: Any,
        emit: Callable[[list[Snapshot]], Awaitable[None]],
        dead_letter: Callable[[bytes, bytes], Awaitable[None]],
        current_generation: Callable[[], int | None] = lambda: None,
        source: PartitionSource | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.table = table
        self.limits = limits
        self._emit = emit
        self._dead_letter = dead_letter
        self._current_generation = current_generation
        self._source = source
        self.filled_records = 0
        self._books: dict[int, _PartitionBook] = {}
        self._generation: int | None = None
        self.stale_events = 0
        self.statuses: Counter[str] = Counter()
        self.records_in = 0
        self._lock = asyncio.Lock()
        self._ack: Callable[[Any], Awaitable[Any]] | None = None

    # --- lifecycle -----------------------------------------------------------------------
    def forget(self, partitions: set[int]) -> None:
        """Drop the in-memory books of partitions this worker no longer owns."""
        for partition in partitions:
            self._books.pop(partition, None)

    async def release(self, partitions: set[int]) -> None:
        """Forget the books of revoked partitions once a flush in progress has finished.

        Faust does not wait for it (``stream_wait_empty`` is off); without the lock a flush
        could write a partition's changelog after the partition moved, between the new
        owner's writes, and leave an older partial as the latest value.
        """
        try:
            await asyncio.wait_for(self._lock.acquire(), timeout=RELEASE_WAIT_SECONDS)
        except TimeoutError:
            log.warning("a flush still running after %ss; forgetting anyway", RELEASE_WAIT_SECONDS)
            self.forget(partitions)
            return
        try:
            self.forget(partitions)
        finally:
            self._lock.release()

    def _book_for(self, partition: int, generation: int | None) -> _PartitionBook | None:
        """The partition's book for an event fetched in ``generation``; None when stale.

        A rebalance restarts every assigned partition at its resume offset, which is at or
        before the first event a book has not flushed; so a book of an older generation is
        dropped unflushed and unacked, as its events come again. An event fetched before the
        rebalance that reaches the agent after it is stale: it belongs to no book.
        """
        if generation is not None:
            if self._generation is not None and generation < self._generation:
                return None
            self._generation = generation
        book = self._books.get(partition)
        if book is None or book.generation != generation:
            book = self._books[partition] = _PartitionBook(generation=generation)
        return book

    def recorded_position(self, partition: int) -> int | None:
        """The offset after the last event a flush of ``partition`` covered, if any."""
        raw = self.table.get(position_key(partition))
        return int(raw) if raw else None

    # --- table helpers (must run inside an event of the partition) -----------------------
    def _write(self, partition: int, key: bytes, value: bytes) -> Any:
        return durable_set(self.table, partition, key, value)

    def _load_index(self, partition: int, book: _PartitionBook) -> dict[str, list[str]]:
        if book.index is None:
            raw = self.table.get(index_key(partition))
            book.index = orjson.loads(raw) if raw else {"campaigns": [], "runs": []}
        return book.index

    def _partial(self, partition: int, book: _PartitionBook, campaign: str) -> PartialCounts:
        partial = book.partials.get(campaign)
        if partial is None:
            raw = self.table.get(partial_key(partition, campaign))
            if raw:
                partial = PartialCounts.model_validate_json(raw)
            else:
                partial = PartialCounts(campaignId=campaign, partition=partition)
            book.partials[campaign] = partial
            book.flushed[campaign] = partial.watermark
        return partial

    def _run(self, partition: int, book: _PartitionBook, run_id: str, campaign: str) -> RunProgress:
        run = book.runs.get(run_id)
        if run is None:
            raw = self.table.get(run_key(partition, run_id))
            if raw:
                run = RunProgress.model_validate_json(raw)
            else:
                run = RunProgress(runId=run_id, campaignId=campaign, partition=partition)
            book.runs[run_id] = run
        return run

    # --- the work ----------------------------------------------------------------------
    async def handle(self, event: Any, ack: Callable[[Any], Awaitable[Any]]) -> WriteStatus | None:
        """Apply one event; None when it is stale (fetched before the latest rebalance)."""
        self._ack = ack
        async with self._lock:
            return await self._handle(event, ack)

    async def flush_idle(self) -> int:
        """Flush partitions whose last events wait for a flush that no new event will bring.

        Table writes go to the partition of the current event, so the flush runs as if
        inside the partition's newest event.
        """
        flushed = 0
        if self._ack is None:
            return 0
        async with self._lock:
            now = time.monotonic()
            current = self._current_generation()
            for partition, book in list(self._books.items()):
                # A book of an older generation: its events come again (see _book_for).
                if (
                    book.generation is not None
                    and current is not None
                    and book.generation < current
                ):
                    del self._books[partition]
                    continue
                if not book.unacked or now - book.last_flush < FLUSH_EVERY_SECONDS:
                    continue
                with _inside(book.unacked[-1]):
                    await self._flush_book(partition, book, self._ack)
                flushed += 1
        return flushed

    async def _handle(self, event: Any, ack: Callable[[Any], Awaitable[Any]]) -> WriteStatus | None:
        message = event.message
        partition, offset = message.partition, message.offset
        book = self._book_for(partition, getattr(message, "generation_id", None))
        if book is None:
            self.stale_events += 1
            STALE_EVENTS.inc()
            return None
        self.records_in += 1
        VERIFY_RECORDS_IN.inc()
        if book.next_offset is None:
            log.info("partition %s: generation %s starts at %s", partition, book.generation, offset)
        await self._fill_up_to(partition, book, offset)
        status = await self._apply_raw(partition, offset, book, event.key, event.value)
        book.unacked.append(event)
        book.next_offset = max(book.next_offset or 0, offset + 1)
        now = book.last_event = time.monotonic()
        if len(book.unacked) >= FLUSH_EVERY_EVENTS or now - book.last_flush >= FLUSH_EVERY_SECONDS:
            await self._flush_book(partition, book, ack)
        return status

    def _expected_offset(self, partition: int, book: _PartitionBook) -> int:
        """The offset the partition's next record must have: after the book's last event,
        or the position the last flush recorded when the book has none yet (the start of
        the partition when nothing was ever recorded)."""
        if book.next_offset is not None:
            return book.next_offset
        return self.recorded_position(partition) or 0

    async def _fill_up_to(self, partition: int, book: _PartitionBook, end: int) -> None:
        """Apply, in order, the records before ``end`` the stream skipped."""
        expected = self._expected_offset(partition, book)
        if self._source is None or end <= expected:
            return
        found = await self._source.read(partition, expected, end)
        for item in found:
            await self._apply_raw(partition, item.offset, book, item.key, item.value)
            book.next_offset = max(book.next_offset or 0, item.offset + 1)
        if found:
            self.filled_records += len(found)
            FILLED_RECORDS.inc(len(found))
            log.warning(
                "partition %s: the stream skipped %s record(s) between offsets %s and %s; "
                "applied them from a direct read",
                partition,
                len(found),
                expected,
                end - 1,
            )
        else:
            # Transaction markers or aborted records: nothing to apply.
            book.next_offset = max(book.next_offset or 0, end)

    async def _apply_raw(
        self,
        partition: int,
        offset: int,
        book: _PartitionBook,
        key: bytes | None,
        value: bytes | None,
    ) -> WriteStatus:
        try:
            record = ScoreRecord.from_json(value)
        except (ValidationError, ValueError) as exc:
            await self._refuse(partition, offset, key, value, [str(exc)], None)
            status = WriteStatus.INVALID
        else:
            try:
                outcome = self._apply(partition, offset, book, key or b"", record)
            except Exception as exc:
                # A record the rules cannot take must not stop the partition (or the worker):
                # it is dead-lettered alone and the fan keeps its last good state.
                log.exception("partition %s offset %s: applying a record failed", partition, offset)
                reason = f"applying the record failed: {type(exc).__name__}: {exc}"
                await self._refuse(partition, offset, key, value, [reason], record.campaignId)
                status = WriteStatus.FAILED
            else:
                status = outcome.status
                if outcome.reasons:
                    reasons = list(outcome.reasons)
                    await self._refuse(partition, offset, key, value, reasons, record.campaignId)
        self.statuses[status.value] += 1
        STATUS_COUNTERS[status].inc()
        return status

    async def _refuse(
        self,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        reasons: list[str],
        campaign_id: str | None,
    ) -> None:
        letter: dict[str, Any] = {
            "kind": "score-record",
            "partition": partition,
            "offset": offset,
            "raw": (value or b"")[:MAX_ROW_BYTES].decode("utf-8", "replace"),
            "reasons": reasons,
        }
        if campaign_id is not None:
            letter["campaignId"] = campaign_id
        await self._dead_letter(key or b"", orjson.dumps(letter))
        DEAD_LETTERS.labels("score-record").inc()

    async def fill_tails(self, consumed: Mapping[int, int | None]) -> int:
        """Apply what the stream consumed but never handed over, for quiet partitions.

        ``consumed`` maps each owned partition to its consumer's position (the offset after
        the last record the stream took from the broker). A record dropped by the stream is
        otherwise noticed when a later one arrives; a partition's last records have none.
        Returns how many records were applied.
        """
        if self._source is None:
            return 0
        applied = 0
        async with self._lock:
            now = time.monotonic()
            current = self._current_generation()
            for partition, position in sorted(consumed.items()):
                book = self._books.get(partition)
                if book is None or (current is not None and book.generation != current):
                    # No event of this generation yet: the recorded position is expected.
                    book = self._books[partition] = _PartitionBook(generation=current)
                    book.last_event = now
                quiet = now - book.last_event >= TAIL_CHECK_IDLE_SECONDS
                if position is None or book.unacked or not quiet:
                    continue
                expected = self._expected_offset(partition, book)
                if position <= expected:
                    continue
                stand_in = _StandInEvent(partition)
                with _inside(stand_in):
                    before = self.filled_records
                    await self._fill_up_to(partition, book, position)
                    applied += self.filled_records - before
                    await self._flush_book(partition, book, _no_ack)
        return applied

    def _apply(
        self,
        partition: int,
        offset: int,
        book: _PartitionBook,
        key: bytes,
        record: ScoreRecord,
    ) -> Outcome:
        staged = book.staged.get(key)
        if staged is not None:
            stored: FanEnvelope | None = staged[0]
        else:
            raw = self.table.get(key)
            stored = FanEnvelope.from_bytes(raw) if raw else None
        campaign = record.campaignId
        partial = self._partial(partition, book, campaign)
        run_id = run_id_of(record)
        run = self._run(partition, book, run_id, campaign) if run_id else None
        outcome = process_record(
            stored,
            record,
            offset,
            partial,
            book.flushed.get(campaign, -1),
            run,
            datetime.now(UTC),
            self.limits,
        )
        if outcome.envelope is not None and outcome.encoded is not None:
            # Staged, written at the flush: a fan's several rows cost one changelog write.
            book.staged[key] = (outcome.envelope, outcome.encoded)
        elif outcome.redelivered and stored is not None:
            # Local RocksDB can hold writes the changelog never acknowledged (kill -9 between
            # the local write and the broker's ack). Rewriting them makes the changelog — what
            # other workers recover from — hold what this event's ack will vouch for.
            book.staged[key] = staged or (stored, stored.to_bytes())
            book.dirty_partials.add(campaign)
        if partial.watermark > book.flushed.get(campaign, -1):
            book.dirty_partials.add(campaign)
        if outcome.counted_for_run and run_id:
            book.dirty_runs.add(run_id)
        return outcome

    async def flush(self, partition: int, ack: Callable[[Any], Awaitable[Any]]) -> None:
        book = self._books.get(partition)
        if book is not None:
            await self._flush_book(partition, book, ack)

    async def _flush_book(
        self, partition: int, book: _PartitionBook, ack: Callable[[Any], Awaitable[Any]]
    ) -> None:
        snapshots: list[Snapshot] = []
        # Order matters: fan states, then the partials that cover them (see ledger.py).
        sent: list[Any] = []
        for key, (_, encoded) in book.staged.items():
            sent.append(self._write(partition, key, encoded))
        book.staged.clear()
        if book.dirty_partials or book.dirty_runs:
            index = self._load_index(partition, book)
            grew = False
            for campaign in sorted(book.dirty_partials):
                partial = book.partials[campaign]
                body = partial.model_dump_json().encode()
                sent.append(self._write(partition, partial_key(partition, campaign), body))
                book.flushed[campaign] = partial.watermark
                if campaign not in index["campaigns"]:
                    index["campaigns"].append(campaign)
                    grew = True
                snapshots.append((campaign, orjson.dumps({"partial": orjson.loads(body)})))
            for run_id in sorted(book.dirty_runs):
                run = book.runs[run_id]
                body = run.model_dump_json().encode()
                sent.append(self._write(partition, run_key(partition, run_id), body))
                if run_id not in index["runs"]:
                    index["runs"].append(run_id)
                    grew = True
                snapshots.append((run.campaignId, orjson.dumps({"run": orjson.loads(body)})))
            if grew:
                sent.append(self._write(partition, index_key(partition), orjson.dumps(index)))
            book.dirty_partials.clear()
            book.dirty_runs.clear()
        if book.next_offset is not None and book.next_offset != book.recorded:
            # Last: the changelog holds everything before it once it holds this.
            position = str(book.next_offset).encode()
            sent.append(self._write(partition, position_key(partition), position))
            book.recorded = book.next_offset
        if sent:
            # Faust commits the offsets of acked events without waiting for changelog
            # writes; so ack only once the broker holds every write this flush made.
            await asyncio.gather(*sent)
        if snapshots:
            await self._emit(snapshots)
            SNAPSHOTS.inc(len(snapshots))
        FLUSHES.inc()
        RECORDS_OUT.labels("verify").inc(len(book.unacked))
        for pending in book.unacked:
            await ack(pending)
        book.unacked.clear()
        book.last_flush = time.monotonic()

    def snapshots_for(self, partitions: set[int]) -> list[Snapshot]:
        """Current partials and run progress of the given partitions, for re-announcement.

        Reads in-memory books first, the table otherwise; safe outside an event context.
        """
        out: list[Snapshot] = []
        for partition in sorted(partitions):
            book = self._books.get(partition)
            raw_index = self.table.get(index_key(partition))
            index = orjson.loads(raw_index) if raw_index else {"campaigns": [], "runs": []}
            for campaign in index["campaigns"]:
                partial = book.partials.get(campaign) if book else None
                body = (
                    partial.model_dump_json().encode()
                    if partial
                    else self.table.get(partial_key(partition, campaign))
                )
                if body:
                    out.append((campaign, orjson.dumps({"partial": orjson.loads(body)})))
            for run_id in index["runs"]:
                run = book.runs.get(run_id) if book else None
                body = (
                    run.model_dump_json().encode()
                    if run
                    else self.table.get(run_key(partition, run_id))
                )
                if body:
                    decoded = orjson.loads(body)
                    out.append((decoded["campaignId"], orjson.dumps({"run": decoded})))
        return out


async def _no_ack(event: Any) -> None:
    """A flush of records read directly: there are no stream events to acknowledge."""
    return None
