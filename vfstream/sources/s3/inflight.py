"""Announcing ingest transactions, and fencing those of dead ingests (see
``vfstream.domain.inflight`` for why).

``InflightAnnouncer`` runs beside one ingest: it announces the transaction, refreshes the
announcement every ``HEARTBEAT_SECONDS`` and closes it when the transaction ends.
``InflightFencer`` fences: every worker's notification listener keeps one and fences between
polls and before each file it ingests; ``fence_dead_ingests`` is the one-off of a CLI ingest.
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

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from vfstream import kafka
from vfstream.domain.inflight import (
    CLOSED,
    HEARTBEAT_SECONDS,
    OPEN,
    InflightIngest,
    dead_ingests,
)
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
# How long a fencer reads the in-flight topic up to its probe before it gives up.
READ_TIMEOUT_SECONDS = 30.0


async def broker_announcements(
    settings: Settings, producer: AIOKafkaProducer
) -> tuple[float, list[InflightIngest]]:
    """The open announcements, each timed by the broker, and the broker's now: one read
    of the whole topic (a one-off caller; a long-lived one keeps an ``InflightFencer``)."""
    fencer = InflightFencer(settings)
    try:
        return await fencer.announcements(producer)
    finally:
        await fencer.stop()


async def fence_dead_ingests(settings: Settings) -> list[InflightIngest]:
    """Abort the open transactions of dead ingests by fencing their transactional ids (a
    one-off: the CLI's ingest; a worker keeps an ``InflightFencer``)."""
    fencer = InflightFencer(settings)
    try:
        return await fencer.fence()
    finally:
        await fencer.stop()


class InflightFencer:
    """Fences the transactions of dead ingests, reading the in-flight topic incrementally.

    Silence is measured on one clock, the broker's: the topic stamps each record on append
    (``message.timestamp.type=LogAppendTime``), and a probe written just before reading
    tells what time it is there, and how far to read (up to the probe's own offset).
    Comparing an ingest's own wall clock with the fencer's fenced a live ingest whenever the
    two hosts disagreed by more than a few seconds. (On a topic still stamped by producers,
    both times are the producers' clocks: the old behaviour, README "Limits".)

    Why incremental: a worker's listener fences between polls (every few seconds) and before
    each file. Reading the whole topic each time (every announcement, heartbeat and probe
    since the last compaction) made a worker's idle CPU grow with every file ever ingested.
    Kept open, its reader reads only what was appended since its last look, and it keeps in
    memory the open announcements alone (a closed one is forgotten).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tp = TopicPartition(settings.ingest_inflight_topic, 0)
        self._reader: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._open: dict[bytes, tuple[bytes, int]] = {}  # key -> (value, broker time ms)
        self._lock = asyncio.Lock()
        self.records_read = 0  # records read from the topic since the reader started

    @property
    def open_announcements(self) -> int:
        return len(self._open)

    async def fence(self) -> list[InflightIngest]:
        """Fence every dead ingest; returns them."""
        async with self._lock:
            if self._producer is None:
                producer = _producer(self.settings)
                await producer.start()
                self._producer = producer
            try:
                return await self._fence(self._producer)
            except BaseException:
                await self._drop_clients()  # a broker gone away: new clients next time
                raise

    async def announcements(self, producer: AIOKafkaProducer) -> tuple[float, list[InflightIngest]]:
        """The open announcements, each timed by the broker, and the broker's now."""
        probe = await producer.send_and_wait(
            self.settings.ingest_inflight_topic, key=CLOCK_PROBE_KEY, value=b"{}"
        )
        await self._read_up_to(probe.offset)
        announcements = []
        for key, (value, stamped_ms) in self._open.items():
            found = InflightIngest.from_entry(key, value)
            if found is not None:
                announcements.append(dataclasses.replace(found, heartbeat=stamped_ms / 1000))
        now_ms = probe.timestamp if probe.timestamp and probe.timestamp > 0 else time.time() * 1000
        return now_ms / 1000, announcements

    async def stop(self) -> None:
        await self._drop_clients()

    async def _drop_clients(self) -> None:
        reader, producer = self._reader, self._producer
        self._reader = self._producer = None
        self._open.clear()  # a new reader reads from the start again
        for client in (reader, producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()

    async def _read_up_to(self, offset: int) -> None:
        """Read the topic up to and including ``offset`` (the probe just written)."""
        reader = self._reader
        if reader is None:
            reader = kafka.consumer(self.settings, enable_auto_commit=False)
            await reader.start()
            reader.assign([self._tp])
            await reader.seek_to_beginning(self._tp)
            self._reader = reader
        deadline = time.monotonic() + READ_TIMEOUT_SECONDS
        while await reader.position(self._tp) <= offset:
            if time.monotonic() > deadline:
                raise TimeoutError(f"in-flight topic not read up to offset {offset}")
            batches = await reader.getmany(self._tp, timeout_ms=500, max_records=10_000)
            for message in batches.get(self._tp, ()):
                self._take(message.key, message.value, message.timestamp)

    def _take(self, key: bytes | None, value: bytes | None, stamped_ms: int) -> None:
        self.records_read += 1
        if key is None or key == CLOCK_PROBE_KEY:
            return
        found = InflightIngest.from_entry(key, value) if value is not None else None
        if found is None or found.state != OPEN:
            self._open.pop(key, None)
        else:
            self._open[key] = (value, stamped_ms)  # type: ignore[assignment]

    async def _fence(self, closer: AIOKafkaProducer) -> list[InflightIngest]:
        now, announcements = await self.announcements(closer)
        dead = dead_ingests(
            announcements, now=now, host=socket.gethostname(), process_alive=process_alive
        )
        for entry in dead:
            # Starting a producer with the same transactional id bumps its epoch: the broker
            # aborts the open transaction and refuses the old producer from then on.
            fencer = kafka.producer(self.settings, transactional_id=entry.transactional_id)
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
                self.settings.ingest_inflight_topic,
                key=entry.transactional_id.encode(),
                value=closed.to_bytes(),
            )
            self._open.pop(entry.transactional_id.encode(), None)
            FENCED_INGESTS.inc()
            log.warning(
                "fenced the open transaction of a dead ingest of %s (pid %s on %s, silent %.0fs "
                "by the broker's clock)",
                entry.object_url,
                entry.pid,
                entry.host,
                now - entry.heartbeat,
            )
        return dead
