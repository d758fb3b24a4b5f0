"""Fencing dead ingests by the broker's clock (issue #21, item 8): silence is measured on
the times the broker stamped, so a live ingest on a host whose clock is wrong keeps its
transaction, and a silent one is fenced."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from vfstream import kafka
from vfstream.domain.inflight import OPEN, STALE_SECONDS, InflightIngest
from vfstream.settings import Settings
from vfstream.sources.s3.inflight import fence_dead_ingests

pytestmark = pytest.mark.integration


async def announce_behind(settings: Settings, transactional_id: str, stop: asyncio.Event) -> None:
    """A live ingest on another host whose clock is two minutes behind: it refreshes its
    announcement every second, with its own (wrong) time."""
    producer = kafka.producer(settings, acks="all")
    await producer.start()
    try:
        while not stop.is_set():
            entry = InflightIngest(
                transactional_id=transactional_id,
                state=OPEN,
                object_url="s3://vf-scoring/scrubbed/skewed.csv",
                host="another-host",
                pid=4242,
                heartbeat=time.time() - 120,
            )
            await producer.send_and_wait(
                settings.ingest_inflight_topic,
                key=transactional_id.encode(),
                value=entry.to_bytes(),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        await producer.stop()


async def test_a_live_ingest_with_a_wrong_clock_keeps_its_transaction_a_silent_one_is_fenced(
    isolated: Settings,
) -> None:
    transactional_id = f"{isolated.app_id}-ingest-skewed"
    ingest = kafka.producer(isolated, transactional_id=transactional_id)
    await ingest.start()
    stop = asyncio.Event()
    beating = asyncio.create_task(announce_behind(isolated, transactional_id, stop))
    try:
        await ingest.begin_transaction()
        await ingest.send_and_wait(isolated.dead_letter_topic, b"a row of a long file")
        for _ in range(3):  # across more than STALE_SECONDS of the ingest's life
            assert await fence_dead_ingests(isolated) == []
            await asyncio.sleep(STALE_SECONDS / 2)
        await ingest.commit_transaction()  # not fenced: the broker would refuse it

        await ingest.begin_transaction()
        await ingest.send_and_wait(isolated.dead_letter_topic, b"and then it died")
        stop.set()
        await beating
        await asyncio.sleep(STALE_SECONDS + 2)
        fenced = await fence_dead_ingests(isolated)
        assert [entry.transactional_id for entry in fenced] == [transactional_id]
        with pytest.raises(Exception):  # noqa: B017 - aiokafka's ProducerFenced, or its kin
            await ingest.commit_transaction()
    finally:
        stop.set()
        await beating
        with contextlib.suppress(Exception):
            await ingest.stop()
