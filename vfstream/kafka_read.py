"""Reading committed topic contents from the start, as a downstream consumer would."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from vfstream.settings import Settings
from vfstream.topics import partition_count


async def read_committed(settings: Settings, topic: str) -> list[ConsumerRecord]:
    """Every committed message of ``topic`` up to its current end, all partitions."""
    count = await partition_count(settings, topic)
    if count == 0:
        raise LookupError(f"topic {topic} does not exist")
    partitions = [TopicPartition(topic, p) for p in range(count)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        out: list[ConsumerRecord] = []
        remaining = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            for messages in batches.values():
                out.extend(messages)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
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
