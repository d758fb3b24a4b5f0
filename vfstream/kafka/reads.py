"""Reading topics as a downstream consumer would: committed contents from the start
(``read_committed``), a compacted topic as a table (``latest_values``), the newest records
(``tail``), offsets and whether a range holds records. Sources read their own topics with
these (the ingested-files markers, in-flight announcements, the bridge's checkpoints), and
so do the operator's commands (``vfstream.ops``); nothing here knows what a topic holds."""

from __future__ import annotations

import logging
import time

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from vfstream.kafka.clients import consumer as kafka_consumer
from vfstream.settings import Settings
from vfstream.topics import partition_count

log = logging.getLogger(__name__)

# A transaction still open this long (a producer that died mid-transaction, until the broker
# times it out or a successor fences it) is left unread rather than waited for.
OPEN_TRANSACTION_GRACE_SECONDS = 10.0


def _reader(settings: Settings, isolation_level: str) -> AIOKafkaConsumer:
    """A group-less consumer that only reads (partitions are assigned, nothing committed)."""
    return kafka_consumer(
        settings,
        isolation_level=isolation_level,
        enable_auto_commit=False,
    )


async def _high_watermarks(
    settings: Settings, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    consumer = _reader(settings, "read_uncommitted")
    await consumer.start()
    try:
        return await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()


async def offset_range(
    settings: Settings, topic: str
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """Each partition's first offset and high watermark."""
    count = await partition_count(settings, topic)
    partitions = [TopicPartition(topic, p) for p in range(count)]
    consumer = _reader(settings, "read_uncommitted")
    await consumer.start()
    try:
        if not partitions:
            return {}, {}
        starts = await consumer.beginning_offsets(partitions)
        return starts, await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()


async def _partitions_and_ends(
    settings: Settings, topic: str
) -> tuple[list[TopicPartition], dict[TopicPartition, int]]:
    """Every partition of ``topic`` and its high watermark; LookupError when it is missing."""
    count = await partition_count(settings, topic)
    if count == 0:
        raise LookupError(f"topic {topic} does not exist")
    partitions = [TopicPartition(topic, p) for p in range(count)]
    return partitions, await _high_watermarks(settings, partitions)


async def holding_records(
    settings: Settings,
    ranges: dict[TopicPartition, tuple[int, int]],
    *,
    timeout: float = 3.0,
) -> set[TopicPartition]:
    """The partitions with a committed record in ``[start, end)``.

    A transactional producer ends every transaction with a commit marker: an offset with
    no record. A group that has read everything commits the offset after its last record,
    one short of the end, so end minus committed is not yet lag; this tells the two apart.
    """
    wanted = {tp: span for tp, span in ranges.items() if span[0] < span[1]}
    if not wanted:
        return set()
    consumer = _reader(settings, "read_committed")
    await consumer.start()
    found: set[TopicPartition] = set()
    try:
        consumer.assign(list(wanted))
        for tp, (start, _) in wanted.items():
            consumer.seek(tp, start)
        remaining = set(wanted)
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            batches = await consumer.getmany(*remaining, timeout_ms=200, max_records=1)
            for tp, messages in batches.items():
                if any(m.offset < wanted[tp][1] for m in messages):
                    found.add(tp)
                    remaining.discard(tp)
            for tp in list(remaining):
                if await consumer.position(tp) >= wanted[tp][1]:
                    remaining.discard(tp)
        # Not proven empty in time (an open transaction, a slow broker): count it as lag.
        return found | remaining
    finally:
        await consumer.stop()


async def read_committed(
    settings: Settings,
    topic: str,
    *,
    open_transaction_grace: float = OPEN_TRANSACTION_GRACE_SECONDS,
) -> list[ConsumerRecord]:
    """Every message of ``topic`` committed before the call, all partitions.

    A producer's commit returns before the broker has written the commit markers to every
    partition, and a read_committed consumer's end offset (the last stable offset) stays
    short of such a transaction until its marker lands. Reading only to that end loses the
    newest transaction now and then, so this reads up to the high watermark instead and
    lets the markers arrive; only a transaction that stays open is left out, with a warning.
    """
    partitions, ends = await _partitions_and_ends(settings, topic)
    consumer = _reader(settings, "read_committed")
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        out: list[ConsumerRecord] = []
        remaining = {tp for tp in partitions if ends[tp] > 0}
        positions = {tp: -1 for tp in remaining}
        last_progress = time.monotonic()
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500)
            for messages in batches.values():
                out.extend(messages)
            for tp in list(remaining):
                position = await consumer.position(tp)
                if position != positions[tp]:
                    positions[tp] = position
                    last_progress = time.monotonic()
                if position >= ends[tp]:
                    remaining.discard(tp)
            if remaining and time.monotonic() - last_progress > open_transaction_grace:
                log.warning(
                    "%s: stopped reading at partition@offset %s; a transaction there is still open",
                    topic,
                    ", ".join(f"{tp.partition}@{positions[tp]}" for tp in remaining),
                )
                break
        return out
    finally:
        await consumer.stop()


async def latest_values(settings: Settings, topic: str) -> dict[bytes, tuple[int, bytes]]:
    """A compacted topic as a table: key -> (partition, last value); tombstones drop keys."""
    table: dict[bytes, tuple[int, bytes]] = {}
    for message in await read_committed(settings, topic):
        if message.key is None:
            continue
        if message.value is None:
            table.pop(message.key, None)
        else:
            table[message.key] = (message.partition, message.value)
    return table


async def tail(
    settings: Settings,
    topic: str,
    per_partition: int,
    *,
    open_transaction_grace: float = 2.0,
) -> list[ConsumerRecord]:
    """The last ``per_partition`` committed messages of each partition of ``topic``."""
    partitions, ends = await _partitions_and_ends(settings, topic)
    consumer = _reader(settings, "read_committed")
    await consumer.start()
    try:
        starts = await consumer.beginning_offsets(partitions)
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, max(starts[tp], ends[tp] - per_partition))
        out: list[ConsumerRecord] = []
        remaining = {tp for tp in partitions if ends[tp] > starts[tp]}
        deadline = time.monotonic() + open_transaction_grace + 5
        while remaining and time.monotonic() < deadline:
            batches = await consumer.getmany(*remaining, timeout_ms=200)
            for messages in batches.values():
                out.extend(messages)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()
