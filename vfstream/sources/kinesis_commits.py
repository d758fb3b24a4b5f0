"""The Kafka side of the bridge (``kinesis_bridge``): a pass's Kinesis records converted
to score records and dead letters, and sent with each shard's new checkpoint in **one
Kafka transaction**, so records and checkpoints commit together; the checkpoints read
back when a session starts.

A shard's checkpoint is written when the pass read records from it or drained it (a
reshard's parent, closed and read to its end, is ``finished``: its children may be read).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from vfstream.domain.batches import BatchBuilder
from vfstream.domain.keys import partition_for
from vfstream.domain.kinesis_feed import FeedPosition, FeedRejection, parse_feed_record
from vfstream.domain.shards import ShardCheckpoint, checkpoint_key, drained_by_position
from vfstream.kafka.reads import latest_values
from vfstream.settings import Settings
from vfstream.sources.kinesis_shards import BridgeError, ShardRead


@dataclass
class PassBatch:
    """One pass's messages for the transaction, and what to apply once it commits."""

    records: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[tuple[bytes, bytes]] = field(default_factory=list)
    checkpoints: list[ShardCheckpoint] = field(default_factory=list)
    reads: list[ShardRead] = field(default_factory=list)
    finished: set[str] = field(default_factory=set)
    valid: int = 0
    invalid: int = 0

    @property
    def empty(self) -> bool:
        return not (self.records or self.dead_letters or self.checkpoints)


async def load_checkpoints(settings: Settings, stream: str) -> dict[str, ShardCheckpoint]:
    """The stream's committed checkpoints, by shard."""
    topic = settings.bridge_checkpoints_topic
    try:
        table = await latest_values(settings, topic)
    except LookupError as exc:
        raise BridgeError(
            f"the checkpoints topic {topic} does not exist; run `vfstream dev provision`"
        ) from exc
    prefix = checkpoint_key(stream, "").encode()
    loaded = {}
    for key, (_, value) in table.items():
        if key.startswith(prefix):
            checkpoint = ShardCheckpoint.model_validate_json(value)
            loaded[checkpoint.shardId] = checkpoint
    return loaded


def pass_batch(settings: Settings, stream: str, reads: list[ShardRead]) -> PassBatch:
    """A pass's reads as the transaction's messages: records, dead letters, checkpoints."""
    batch = PassBatch(reads=reads)
    now = datetime.now(UTC)
    for read in reads:
        shard_id = read.cursor.shard.shard_id
        position = read.cursor.position
        for entry in read.records:
            sequence = entry["SequenceNumber"]
            where = FeedPosition(
                stream=stream,
                shardId=shard_id,
                sequenceNumber=sequence,
                partitionKey=entry.get("PartitionKey") or "",
                arrivedAt=entry.get("ApproximateArrivalTimestamp") or now,
            )
            result = parse_feed_record(bytes(entry["Data"]), where, settings.limits)
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
                    stream=stream,
                    shardId=shard_id,
                    sequenceNumber=position,
                    finished=drained,
                    updated=now,
                )
            )
    return batch


async def commit_pass(settings: Settings, producer: AIOKafkaProducer, batch: PassBatch) -> None:
    """The batch's messages in one transaction of ``producer`` (transactional, started)."""
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


def _consume_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
