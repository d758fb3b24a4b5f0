"""The counting half of the verification ledger: rows → fan states → partials and runs.

Plain and synchronous: no asyncio, no Faust. A ``PartitionCounter`` holds what one
partition has counted since its last flush; it reads the fan-state table through the
``StateStore`` protocol (its reads are synchronous) and never writes it: a flush asks it
for the writes in order (``FlushPlan``), the delivery half (``vfstream.stream.verification``)
writes them and acks, then tells the counter they are durable (``PartitionCounter.commit``).
Dead letters are returned as messages to send, not sent. See ``vfstream.domain.ledger`` for
why the counts are exact.

The hot path costs a few microseconds a record: a batch is decoded with one msgspec call
(``read_batch``), its fans are read with one multi-get, each record becomes a slotted
``ScoreRow`` (structural checks only: the edge validated it), and a flush writes the local
store and the changelog in one batch each (``StateStore``).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
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
    run_key,
)
from vfstream.domain.ledger import PartialTally, RunTally, apply_record
from vfstream.domain.limits import Limits
from vfstream.domain.records import MAX_ROW_BYTES
from vfstream.domain.tally import partial_message, run_message
from vfstream.stream.ports import Snapshot, StateStore

log = logging.getLogger(__name__)

# Runs the partition index lists (and re-announces): the newest; older ones have settled.
INDEXED_RUNS = 256

Letter = tuple[bytes, bytes]  # a dead letter to send: (key, JSON)


@dataclass
class FlushPlan:
    """What a flush writes, in order (fan states, then the partials that cover them, then
    the runs and the run index), and what it announces once the broker holds it."""

    items: list[tuple[bytes, bytes]]
    snapshots: list[Snapshot] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # each snapshot's, for re-announcement
    flushed: dict[str, int] = field(default_factory=dict)  # partial watermarks written
    index: dict[str, list[str]] | None = None  # the run index written, if it grew


class PartitionCounter:
    """What one partition has counted since it was assigned, between flushes."""

    def __init__(
        self, store: StateStore, partition: int, limits: Limits, partitions: int | None
    ) -> None:
        self.store = store
        self.partition = partition
        self.limits = limits
        # The partition count of the score-record topic: a record whose fan belongs to
        # another partition is refused (its state would live in two partitions).
        self.partitions = partitions
        # Tallies read or changed since the partition was assigned, oldest first; bounded by
        # ``cached_tallies`` after each flush (``commit``).
        self.partials: dict[str, PartialTally] = {}
        self.flushed: dict[str, int] = {}  # each partial's flushed watermark
        self.runs: dict[str, RunTally] = {}
        # Envelopes to write at the next flush, with their stored form.
        self.staged: dict[bytes, tuple[Envelope, bytes]] = {}
        self.dirty_partials: set[str] = set()
        self.dirty_runs: set[str] = set()
        self.index: dict[str, list[str]] | None = None

    # --- bookkeeping values ----------------------------------------------------------------
    def _load_index(self) -> dict[str, list[str]]:
        """The partition's run index: its newest ``INDEXED_RUNS`` run ids, bounded in size
        (``bookkeeping_refusal``). Campaigns are not indexed: their partials are found by key
        prefix (``partials_of``), so no single value grows with the number of campaigns."""
        if self.index is None:
            raw = self.store.get(self.partition, index_key(self.partition))
            self.index = {"runs": stored_index(raw)}
        return self.index

    def _partial(self, campaign: str) -> PartialTally:
        partial = self.partials.get(campaign)
        if partial is None:
            raw = self.store.get(self.partition, partial_key(self.partition, campaign))
            if raw:
                partial = PartialTally.from_json(raw)
            else:
                partial = PartialTally(campaignId=campaign, partition=self.partition)
            self.partials[campaign] = partial
            self.flushed[campaign] = partial.watermark
        return partial

    def _run(self, run_id: str, campaign: str) -> RunTally:
        run = self.runs.get(run_id)
        if run is None:
            raw = self.store.get(self.partition, run_key(self.partition, run_id))
            if raw:
                run = RunTally.from_json(raw)
            else:
                run = RunTally(runId=run_id, campaignId=campaign, partition=self.partition)
            self.runs[run_id] = run
        return run

    # --- the work ------------------------------------------------------------------------
    def apply(
        self, offset: int, key: bytes | None, value: bytes | None, letters: list[Letter]
    ) -> tuple[Counter[str], int]:
        """Apply every record of one message, in order: its records' write statuses and how
        many records it held. A malformed record is dead-lettered alone (appended to
        ``letters``) and the rest are applied."""
        partition = self.partition
        statuses: Counter[str] = Counter()
        try:
            records = read_batch(value)
        except Exception as exc:
            # MalformedBatch, or anything a hostile message provokes in the decoder: one
            # dead letter, and the partition goes on (a RecursionError once killed the
            # agent, the tail-fill read the message again, and the worker died in a loop).
            reason = str(exc) if isinstance(exc, MalformedBatch) else _unreadable(exc)
            letters.append(_letter(partition, offset, None, key, value, [reason], None))
            statuses[WriteStatus.INVALID] += 1
            return statuses, 0
        rows: list[tuple[int, ScoreRow, bytes]] = []
        wanted: list[bytes] = []
        partitions = self.partitions
        staged = self.staged
        for index, row in enumerate(records):
            if isinstance(row, Refused):
                letters.append(_letter(partition, offset, index, key, row.raw, row.reasons, None))
                statuses[WriteStatus.INVALID] += 1
                continue
            refusal = bookkeeping_refusal(row, self.limits)
            if refusal is not None:
                # Before any bookkeeping: its ids would become keys of partials and runs.
                raw = encode_record(row)
                letters.append(_letter(partition, offset, index, key, raw, [refusal], None))
                statuses[WriteStatus.INVALID] += 1
                continue
            fan = fan_key(row.campaignId, row.globalUserId).encode()
            if partitions is not None and partition_for(fan, partitions) != partition:
                reason = (
                    f"record of partition {partition_for(fan, partitions)} "
                    f"arrived on partition {partition}"
                )
                raw = encode_record(row)
                letter = _letter(partition, offset, index, key, raw, [reason], row.campaignId)
                letters.append(letter)
                statuses[WriteStatus.INVALID] += 1
                continue
            rows.append((index, row, fan))
            if fan not in staged:
                wanted.append(fan)
        stored = dict(zip(wanted, self.store.get_many(partition, wanted), strict=True))
        moment = datetime.now(UTC)
        now = iso_now(moment)
        now_us = int(moment.timestamp() * 1_000_000)
        for index, row, fan in rows:
            position = position_of(offset, index)
            try:
                status, reasons = self._apply(position, fan, row, stored, now, now_us)
            except Exception as exc:
                # A record the rules cannot take must not stop the partition (or the worker):
                # it is dead-lettered alone and the fan keeps its last good state.
                log.exception("partition %s offset %s: applying a record failed", partition, offset)
                status = WriteStatus.FAILED
                reasons = (f"applying the record failed: {type(exc).__name__}: {exc}",)
            if reasons:
                raw = encode_record(row)
                letters.append(
                    _letter(partition, offset, index, key, raw, list(reasons), row.campaignId)
                )
            statuses[status] += 1
        return statuses, len(records)

    def _apply(
        self,
        position: int,
        fan: bytes,
        row: ScoreRow,
        stored: dict[bytes, bytes | None],
        now: str,
        now_us: int,
    ) -> tuple[WriteStatus, tuple[str, ...]]:
        staged = self.staged.get(fan)
        if staged is not None:
            envelope: Envelope | None = staged[0]
            raw: bytes | None = staged[1]
        else:
            raw = stored.get(fan)
            envelope = decode_envelope(raw) if raw else None
        campaign = row.campaignId
        partial = self._partial(campaign)
        run_id = row.run_id
        run = self._run(run_id, campaign) if run_id else None
        applied = apply_record(
            envelope,
            row,
            position,
            partial,
            self.flushed.get(campaign, -1),
            run,
            now,
            self.limits,
            now_us,
        )
        if applied.envelope is not None and applied.encoded is not None:
            # Staged, written at the flush: a fan's several rows cost one write.
            self.staged[fan] = (applied.envelope, applied.encoded)
        elif applied.redelivered and envelope is not None and raw is not None:
            # Local RocksDB can hold writes the changelog never acknowledged (kill -9 between
            # the local write and the broker's ack). Rewriting them makes the changelog — what
            # other workers recover from — hold what this event's ack will vouch for.
            self.staged[fan] = (envelope, raw)
            self.dirty_partials.add(campaign)
        if partial.watermark > self.flushed.get(campaign, -1):
            self.dirty_partials.add(campaign)
        if applied.counted_for_run and run_id:
            self.dirty_runs.add(run_id)
        return applied.status, applied.reasons

    # --- flushes -------------------------------------------------------------------------
    def plan(self) -> FlushPlan:
        """What the next flush writes, in order: fan states, then the partials that cover
        them (see ledger.py), then the runs and the run index. Changes nothing here: a write
        that fails leaves everything staged for the next flush."""
        partition = self.partition
        plan = FlushPlan([(key, encoded) for key, (_, encoded) in self.staged.items()])
        if self.dirty_partials or self.dirty_runs:
            runs = list(self._load_index()["runs"])
            grew = False
            for campaign in sorted(self.dirty_partials):
                partial = self.partials[campaign]
                body = partial.to_json()
                plan.items.append((partial_key(partition, campaign), body))
                plan.flushed[campaign] = partial.watermark
                plan.snapshots.append((campaign, partial_message(body)))
                plan.names.append(f"partial:{campaign}")
            for run_id in sorted(self.dirty_runs):
                run = self.runs[run_id]
                body = run.to_json()
                plan.items.append((run_key(partition, run_id), body))
                if run_id not in runs:
                    runs.append(run_id)
                    del runs[:-INDEXED_RUNS]
                    grew = True
                plan.snapshots.append((run.campaignId, run_message(body)))
                plan.names.append(f"run:{run_id}")
            if grew:
                plan.index = {"runs": runs}
                plan.items.append((index_key(partition), orjson.dumps(plan.index)))
        return plan

    def commit(self, plan: FlushPlan, cached_tallies: int) -> None:
        """The broker holds what ``plan`` wrote: forget it as staged."""
        self.staged.clear()
        self.flushed.update(plan.flushed)
        if plan.index is not None:
            self.index = plan.index
        self.dirty_partials.clear()
        self.dirty_runs.clear()
        self._trim(cached_tallies)

    def _trim(self, most: int) -> None:
        """Keep at most ``most`` (``FlushPolicy.cached_tallies``) partials and runs once
        flushed, dropping the oldest read: each is in the table as flushed, and
        ``_partial``/``_run`` read it again when a record needs it. Without this a
        long-lived worker kept one of each for every campaign and run its partitions ever
        saw."""
        excess = len(self.partials) - most
        if excess > 0:
            for campaign in list(islice(self.partials, excess)):
                del self.partials[campaign]
                self.flushed.pop(campaign, None)
        excess = len(self.runs) - most
        if excess > 0:
            for run_id in list(islice(self.runs, excess)):
                del self.runs[run_id]


def every_snapshot(
    store: StateStore, partition: int, counter: PartitionCounter | None
) -> list[Snapshot]:
    """Every partial and run of the partition: the counter's when it holds one, the
    table's otherwise."""
    out: list[Snapshot] = []
    prefix = partials_prefix(partition)
    for stored_key, stored_body in store.scan(partition, prefix):
        campaign = stored_key[len(prefix) :].decode()
        partial = counter.partials.get(campaign) if counter else None
        body = partial.to_json() if partial else stored_body
        out.append((campaign, partial_message(body)))
    for run_id in stored_index(store.get(partition, index_key(partition))):
        run = counter.runs.get(run_id) if counter else None
        body = run.to_json() if run else store.get(partition, run_key(partition, run_id))
        if body:
            decoded = orjson.loads(body)
            out.append((decoded["campaignId"], run_message(body)))
    return out


def stored_index(raw: bytes | None) -> list[str]:
    """The run ids of a stored index (older indexes also list campaigns: ignored)."""
    return list(orjson.loads(raw).get("runs", [])) if raw else []


def _unreadable(exc: BaseException) -> str:
    return f"unreadable message: {type(exc).__name__}: {str(exc)[:200]}"


def _letter(
    partition: int,
    offset: int,
    index: int | None,
    key: bytes | None,
    value: bytes | None,
    reasons: list[str],
    campaign_id: str | None,
) -> Letter:
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
    return key or b"", orjson.dumps(letter)
