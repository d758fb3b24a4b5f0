"""What the worker's consumer does when Faust seeks back to committed offsets, on the real
broker (README, "Replay and a Faust/aiokafka seek gap").

Faust drops records it fetched while its flow was stopped and relies on seeking back to the
committed offsets afterwards. aiokafka's ``seek_to_committed`` skips a partition committed
at 0 or not at all, so right after ``replay --to earliest`` dropped records are not read
again. This pins that behaviour down: if aiokafka changes it, this test fails and the
README's caveat can go.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from vfstream.settings import Settings

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
async def consumer(isolated: Settings) -> AsyncIterator[AIOKafkaConsumer]:
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


async def test_seek_to_committed_leaves_partitions_committed_at_zero_or_never(
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

    committed = await consumer.seek_to_committed()

    assert committed == {at_zero: 0, never: None, at_four: 4}
    assert [await consumer.position(tp) for tp in (at_zero, never, at_four)] == [10, 10, 4]
