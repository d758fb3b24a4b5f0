"""The worker's consumer seeks back to committed offsets exactly, on the real broker.

Faust drops records it fetched while its flow was stopped and seeks back to the committed
offsets afterwards; aiokafka's own seek skips a partition committed at 0 or not at all.
"""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from vfstream.settings import Settings
from vfstream.transport import seek_to_committed_offsets

pytestmark = pytest.mark.integration


async def produce(settings: Settings, topic: str, partition: int, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for n in range(count):
            await producer.send(topic, f"r{n}".encode(), partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


async def read_all(consumer: AIOKafkaConsumer, *tps: TopicPartition, count: int) -> None:
    """Fetch until each partition's position is at ``count``, as Faust's fetcher would."""
    for tp in tps:
        while await consumer.position(tp) < count:
            await consumer.getmany(tp, timeout_ms=500)


@pytest.fixture
async def consumer(isolated: Settings):
    consumer = AIOKafkaConsumer(
        bootstrap_servers=isolated.kafka_bootstrap,
        group_id=f"seek-test-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def test_partitions_committed_at_zero_or_never_go_back_to_the_start(
    isolated: Settings, consumer: AIOKafkaConsumer
) -> None:
    topic = isolated.score_records_topic
    at_zero, never = TopicPartition(topic, 0), TopicPartition(topic, 1)
    at_four = TopicPartition(topic, 2)
    for tp in (at_zero, never, at_four):
        await produce(isolated, topic, tp.partition, 10)
    consumer.assign([at_zero, never, at_four])
    await consumer.commit({at_zero: 0, at_four: 4})
    await read_all(consumer, at_zero, never, at_four, count=10)

    # What the workaround is for: aiokafka leaves offset-0 and uncommitted partitions alone.
    await consumer.seek_to_committed()
    assert [await consumer.position(tp) for tp in (at_zero, never, at_four)] == [10, 10, 4]

    await read_all(consumer, at_four, count=10)
    committed = await seek_to_committed_offsets(consumer, lambda tp: False)

    assert committed == {at_zero: 0, never: None, at_four: 4}
    assert [await consumer.position(tp) for tp in (at_zero, never, at_four)] == [0, 0, 4]
    records = await consumer.getmany(at_zero, timeout_ms=5000)
    assert records[at_zero][0].offset == 0


async def test_changelog_partitions_are_left_to_table_recovery(
    isolated: Settings, consumer: AIOKafkaConsumer
) -> None:
    topic = isolated.score_records_topic
    changelog = TopicPartition(topic, 3)
    await produce(isolated, topic, changelog.partition, 5)
    consumer.assign([changelog])
    await read_all(consumer, changelog, count=5)

    await seek_to_committed_offsets(consumer, lambda tp: tp == changelog)

    assert await consumer.position(changelog) == 5
