"""The Kinesis bridge (SPEC 2.3): copies score records from a Kinesis stream to Kafka.

Each pass reads every shard that may be read now (a reshard's children only after their
parents are drained, see ``vfstream.domain.shards``), validates the records like file rows,
and produces the valid ones, the dead letters and each shard's new checkpoint in **one
Kafka transaction**. Records and checkpoints therefore commit together: a restart, a crash
or a pod moving resumes after the last committed checkpoint and neither loses nor repeats a
record. The transactional id is the stream's, so a second bridge on the same stream fences
the first one, whose open transaction is aborted.

The bridge holds the stream (its producer's transactional id) and runs the passes; the
Kinesis side, listing and reading shards with retries, is ``kinesis_shards.py``; the Kafka
side, a pass's records converted and committed with the checkpoints, is
``kinesis_commits.py``.

Nothing here is tied to the Faust worker: ``KinesisBridge.run(should_stop)`` can be called
from an app task, and ``vfstream bridge`` (``vfstream.cli.pipeline``) runs it alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import ProducerFenced

from vfstream import kafka
from vfstream.aws import aws_client
from vfstream.domain.kinesis_feed import DEAD_LETTER_KIND
from vfstream.domain.shards import ShardCheckpoint, readable_shards, waiting_shards
from vfstream.metrics import BRIDGE_MILLIS_BEHIND, DEAD_LETTERS, RECORDS_IN, RECORDS_OUT
from vfstream.settings import Settings
from vfstream.sources.kinesis_commits import PassBatch, commit_pass, load_checkpoints, pass_batch
from vfstream.sources.kinesis_shards import BridgeError, Cursor, ShardRead, ShardReader

log = logging.getLogger(__name__)

PROGRESS_LOG_SECONDS = 30.0


@dataclass
class BridgeSummary:
    """What a bridge run copied, and which shards it read from and finished."""

    stream: str
    records: int = 0
    valid: int = 0
    invalid: int = 0
    shards_read: set[str] = field(default_factory=set)
    finished_shards: set[str] = field(default_factory=set)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "records": self.records,
            "valid": self.valid,
            "invalid": self.invalid,
            "shards": len(self.shards_read),
            "finishedShards": sorted(self.finished_shards),
            "seconds": round(self.seconds, 3),
        }


class KinesisBridge:
    """Copies one Kinesis stream into the score-record topic, shard by shard, in order."""

    def __init__(
        self,
        settings: Settings,
        *,
        stream: str | None = None,
        aws_attempts: int = 6,
        aws_backoff_seconds: float = 0.2,
        restart_seconds: float = 5.0,
        fenced_restart_seconds: float = 30.0,
        on_commit: Callable[[BridgeSummary], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.stream = stream or settings.bridge_stream
        self.aws_attempts = aws_attempts
        self.aws_backoff_seconds = aws_backoff_seconds
        self.restart_seconds = restart_seconds
        self.fenced_restart_seconds = fenced_restart_seconds
        # Called after every committed transaction (tests use it to stop or crash mid-run).
        self._on_commit = on_commit
        self.summary = BridgeSummary(stream=self.stream)
        self.reader = ShardReader(
            settings, self.stream, attempts=aws_attempts, backoff_seconds=aws_backoff_seconds
        )

    # --- public entry points ---------------------------------------------------------------
    async def run(self, should_stop: Callable[[], bool]) -> BridgeSummary:
        """Copy until ``should_stop()``; failures restart from the committed checkpoints."""
        started = time.monotonic()
        try:
            while not should_stop():
                try:
                    await self._session(should_stop, once=False)
                except BridgeError as exc:
                    log.error(
                        "bridge for stream %s: %s; trying again in %.0fs",
                        self.stream,
                        exc,
                        self.restart_seconds,
                    )
                    await _sleep_unless(should_stop, self.restart_seconds)
                except ProducerFenced:
                    log.warning(
                        "another bridge took over stream %s; trying again in %.0fs",
                        self.stream,
                        self.fenced_restart_seconds,
                    )
                    await _sleep_unless(should_stop, self.fenced_restart_seconds)
                except Exception:
                    log.exception(
                        "bridge for stream %s failed; restarting from its checkpoints in %.0fs",
                        self.stream,
                        self.restart_seconds,
                    )
                    await _sleep_unless(should_stop, self.restart_seconds)
        finally:
            self.summary.seconds = time.monotonic() - started
        return self.summary

    async def drain(self) -> BridgeSummary:
        """Copy what the stream holds now (finishing closed shards first), then return."""
        started = time.monotonic()
        try:
            await self._session(lambda: False, once=True)
        finally:
            self.summary.seconds = time.monotonic() - started
        return self.summary

    # --- one session: a producer, the checkpoints it read, cursors -----------------------
    def _producer(self) -> AIOKafkaProducer:
        return kafka.producer(
            self.settings,
            transactional_id=f"{self.settings.app_id}-bridge-{self.stream}",
            # A pass takes well under a second. The timeout is how long the open transaction
            # of a bridge killed mid-pass holds back read_committed consumers (the workers) if
            # no new bridge fences it sooner.
            transaction_timeout_ms=30_000,
            linger_ms=5,
        )

    async def _session(self, should_stop: Callable[[], bool], *, once: bool) -> None:
        producer = self._producer()
        # Starting the producer fences any older bridge of this stream and aborts its open
        # transaction, so the checkpoints read next are final: nothing can commit behind them.
        await producer.start()
        try:
            checkpoints = await load_checkpoints(self.settings, self.stream)
            # Kinesis calls are retried here, with backoff; botocore's own retries would only
            # stack a second, invisible delay on top.
            async with aws_client(
                self.settings, "kinesis", retries={"max_attempts": 1, "mode": "standard"}
            ) as kinesis:
                await self._copy(kinesis, producer, checkpoints, should_stop, once=once)
        finally:
            await producer.stop()

    async def _copy(
        self,
        kinesis: Any,
        producer: AIOKafkaProducer,
        checkpoints: dict[str, ShardCheckpoint],
        should_stop: Callable[[], bool],
        *,
        once: bool,
    ) -> None:
        finished = {shard for shard, checkpoint in checkpoints.items() if checkpoint.finished}
        cursors: dict[str, Cursor] = {}
        shards = await self.reader.list_shards(kinesis)
        listed_at = time.monotonic()
        last_progress_log = time.monotonic()
        log.info(
            "bridge for stream %s: %d shards, %d finished before, %d resuming from a checkpoint",
            self.stream,
            len(shards),
            len(finished & shards.keys()),
            sum(1 for s, c in checkpoints.items() if not c.finished and s in shards),
        )
        passed_at = 0.0
        while not should_stop():
            if (
                not once
                and time.monotonic() - listed_at > self.settings.bridge_shard_refresh_seconds
            ):
                shards = await self.reader.list_shards(kinesis)
                listed_at = time.monotonic()
            readable = readable_shards(shards.values(), finished)
            for shard_id in readable:
                cursor = cursors.get(shard_id)
                if cursor is None:
                    checkpoint = checkpoints.get(shard_id)
                    cursors[shard_id] = Cursor(
                        shard=shards[shard_id],
                        position=checkpoint.sequenceNumber if checkpoint else None,
                    )
                else:
                    cursor.shard = shards[shard_id]  # a refreshed listing may have closed it
            if once and all(cursors[s].caught_up for s in readable):
                break
            # Kinesis serves 5 GetRecords a shard a second: a pass at most every 200 ms (more
            # calls are throttled), which also keeps transactions, and so the transaction
            # markers every score partition receives, to about 5 a second.
            if not once:
                await _sleep_unless(
                    should_stop, passed_at + self.settings.bridge_pass_seconds - time.monotonic()
                )
            passed_at = time.monotonic()
            reads = await asyncio.gather(
                *(self._read(kinesis, cursors[shard_id]) for shard_id in readable)
            )
            batch = pass_batch(self.settings, self.stream, reads)
            if not batch.empty:
                await self._commit(producer, batch)
            self._advance(batch, cursors, finished)
            if batch.finished:
                log.info(
                    "stream %s: shard(s) %s drained; waiting: %s",
                    self.stream,
                    ", ".join(sorted(batch.finished)),
                    ", ".join(waiting_shards(shards.values(), finished)) or "none",
                )
                if not once:  # a reshard's children may not have been listed yet
                    shards = await self.reader.list_shards(kinesis)
                    listed_at = time.monotonic()
            if time.monotonic() - last_progress_log > PROGRESS_LOG_SECONDS:
                last_progress_log = time.monotonic()
                self._log_progress(cursors, readable)
            idle = all(read.cursor.caught_up for read in reads) and not batch.finished
            if idle and not once:
                await _sleep_unless(should_stop, self.settings.bridge_poll_seconds)

    # --- Kinesis (kinesis_shards.py) and Kafka (kinesis_commits.py) ---------------------
    async def _read(self, kinesis: Any, cursor: Cursor) -> ShardRead:
        self.summary.shards_read.add(cursor.shard.shard_id)
        return await self.reader.read(kinesis, cursor)

    async def _commit(self, producer: AIOKafkaProducer, batch: PassBatch) -> None:
        await commit_pass(self.settings, producer, batch)
        copied = batch.valid + batch.invalid
        RECORDS_IN.labels("bridge").inc(copied)
        RECORDS_OUT.labels("bridge").inc(batch.valid)
        DEAD_LETTERS.labels(DEAD_LETTER_KIND).inc(batch.invalid)
        self.summary.records += copied
        self.summary.valid += batch.valid
        self.summary.invalid += batch.invalid
        self.summary.finished_shards |= batch.finished
        if self._on_commit is not None:
            await self._on_commit(self.summary)

    def _advance(self, batch: PassBatch, cursors: dict[str, Cursor], finished: set[str]) -> None:
        """Move the cursors past what was committed (or read empty)."""
        for read in batch.reads:
            cursor = read.cursor
            shard_id = cursor.shard.shard_id
            if read.records:
                cursor.position = read.records[-1]["SequenceNumber"]
            cursor.iterator = read.next_iterator
            cursor.caught_up = not read.records and read.millis_behind == 0
            if shard_id in batch.finished:
                finished.add(shard_id)
                cursors.pop(shard_id, None)
                BRIDGE_MILLIS_BEHIND.remove(self.stream, shard_id)

    def _log_progress(self, cursors: dict[str, Cursor], readable: list[str]) -> None:
        positions = {
            shard_id: cursor.position
            for shard_id, cursor in cursors.items()
            if shard_id in readable
        }
        log.info(
            "stream %s: %d records copied (%d valid, %d invalid); reading %s",
            self.stream,
            self.summary.records,
            self.summary.valid,
            self.summary.invalid,
            ", ".join(f"{shard} after {position}" for shard, position in sorted(positions.items()))
            or "no shard",
        )


async def _sleep_unless(should_stop: Callable[[], bool], seconds: float) -> None:
    """Sleep in short slices so a stop request is noticed within a fraction of a second."""
    deadline = time.monotonic() + seconds
    while not should_stop():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        await asyncio.sleep(min(left, 0.2))
