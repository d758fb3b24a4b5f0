"""Announcing ingest transactions, and fencing those of dead ingests (see
``vfstream.domain.inflight`` for why).

``InflightAnnouncer`` runs beside one ingest: it announces the transaction, refreshes the
announcement every ``HEARTBEAT_SECONDS`` and closes it when the transaction ends.
``fence_dead_ingests`` is called by every ingest before it starts and by every worker's
notification listener between polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaProducer

from vfstream import kafka
from vfstream.domain.inflight import (
    CLOSED,
    HEARTBEAT_SECONDS,
    OPEN,
    InflightIngest,
    dead_ingests,
)
from vfstream.kafka.reads import read_committed
from vfstream.metrics import FENCED_INGESTS
from vfstream.settings import Settings

log = logging.getLogger(__name__)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _producer(settings: Settings) -> AIOKafkaProducer:
    return kafka.producer(settings, acks="all", enable_idempotence=True)


class InflightAnnouncer:
    def __init__(self, settings: Settings, transactional_id: str, object_url: str) -> None:
        self.settings = settings
        self.transactional_id = transactional_id
        self.object_url = object_url
        self._producer = _producer(settings)

    def _entry(self, state: str) -> InflightIngest:
        return InflightIngest(
            transactional_id=self.transactional_id,
            state=state,
            object_url=self.object_url,
            host=socket.gethostname(),
            pid=os.getpid(),
            heartbeat=time.time(),
        )

    async def _announce(self, state: str) -> None:
        await self._producer.send_and_wait(
            self.settings.ingest_inflight_topic,
            key=self.transactional_id.encode(),
            value=self._entry(state).to_bytes(),
        )

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Announce, refresh while the body runs, close after it (however it ends)."""
        await self._producer.start()
        try:
            await self._announce(OPEN)
            beat = asyncio.create_task(self._beat())
            try:
                yield
            finally:
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._announce(CLOSED))
        finally:
            with contextlib.suppress(Exception):
                await self._producer.stop()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self._announce(OPEN)
            except Exception:  # the broker is slow or away: the next beat tries again
                log.warning("could not refresh the ingest announcement", exc_info=True)


# The key of the clock probe on the in-flight topic (compacted: one record, overwritten).
CLOCK_PROBE_KEY = b"#clock"


async def broker_announcements(
    settings: Settings, producer: AIOKafkaProducer
) -> tuple[float, list[InflightIngest]]:
    """The open and closed announcements, each timed by the broker, and the broker's now.

    Silence is measured on one clock, the broker's: the topic stamps each record on append
    (``message.timestamp.type=LogAppendTime``), and a probe written just before reading
    tells what time it is there. Comparing an ingest's own wall clock with the fencer's
    fenced a live ingest whenever the two hosts disagreed by more than a few seconds.
    (On a topic still stamped by producers, both times are the producers' clocks: the old
    behaviour, README "Limits".)
    """
    probe = await producer.send_and_wait(
        settings.ingest_inflight_topic, key=CLOCK_PROBE_KEY, value=b"{}"
    )
    messages = await read_committed(settings, settings.ingest_inflight_topic)
    latest: dict[bytes, tuple[bytes, int]] = {}
    for message in messages:
        if message.key is None or message.key == CLOCK_PROBE_KEY:
            continue
        if message.value is None:
            latest.pop(message.key, None)
        else:
            latest[message.key] = (message.value, message.timestamp)
    announcements = []
    for key, (value, stamped_ms) in latest.items():
        found = InflightIngest.from_entry(key, value)
        if found is not None:
            announcements.append(dataclasses.replace(found, heartbeat=stamped_ms / 1000))
    now_ms = probe.timestamp if probe.timestamp and probe.timestamp > 0 else time.time() * 1000
    return now_ms / 1000, announcements


async def fence_dead_ingests(settings: Settings) -> list[InflightIngest]:
    """Abort the open transactions of dead ingests by fencing their transactional ids."""
    closer = _producer(settings)
    await closer.start()
    try:
        now, announcements = await broker_announcements(settings, closer)
        dead = dead_ingests(
            announcements, now=now, host=socket.gethostname(), process_alive=process_alive
        )
        for entry in dead:
            # Starting a producer with the same transactional id bumps its epoch: the broker
            # aborts the open transaction and refuses the old producer from then on.
            fencer = kafka.producer(
                settings,
                transactional_id=entry.transactional_id,
            )
            await fencer.start()
            await fencer.stop()
            closed = InflightIngest(
                transactional_id=entry.transactional_id,
                state=CLOSED,
                object_url=entry.object_url,
                host=entry.host,
                pid=entry.pid,
                heartbeat=time.time(),
            )
            await closer.send_and_wait(
                settings.ingest_inflight_topic,
                key=entry.transactional_id.encode(),
                value=closed.to_bytes(),
            )
            FENCED_INGESTS.inc()
            log.warning(
                "fenced the open transaction of a dead ingest of %s (pid %s on %s, silent %.0fs "
                "by the broker's clock)",
                entry.object_url,
                entry.pid,
                entry.host,
                now - entry.heartbeat,
            )
    finally:
        await closer.stop()
    return dead
