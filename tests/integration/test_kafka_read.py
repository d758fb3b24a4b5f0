"""Reading a topic's committed contents right after transactions end, on the real broker."""

from __future__ import annotations

import time
import uuid

from aiokafka import AIOKafkaProducer

from vfstream import kafka
from vfstream.kafka.reads import read_committed
from vfstream.settings import Settings


def transactional(settings: Settings) -> AIOKafkaProducer:
    return kafka.producer(
        settings,
        transactional_id=f"{settings.app_id}-reader-test-{uuid.uuid4().hex[:6]}",
        transaction_timeout_ms=60_000,
    )


async def test_a_transaction_is_readable_as_soon_as_its_commit_returns(isolated: Settings) -> None:
    # The commit markers are written after the commit returns; reading at once used to stop
    # at the last stable offset and miss the newest transaction now and then.
    topic = isolated.score_records_topic
    producer = transactional(isolated)
    await producer.start()
    try:
        expected: list[bytes] = []
        for round_ in range(15):
            async with producer.transaction():
                for n in range(12):
                    value = f"r{round_}-{n}".encode()
                    await producer.send(topic, value, key=value)
                    expected.append(value)
            read = await read_committed(isolated, topic)
            assert sorted(m.value for m in read) == sorted(expected)
    finally:
        await producer.stop()


async def test_aborted_records_are_left_out(isolated: Settings) -> None:
    topic = isolated.score_records_topic
    producer = transactional(isolated)
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send(topic, b"kept", key=b"a")
        await producer.begin_transaction()
        await producer.send(topic, b"aborted", key=b"a")
        await producer.abort_transaction()
    finally:
        await producer.stop()

    assert [m.value for m in await read_committed(isolated, topic)] == [b"kept"]


async def test_an_open_transaction_is_left_out_after_the_grace(isolated: Settings) -> None:
    topic = isolated.score_records_topic
    producer = transactional(isolated)
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed", key=b"k", partition=0)
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"still open", key=b"k", partition=0)

        started = time.monotonic()
        read = await read_committed(isolated, topic, open_transaction_grace=1.0)
        waited = time.monotonic() - started

        assert [m.value for m in read] == [b"committed"]
        assert 1.0 <= waited < 30
        await producer.commit_transaction()
    finally:
        await producer.stop()

    assert [m.value for m in await read_committed(isolated, topic)] == [b"committed", b"still open"]
