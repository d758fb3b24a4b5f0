"""Per-partition bookkeeping around the fan-state table: partial counts, run progress, acks.

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

The hot path costs a few microseconds a record: a batch is decoded with one ``orjson``
call, its fans are read with one multi-get, each record becomes a slotted ``ScoreRow``
(structural checks only: the edge validated it), and a flush writes the local store and the
changelog in one batch each (``StateStore``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import orjson

from vfstream.domain.batches import MalformedBatch
from vfstream.domain.fans import (
    Envelope,
    Refused,
    ScoreRow,
    WriteStatus,
    bookkeeping_refusal,
    decode_envelope,
    encode_record,
    iso_now,
    position_of,
    read_batch,
)
from vfstream.domain.keys import (
    fan_key,
    index_key,
    partial_key,
    partials_prefix,
    partition_for,
    position_key,
    run_key,
)
from vfstream.domain.ledger import PartialTally, RunTally, apply_record
from vfstream.domain.limits import DEFAULT_LIMITS, Limits
from vfstream.domain.records import MAX_ROW_BYTES
from vfstream.domain.tally import partial_message, run_message
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
from vfstream.stream.ports import (
    FlushPolicy,
    PartitionBook,
    PartitionSource,
    Snapshot,
    StateStore,
)

log = logging.getLogger(__name__)

# Runs the partition index lists (and re-announces): the newest; older ones have settled.
INDEXED_RUNS = 256
# What a flush announced is announced again for this long (``snapshots_for``).
REANNOUNCE_WINDOW_SECONDS = 120.0


# Labelled children made once: ``labels()`` per call took about 4% of the agent's time.
VERIFY_RECORDS_IN = RECORDS_IN.labels("verify")
VERIFY_RECORDS_OUT = RECORDS_OUT.labels("verify")
STATUS_COUNTERS = {status: WRITE_STATUSES.labels(status.value) for status in WriteStatus}
SCORE_DEAD_LETTERS = DEAD_LETTERS.labels("score-record")


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
    ) -> None:
        self.store = store
        self.policy = policy or FlushPolicy()
        self.limits = limits
        # The partition count of the score-record topic: a record whose fan belongs to
        # another partition is refused (its state would live in two partitions).
        self.partitions = partitions
        self._emit = emit
        self._dead_letter = dead_letter
        self._current_generation = current_generation
        self._source = source
        # (partition, start, end) -> whether the stream's fetcher proved the range holds no
        # record (transaction markers only): then no direct read is needed.
        self._known_gap = known_gap
        self.known_gaps = 0
        self.filled_records = 0
        self._books: dict[int, PartitionBook] = {}
        self._generation: int | None = None
        self.stale_events = 0
        self.statuses: Counter[str] = Counter()
        self.records_in = 0
        self.batches_in = 0
        self._lock = asyncio.Lock()
        self._ack: Callable[[Any], Awaitable[Any]] | None = None
        # Re-announcement (``snapshots_for``): the generation each partition was last fully
        # re-announced in, and per partition what its flushes announced lately.
        self._swept: dict[int, int | None] = {}
        self._recent: dict[int, dict[str, tuple[float, Snapshot]]] = {}

    # --- lifecycle -----------------------------------------------------------------------
    def forget(self, partitions: set[int]) -> None:
        """Drop the in-memory books of partitions this worker no longer owns."""
        for partition in partitions:
            self._books.pop(partition, None)
            self._recent.pop(partition, None)
            self._swept.pop(partition, None)

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

    def _book_for(self, partition: int, generation: int | None) -> PartitionBook | None:
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
            book = self._books[partition] = PartitionBook(generation=generation)
        return book

    def recorded_position(self, partition: int) -> int | None:
        """The offset after the last event a flush of ``partition`` covered, if any."""
        raw = self.store.get(partition, position_key(partition))
        return int(raw) if raw else None

    # --- bookkeeping values ----------------------------------------------------------------
    def _load_index(self, partition: int, book: PartitionBook) -> dict[str, list[str]]:
        """The partition's run index: its newest ``INDEXED_RUNS`` run ids, bounded in size
        (``bookkeeping_refusal``). Campaigns are not indexed: their partials are found by key
        prefix (``partials_of``), so no single value grows with the number of campaigns."""
        if book.index is None:
            book.index = {"runs": _stored_index(self.store.get(partition, index_key(partition)))}
        return book.index

    def _partial(self, partition: int, book: PartitionBook, campaign: str) -> PartialTally:
        partial = book.partials.get(campaign)
        if partial is None:
            raw = self.store.get(partition, partial_key(partition, campaign))
            if raw:
                partial = PartialTally.from_json(raw)
            else:
                partial = PartialTally(campaignId=campaign, partition=partition)
            book.partials[campaign] = partial
            book.flushed[campaign] = partial.watermark
        return partial

    def _run(self, partition: int, book: PartitionBook, run_id: str, campaign: str) -> RunTally:
        run = book.runs.get(run_id)
        if run is None:
            raw = self.store.get(partition, run_key(partition, run_id))
            if raw:
                run = RunTally.from_json(raw)
            else:
                run = RunTally(runId=run_id, campaignId=campaign, partition=partition)
            book.runs[run_id] = run
        return run

    # --- the work ------------------------------------------------------------------------
    async def handle(self, event: Any, ack: Callable[[Any], Awaitable[Any]]) -> Counter[str] | None:
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
                # A book of an older generation: its events come again (see _book_for).
                if (
                    book.generation is not None
                    and current is not None
                    and book.generation < current
                ):
                    del self._books[partition]
                    continue
                if not book.unacked or now - book.last_flush < self.policy.every_seconds:
                    continue
                await self._flush_book(partition, book, self._ack)
                flushed += 1
        return flushed

    async def _handle(
        self, event: Any, ack: Callable[[Any], Awaitable[Any]]
    ) -> Counter[str] | None:
        message = event.message
        partition, offset = message.partition, message.offset
        book = self._book_for(partition, getattr(message, "generation_id", None))
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
        now = book.last_event = time.monotonic()
        if (
            book.unflushed_records >= self.policy.every_records
            or now - book.last_flush >= self.policy.every_seconds
        ):
            await self._flush_book(partition, book, ack)
        return statuses

    def _expected_offset(self, partition: int, book: PartitionBook) -> int:
        """The offset the partition's next message must have: after the book's last event,
        or the position the last flush recorded when the book has none yet (the start of
        the partition when nothing was ever recorded)."""
        if book.next_offset is not None:
            return book.next_offset
        return self.recorded_position(partition) or 0

    async def _fill_up_to(self, partition: int, book: PartitionBook, end: int) -> None:
        """Apply, in order, the messages before ``end`` the stream skipped."""
        expected = self._expected_offset(partition, book)
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
        """Apply every record of one message, in order; a malformed one is dead-lettered
        alone and the rest are applied."""
        statuses: Counter[str] = Counter()
        self.batches_in += 1
        try:
            records = read_batch(value)
        except Exception as exc:
            # MalformedBatch, or anything a hostile message provokes in the decoder: one
            # dead letter, and the partition goes on (a RecursionError once killed the
            # agent, the tail-fill read the message again, and the worker died in a loop).
            reason = str(exc) if isinstance(exc, MalformedBatch) else _unreadable(exc)
            await self._refuse(partition, offset, None, key, value, [reason], None)
            statuses[WriteStatus.INVALID] += 1
            self._count(statuses)
            return statuses
        rows: list[tuple[int, ScoreRow, bytes]] = []
        wanted: list[bytes] = []
        partitions = self.partitions
        for index, row in enumerate(records):
            if isinstance(row, Refused):
                await self._refuse(partition, offset, index, key, row.raw, row.reasons, None)
                statuses[WriteStatus.INVALID] += 1
                continue
            refusal = bookkeeping_refusal(row, self.limits)
            if refusal is not None:
                # Before any bookkeeping: its ids would become keys of partials and runs.
                raw = encode_record(row)
                await self._refuse(partition, offset, index, key, raw, [refusal], None)
                statuses[WriteStatus.INVALID] += 1
                continue
            fan = fan_key(row.campaignId, row.globalUserId).encode()
            if partitions is not None and partition_for(fan, partitions) != partition:
                reason = (
                    f"record of partition {partition_for(fan, partitions)} "
                    f"arrived on partition {partition}"
                )
                raw = encode_record(row)
                await self._refuse(partition, offset, index, key, raw, [reason], row.campaignId)
                statuses[WriteStatus.INVALID] += 1
                continue
            rows.append((index, row, fan))
            if fan not in book.staged:
                wanted.append(fan)
        stored = dict(zip(wanted, self.store.get_many(partition, wanted), strict=True))
        moment = datetime.now(UTC)
        now = iso_now(moment)
        now_us = int(moment.timestamp() * 1_000_000)
        for index, row, fan in rows:
            position = position_of(offset, index)
            try:
                status, reasons = self._apply(
                    partition, position, book, fan, row, stored, now, now_us
                )
            except Exception as exc:
                # A record the rules cannot take must not stop the partition (or the worker):
                # it is dead-lettered alone and the fan keeps its last good state.
                log.exception("partition %s offset %s: applying a record failed", partition, offset)
                status = WriteStatus.FAILED
                reasons = (f"applying the record failed: {type(exc).__name__}: {exc}",)
            if reasons:
                raw = encode_record(row)
                await self._refuse(
                    partition, offset, index, key, raw, list(reasons), row.campaignId
                )
            statuses[status] += 1
        self._count(statuses)
        book.unflushed_records += len(records)
        return statuses

    def _count(self, statuses: Counter[str]) -> None:
        """Metrics once a batch, not once a record."""
        for status, count in statuses.items():
            self.statuses[str(status)] += count
            STATUS_COUNTERS[WriteStatus(status)].inc(count)

    def _apply(
        self,
        partition: int,
        position: int,
        book: PartitionBook,
        fan: bytes,
        row: ScoreRow,
        stored: dict[bytes, bytes | None],
        now: str,
        now_us: int,
    ) -> tuple[WriteStatus, tuple[str, ...]]:
        staged = book.staged.get(fan)
        if staged is not None:
            envelope: Envelope | None = staged[0]
            raw: bytes | None = staged[1]
        else:
            raw = stored.get(fan)
            envelope = decode_envelope(raw) if raw else None
        campaign = row.campaignId
        partial = self._partial(partition, book, campaign)
        run_id = row.run_id
        run = self._run(partition, book, run_id, campaign) if run_id else None
        applied = apply_record(
            envelope,
            row,
            position,
            partial,
            book.flushed.get(campaign, -1),
            run,
            now,
            self.limits,
            now_us,
        )
        if applied.envelope is not None and applied.encoded is not None:
            # Staged, written at the flush: a fan's several rows cost one write.
            book.staged[fan] = (applied.envelope, applied.encoded)
        elif applied.redelivered and envelope is not None and raw is not None:
            # Local RocksDB can hold writes the changelog never acknowledged (kill -9 between
            # the local write and the broker's ack). Rewriting them makes the changelog — what
            # other workers recover from — hold what this event's ack will vouch for.
            book.staged[fan] = (envelope, raw)
            book.dirty_partials.add(campaign)
        if partial.watermark > book.flushed.get(campaign, -1):
            book.dirty_partials.add(campaign)
        if applied.counted_for_run and run_id:
            book.dirty_runs.add(run_id)
        return applied.status, applied.reasons

    async def _refuse(
        self,
        partition: int,
        offset: int,
        index: int | None,
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
        if index is not None:
            letter["index"] = index
        if campaign_id is not None:
            letter["campaignId"] = campaign_id
        await self._dead_letter(key or b"", orjson.dumps(letter))
        SCORE_DEAD_LETTERS.inc()

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
                book = self._books.get(partition)
                if book is None or (current is not None and book.generation != current):
                    # No event of this generation yet: the recorded position is expected.
                    book = self._books[partition] = PartitionBook(generation=current)
                    book.last_event = now
                quiet = now - book.last_event >= self.policy.tail_idle_seconds
                if position is None or book.unacked or not quiet:
                    continue
                expected = self._expected_offset(partition, book)
                if position <= expected:
                    continue
                before = self.filled_records
                await self._fill_up_to(partition, book, position)
                applied += self.filled_records - before
                await self._flush_book(partition, book, _no_ack)
        return applied

    async def flush(self, partition: int, ack: Callable[[Any], Awaitable[Any]]) -> None:
        book = self._books.get(partition)
        if book is not None:
            await self._flush_book(partition, book, ack)

    async def _flush_book(
        self, partition: int, book: PartitionBook, ack: Callable[[Any], Awaitable[Any]]
    ) -> None:
        """Write what the book staged, then ack its events. The book is changed only once the
        broker holds the write: a write that fails leaves everything staged for the next
        flush, and no later flush can ack events whose states never reached the changelog.
        A book no longer current (its partition revoked while a range read ran) writes and
        acks nothing: its events come again to the partition's next owner."""
        if self._books.get(partition) is not book:
            return
        snapshots: list[Snapshot] = []
        snapshot_names: list[str] = []
        # Order matters: fan states, then the partials that cover them (see ledger.py), then
        # the position.
        items = [(key, encoded) for key, (_, encoded) in book.staged.items()]
        flushed: dict[str, int] = {}
        index: dict[str, list[str]] | None = None
        if book.dirty_partials or book.dirty_runs:
            runs = list(self._load_index(partition, book)["runs"])
            grew = False
            for campaign in sorted(book.dirty_partials):
                partial = book.partials[campaign]
                body = partial.to_json()
                items.append((partial_key(partition, campaign), body))
                flushed[campaign] = partial.watermark
                snapshots.append((campaign, partial_message(body)))
                snapshot_names.append(f"partial:{campaign}")
            for run_id in sorted(book.dirty_runs):
                run = book.runs[run_id]
                body = run.to_json()
                items.append((run_key(partition, run_id), body))
                if run_id not in runs:
                    runs.append(run_id)
                    del runs[:-INDEXED_RUNS]
                    grew = True
                snapshots.append((run.campaignId, run_message(body)))
                snapshot_names.append(f"run:{run_id}")
            if grew:
                index = {"runs": runs}
                items.append((index_key(partition), orjson.dumps(index)))
        recorded = book.recorded
        if book.next_offset is not None and book.next_offset != book.recorded:
            # Last: the changelog holds everything before it once it holds this.
            items.append((position_key(partition), str(book.next_offset).encode()))
            recorded = book.next_offset
        if items:
            # Faust commits the offsets of acked events without waiting for changelog
            # writes; so ack only once the broker holds every write this flush made.
            await self.store.write(partition, items)
        book.staged.clear()
        book.flushed.update(flushed)
        if index is not None:
            book.index = index
        book.dirty_partials.clear()
        book.dirty_runs.clear()
        book.recorded = recorded
        self._trim(book)
        if snapshots:
            await self._emit(snapshots)
            SNAPSHOTS.inc(len(snapshots))
            recent = self._recent.setdefault(partition, {})
            at = time.monotonic()
            for name, snapshot in zip(snapshot_names, snapshots, strict=True):
                recent[name] = (at, snapshot)
        FLUSHES.inc()
        VERIFY_RECORDS_OUT.inc(book.unflushed_records)
        for pending in book.unacked:
            await ack(pending)
        book.unacked.clear()
        book.unflushed_records = 0
        book.last_flush = time.monotonic()

    def _trim(self, book: PartitionBook) -> None:
        """Keep at most ``cached_tallies`` partials and runs in a flushed book, dropping the
        oldest read: each is in the table as flushed, and ``_partial``/``_run`` read it again
        when a record needs it. Without this a long-lived worker kept one of each for every
        campaign and run its partitions ever saw."""
        most = self.policy.cached_tallies
        excess = len(book.partials) - most
        if excess > 0:
            for campaign in list(islice(book.partials, excess)):
                del book.partials[campaign]
                book.flushed.pop(campaign, None)
        excess = len(book.runs) - most
        if excess > 0:
            for run_id in list(islice(book.runs, excess)):
                del book.runs[run_id]

    def snapshots_for(self, partitions: set[int]) -> list[Snapshot]:
        """What to announce again of the given partitions (the re-announcement timer).

        Snapshots are absolute, so announcing one again is harmless, and it heals one lost
        between a flush and its send, or a tally update lost in a crash (README "Exact
        counts"). Both happen around a flush or a rebalance, so: once after each rebalance,
        every partial and run of the partition (in-memory books first, the table otherwise);
        then only what a flush announced in the last ``REANNOUNCE_WINDOW_SECONDS``. An idle
        worker announces nothing, however many campaigns it holds.
        """
        out: list[Snapshot] = []
        generation = self._current_generation()
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
            out.extend(self._every_snapshot(partition))
        return out

    def _every_snapshot(self, partition: int) -> list[Snapshot]:
        out: list[Snapshot] = []
        book = self._books.get(partition)
        for stored_key, stored_body in self.store.scan(partition, partials_prefix(partition)):
            campaign = stored_key[len(partials_prefix(partition)) :].decode()
            partial = book.partials.get(campaign) if book else None
            body = partial.to_json() if partial else stored_body
            out.append((campaign, partial_message(body)))
        for run_id in _stored_index(self.store.get(partition, index_key(partition))):
            run = book.runs.get(run_id) if book else None
            body = run.to_json() if run else self.store.get(partition, run_key(partition, run_id))
            if body:
                decoded = orjson.loads(body)
                out.append((decoded["campaignId"], run_message(body)))
        return out


def _stored_index(raw: bytes | None) -> list[str]:
    """The run ids of a stored index (older indexes also list campaigns: ignored)."""
    return list(orjson.loads(raw).get("runs", [])) if raw else []


def _unreadable(exc: BaseException) -> str:
    return f"unreadable message: {type(exc).__name__}: {str(exc)[:200]}"


async def _no_ack(event: Any) -> None:
    """A flush of records read directly: there are no stream events to acknowledge."""
    return None
