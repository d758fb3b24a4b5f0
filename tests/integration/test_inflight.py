"""Fencing dead ingests by the broker's clock (issue #21, item 8): silence is measured on
the times the broker stamped, so a live ingest on a host whose clock is wrong keeps its
transaction, and a silent one is fenced."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import pytest

from vfstream import kafka
from vfstream.domain.inflight import CLOSED, OPEN, STALE_SECONDS, InflightIngest
from vfstream.settings import Settings
from vfstream.sources.s3.inflight import InflightFencer, fence_dead_ingests

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


async def test_a_long_lived_fencer_reads_only_what_was_appended_since_its_last_look(
    isolated: Settings,
) -> None:
    """A worker's listener fences between polls and before each file. It read the whole
    in-flight topic each time (every announcement, heartbeat and probe since the last
    compaction), so its idle CPU grew with every file ever ingested. Its fencer now reads
    only what was appended since it last looked, and keeps only open announcements."""
    producer = kafka.producer(isolated, acks="all")
    await producer.start()
    fencer = InflightFencer(isolated)
    sent: list[asyncio.Future] = []
    try:
        for n in range(300):  # files ingested long ago: announced, then closed
            for state in (OPEN, CLOSED):
                entry = InflightIngest(
                    transactional_id=f"{isolated.app_id}-ingest-old{n}",
                    state=state,
                    object_url=f"s3://vf-scoring/scrubbed/old{n}.csv",
                    host="another-host",
                    pid=n + 1,
                    heartbeat=time.time(),
                )
                sent.append(
                    await producer.send(
                        isolated.ingest_inflight_topic,
                        key=entry.transactional_id.encode(),
                        value=entry.to_bytes(),
                    )
                )
        await asyncio.gather(*sent)

        assert await fencer.fence() == []
        assert fencer.records_read >= 601  # the history once, and its own probe
        assert fencer.open_announcements == 0  # closed ones are forgotten
        for _ in range(3):
            before = fencer.records_read
            assert await fencer.fence() == []
            assert fencer.records_read - before == 1  # its new probe alone

        # An ingest of this host dies after the fencer's last look: the next look sees it.
        gone = await asyncio.create_subprocess_exec("true")
        await gone.wait()
        dead = InflightIngest(
            transactional_id=f"{isolated.app_id}-ingest-died",
            state=OPEN,
            object_url="s3://vf-scoring/scrubbed/died.csv",
            host=socket.gethostname(),
            pid=gone.pid,
            heartbeat=time.time(),
        )
        await producer.send_and_wait(
            isolated.ingest_inflight_topic,
            key=dead.transactional_id.encode(),
            value=dead.to_bytes(),
        )
        before = fencer.records_read
        fenced = await fencer.fence()
        assert [entry.transactional_id for entry in fenced] == [dead.transactional_id]
        assert fencer.records_read - before == 2  # the announcement and the probe
        assert fencer.open_announcements == 0
    finally:
        await fencer.stop()
        await producer.stop()
