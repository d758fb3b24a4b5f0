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
from vfstream.metrics import FENCED_INGESTS
from vfstream.ops.reads import latest_values
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


async def fence_dead_ingests(settings: Settings) -> list[InflightIngest]:
    """Abort the open transactions of dead ingests by fencing their transactional ids."""
    entries = await latest_values(settings, settings.ingest_inflight_topic)
    announcements = [
        found
        for key, (_, value) in entries.items()
        if (found := InflightIngest.from_entry(key, value)) is not None
    ]
    dead = dead_ingests(
        announcements, now=time.time(), host=socket.gethostname(), process_alive=process_alive
    )
    if not dead:
        return []
    closer = _producer(settings)
    await closer.start()
    try:
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
                "fenced the open transaction of a dead ingest of %s (pid %s on %s, silent %.0fs)",
                entry.object_url,
                entry.pid,
                entry.host,
                time.time() - entry.heartbeat,
            )
    finally:
        await closer.stop()
    return dead
