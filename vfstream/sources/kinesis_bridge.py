"""The Kinesis bridge (SPEC 2.3): copies score records from a Kinesis stream to Kafka.

Each pass reads every shard that may be read now (a reshard's children only after their
parents are drained, see ``vfstream.domain.shards``), validates the records like file rows,
and produces the valid ones, the dead letters and each shard's new checkpoint in **one
Kafka transaction**. Records and checkpoints therefore commit together: a restart, a crash
or a pod moving resumes after the last committed checkpoint and neither loses nor repeats a
record. The transactional id is the stream's, so a second bridge on the same stream fences
the first one, whose open transaction is aborted.

Nothing here is tied to the Faust worker: ``KinesisBridge.run(should_stop)`` can be called
from an app task, and ``vfstream bridge`` (``vfstream.cli.pipeline``) runs it alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import ProducerFenced
from botocore.exceptions import ClientError
from tenacity import RetryCallState

from vfstream import kafka
from vfstream.aws import aws_client, is_retryable_aws_error
from vfstream.domain.batches import BatchBuilder
from vfstream.domain.keys import partition_for
from vfstream.domain.kinesis_feed import (
    DEAD_LETTER_KIND,
    FeedPosition,
    FeedRejection,
    parse_feed_record,
)
from vfstream.domain.shards import (
    ShardCheckpoint,
    ShardInfo,
    checkpoint_key,
    drained_by_position,
    readable_shards,
    waiting_shards,
)
from vfstream.errors import OperatorError
from vfstream.kafka.reads import latest_values
from vfstream.metrics import (
    BRIDGE_AWS_RETRIES,
    BRIDGE_MILLIS_BEHIND,
    DEAD_LETTERS,
    RECORDS_IN,
    RECORDS_OUT,
)
from vfstream.retry import Backoff, retrying
from vfstream.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

# Kinesis answers these when a shard or the account is over its limits, or it is unwell;
# waiting helps. Anything else (no such stream, bad arguments) would fail again.
EXPIRED_ITERATOR = "ExpiredIteratorException"
PROGRESS_LOG_SECONDS = 30.0


class BridgeError(OperatorError):
    """The bridge cannot go on (no such stream, no checkpoints topic)."""


def _error_code(exc: BaseException) -> str | None:
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code")
    return None


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


@dataclass
class _Cursor:
    """Where the bridge is in one shard: the committed position and the iterator past it."""

    shard: ShardInfo
    position: str | None  # the last committed sequence number
    iterator: str | None = None  # only ever points just past ``position``
    caught_up: bool = False  # the last read found nothing and nothing newer exists


@dataclass
class _ShardRead:
    cursor: _Cursor
    records: list[dict[str, Any]]
    next_iterator: str | None
    millis_behind: int


@dataclass
class _Batch:
    """One pass's messages for the transaction, and what to apply once it commits."""

    records: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[tuple[bytes, bytes]] = field(default_factory=list)
    checkpoints: list[ShardCheckpoint] = field(default_factory=list)
    reads: list[_ShardRead] = field(default_factory=list)
    finished: set[str] = field(default_factory=set)
    valid: int = 0
    invalid: int = 0

    @property
    def empty(self) -> bool:
        return not (self.records or self.dead_letters or self.checkpoints)


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
            checkpoints = await self._load_checkpoints()
            # Kinesis calls are retried here, with backoff; botocore's own retries would only
            # stack a second, invisible delay on top.
            async with aws_client(
                self.settings, "kinesis", retries={"max_attempts": 1, "mode": "standard"}
            ) as kinesis:
                await self._copy(kinesis, producer, checkpoints, should_stop, once=once)
        finally:
            await producer.stop()

    async def _load_checkpoints(self) -> dict[str, ShardCheckpoint]:
        topic = self.settings.bridge_checkpoints_topic
        try:
            table = await latest_values(self.settings, topic)
        except LookupError as exc:
            raise BridgeError(
                f"the checkpoints topic {topic} does not exist; run `vfstream dev provision`"
            ) from exc
        prefix = checkpoint_key(self.stream, "").encode()
        loaded = {}
        for key, (_, value) in table.items():
            if key.startswith(prefix):
                checkpoint = ShardCheckpoint.model_validate_json(value)
                loaded[checkpoint.shardId] = checkpoint
        return loaded

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
        cursors: dict[str, _Cursor] = {}
        shards = await self._list_shards(kinesis)
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
                shards = await self._list_shards(kinesis)
                listed_at = time.monotonic()
            readable = readable_shards(shards.values(), finished)
            for shard_id in readable:
                cursor = cursors.get(shard_id)
                if cursor is None:
                    checkpoint = checkpoints.get(shard_id)
                    cursors[shard_id] = _Cursor(
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
            batch = self._batch(reads)
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
                    shards = await self._list_shards(kinesis)
                    listed_at = time.monotonic()
            if time.monotonic() - last_progress_log > PROGRESS_LOG_SECONDS:
                last_progress_log = time.monotonic()
                self._log_progress(cursors, readable)
            idle = all(read.cursor.caught_up for read in reads) and not batch.finished
            if idle and not once:
                await _sleep_unless(should_stop, self.settings.bridge_poll_seconds)

    # --- Kinesis --------------------------------------------------------------------------
    async def _call(self, name: str, operation: Callable[..., Awaitable[T]], **arguments: Any) -> T:
        """One Kinesis call, retried with exponential backoff and jitter while that can help."""

        def count_retry(state: RetryCallState) -> None:
            BRIDGE_AWS_RETRIES.labels(name).inc()
            outcome = state.outcome
            log.warning(
                "Kinesis %s on stream %s failed (attempt %d of %d), retrying: %s",
                name,
                self.stream,
                state.attempt_number,
                self.aws_attempts,
                outcome.exception() if outcome else "?",
            )

        async for attempt in retrying(
            is_retryable_aws_error,
            attempts=self.aws_attempts,
            backoff=Backoff(self.aws_backoff_seconds, 10.0),
            before_sleep=count_retry,
        ):
            with attempt:
                return await operation(**arguments)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _list_shards(self, kinesis: Any) -> dict[str, ShardInfo]:
        shards: dict[str, ShardInfo] = {}
        token: str | None = None
        while True:
            # Kinesis refuses StreamName beside a NextToken: the token names the stream.
            arguments = {"NextToken": token} if token else {"StreamName": self.stream}
            try:
                answer = await self._call("ListShards", kinesis.list_shards, **arguments)
            except ClientError as exc:
                if _error_code(exc) == "ResourceNotFoundException":
                    raise BridgeError(f"Kinesis stream {self.stream} does not exist") from exc
                raise
            for entry in answer.get("Shards", []):
                shard = ShardInfo.from_listing(entry)
                shards[shard.shard_id] = shard
            token = answer.get("NextToken")
            if not token:
                return shards

    async def _iterator(self, kinesis: Any, cursor: _Cursor) -> str:
        arguments: dict[str, Any] = {"StreamName": self.stream, "ShardId": cursor.shard.shard_id}
        if cursor.position is None:
            arguments["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            arguments["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
            arguments["StartingSequenceNumber"] = cursor.position
        answer = await self._call("GetShardIterator", kinesis.get_shard_iterator, **arguments)
        return answer["ShardIterator"]

    async def _read(self, kinesis: Any, cursor: _Cursor) -> _ShardRead:
        self.summary.shards_read.add(cursor.shard.shard_id)
        for _ in range(2):
            if cursor.iterator is None:
                cursor.iterator = await self._iterator(kinesis, cursor)
            try:
                answer = await self._call(
                    "GetRecords",
                    kinesis.get_records,
                    ShardIterator=cursor.iterator,
                    Limit=self.settings.bridge_batch_records,
                )
            except ClientError as exc:
                # Iterators live five minutes; a fresh one from the committed position loses
                # nothing.
                if _error_code(exc) != EXPIRED_ITERATOR:
                    raise
                cursor.iterator = None
                continue
            millis_behind = int(answer.get("MillisBehindLatest") or 0)
            BRIDGE_MILLIS_BEHIND.labels(self.stream, cursor.shard.shard_id).set(millis_behind)
            return _ShardRead(
                cursor=cursor,
                records=answer.get("Records") or [],
                next_iterator=answer.get("NextShardIterator"),
                millis_behind=millis_behind,
            )
        raise BridgeError(f"shard {cursor.shard.shard_id}: a fresh shard iterator expired at once")

    # --- Kafka ----------------------------------------------------------------------------
    def _batch(self, reads: list[_ShardRead]) -> _Batch:
        batch = _Batch(reads=reads)
        now = datetime.now(UTC)
        for read in reads:
            shard_id = read.cursor.shard.shard_id
            position = read.cursor.position
            for entry in read.records:
                sequence = entry["SequenceNumber"]
                where = FeedPosition(
                    stream=self.stream,
                    shardId=shard_id,
                    sequenceNumber=sequence,
                    partitionKey=entry.get("PartitionKey") or "",
                    arrivedAt=entry.get("ApproximateArrivalTimestamp") or now,
                )
                result = parse_feed_record(bytes(entry["Data"]), where, self.settings.limits)
                if isinstance(result, FeedRejection):
                    batch.invalid += 1
                    batch.dead_letters.append((result.key.encode(), result.to_json()))
                else:
                    batch.valid += 1
                    batch.records.append((result.key.encode(), result.to_json()))
                position = sequence
            drained = read.next_iterator is None or drained_by_position(read.cursor.shard, position)
            if drained:
                batch.finished.add(shard_id)
            if read.records or drained:
                batch.checkpoints.append(
                    ShardCheckpoint(
                        stream=self.stream,
                        shardId=shard_id,
                        sequenceNumber=position,
                        finished=drained,
                        updated=now,
                    )
                )
        return batch

    async def _commit(self, producer: AIOKafkaProducer, batch: _Batch) -> None:
        settings = self.settings
        # Score records travel as score batches, one per table partition, like an ingest's.
        partitions = settings.topic_partitions
        builder = BatchBuilder(max_records=settings.score_batch_records)
        score_batches: list[tuple[int, bytes]] = []
        for key, value in batch.records:
            partition = partition_for(key, partitions)
            done = builder.add(partition, value)
            if done is not None:
                score_batches.append((partition, done))
        score_batches.extend(builder.drain())
        messages: list[tuple[str, bytes | None, bytes, int | None]] = [
            *((settings.score_records_topic, None, value, p) for p, value in score_batches),
            *((settings.dead_letter_topic, key, value, None) for key, value in batch.dead_letters),
            *(
                (settings.bridge_checkpoints_topic, c.key.encode(), c.to_json(), None)
                for c in batch.checkpoints
            ),
        ]
        async with producer.transaction():
            sent = []
            for topic, key, value, partition in messages:
                delivery = await producer.send(topic, value, key=key, partition=partition)
                # When one send fails (fenced, say) the others fail too and are never awaited;
                # reading their outcome here keeps asyncio from reporting each of them.
                delivery.add_done_callback(_consume_outcome)
                sent.append(delivery)
            await asyncio.gather(*sent)
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

    def _advance(self, batch: _Batch, cursors: dict[str, _Cursor], finished: set[str]) -> None:
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

    def _log_progress(self, cursors: dict[str, _Cursor], readable: list[str]) -> None:
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


def _consume_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def _sleep_unless(should_stop: Callable[[], bool], seconds: float) -> None:
    """Sleep in short slices so a stop request is noticed within a fraction of a second."""
    deadline = time.monotonic() + seconds
    while not should_stop():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        await asyncio.sleep(min(left, 0.2))
