"""Where the worker's consumer resumes partitions, on the real broker.

Faust drops records it fetched while its flow was stopped and relies on seeking back to the
committed offsets afterwards. aiokafka's ``seek_to_committed`` skips a partition committed
at 0 or not at all, so right after ``replay --to earliest`` dropped records were not read
again; the first test pins that down (if aiokafka changes it, it fails). The worker's
transport seeks every stream partition itself, to the earlier of the committed offset and
the position the state recorded (``vfstream.stream.transport``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from vfstream import kafka
from vfstream.settings import Settings
from vfstream.stream.transport import seek_to_resume_offsets

pytestmark = pytest.mark.integration


async def produce(settings: Settings, topic: str, partition: int, count: int) -> None:
    producer = kafka.producer(settings)
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
    consumer = kafka.consumer(
        isolated,
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


async def test_resume_seeks_committed_at_zero_or_never_and_not_past_the_recorded_position(
    isolated: Settings, consumer: AIOKafkaConsumer
) -> None:
    topic = isolated.score_records_topic
    at_zero, never = TopicPartition(topic, 0), TopicPartition(topic, 1)
    ahead, behind = TopicPartition(topic, 2), TopicPartition(topic, 3)
    tps = (at_zero, never, ahead, behind)
    for tp in tps:
        await produce(isolated, topic, tp.partition, 10)
    consumer.assign(list(tps))
    # ``ahead``: committed past the records the state holds (recorded 3); ``behind``: a
    # replay moved the committed offset back before the recorded position.
    await consumer.commit({at_zero: 0, ahead: 8, behind: 2})
    await read_all(consumer, *tps, count=10)

    resumed = await seek_to_resume_offsets(consumer, {ahead: 3, behind: 6}, lambda tp: False)

    assert resumed == {at_zero: 0, never: None, ahead: 3, behind: 2}
    assert [await consumer.position(tp) for tp in tps] == [0, 0, 3, 2]
    records = await consumer.getmany(ahead, timeout_ms=5000)
    assert records[ahead][0].offset == 3


async def test_changelog_partitions_are_left_to_table_recovery(
    isolated: Settings, consumer: AIOKafkaConsumer
) -> None:
    topic = isolated.score_records_topic
    changelog = TopicPartition(topic, 4)
    await produce(isolated, topic, changelog.partition, 5)
    consumer.assign([changelog])
    await read_all(consumer, changelog, count=5)

    resumed = await seek_to_resume_offsets(consumer, {changelog: 1}, lambda tp: tp == changelog)

    assert resumed == {changelog: None}
    assert await consumer.position(changelog) == 5
