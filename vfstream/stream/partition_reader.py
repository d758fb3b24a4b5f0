"""Reading a range of one partition's committed records directly, beside Faust's consumer.

The verification ledger applies every record of its partitions in offset order. When the
stream skips ahead (a record Faust fetched and dropped around a rebalance, an offset
committed past records never applied), the ledger reads what it missed here instead of
trusting delivery. One group-less consumer serves every such read of a worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from vfstream import kafka
from vfstream.errors import DependencyUnavailable
from vfstream.retry import Backoff, retrying
from vfstream.settings import Settings

log = logging.getLogger(__name__)

ATTEMPT_TIMEOUT_SECONDS = 30.0
FETCH_WAIT_MS = 10
# A hole of markers returns no records: poll briefly and look at the position again.
POLL_MS = 20


@dataclass(frozen=True)
class RangeRecord:
    offset: int
    key: bytes | None
    value: bytes | None


class RangeReadError(DependencyUnavailable):
    """One attempt at a range did not finish in time."""


class CommittedRangeReader:
    """Reads ``[start, end)`` of one topic's partitions, committed records only, in order.

    A read is retried with backoff until it succeeds: the caller cannot go on without the
    records (skipping them is what this exists to prevent).
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        *,
        attempt_timeout: float = ATTEMPT_TIMEOUT_SECONDS,
        max_backoff: float = 15.0,
    ) -> None:
        self._settings = settings
        self.topic = topic
        self._attempt_timeout = attempt_timeout
        self._max_backoff = max_backoff
        self._consumer: AIOKafkaConsumer | None = None
        self._assigned: set[TopicPartition] = set()
        self._lock = asyncio.Lock()

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = kafka.consumer(
                self._settings,
                isolation_level="read_committed",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                # Most reads are holes of one transaction marker (one per transaction a
                # partition takes part in: every bridge pass): the broker answers at once.
                fetch_max_wait_ms=FETCH_WAIT_MS,
            )
            await consumer.start()
            self._consumer = consumer
            self._assigned = set()
        return self._consumer

    async def _drop_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                await consumer.stop()
            except Exception:  # already broken: the next attempt starts a new one
                log.debug("stopping a failed range reader", exc_info=True)

    async def stop(self) -> None:
        async with self._lock:
            await self._drop_consumer()

    async def read(self, partition: int, start: int, end: int) -> list[RangeRecord]:
        """Every committed record with ``start <= offset < end``.

        ``end`` must be at or below the last stable offset (the caller passes an offset the
        stream consumed), so a read finishes; transaction markers and aborted records leave
        holes in the offsets, which is why this reads up to a position, not a count.
        """
        if end <= start:
            return []
        async with self._lock:
            async for attempt in retrying(
                (RangeReadError, KafkaError, OSError),
                backoff=Backoff(0.5, self._max_backoff),
                before_sleep=lambda state: log.warning(
                    "reading %s[%s] offsets %s..%s failed (attempt %s): %s; retrying",
                    self.topic,
                    partition,
                    start,
                    end - 1,
                    state.attempt_number,
                    state.outcome.exception() if state.outcome else None,
                ),
            ):
                with attempt:
                    try:
                        return await self._read_once(partition, start, end)
                    except (RangeReadError, KafkaError, OSError):
                        await self._drop_consumer()
                        raise
        raise AssertionError("unreachable: the retry loop returns or raises")

    async def _read_once(self, partition: int, start: int, end: int) -> list[RangeRecord]:
        tp = TopicPartition(self.topic, partition)
        consumer = await self._started()
        if tp not in self._assigned:
            # Assigning resets the consumer's fetch state: grow the assignment once per
            # partition and fetch only the one being read.
            self._assigned.add(tp)
            consumer.assign(sorted(self._assigned))
        consumer.pause(*(other for other in self._assigned if other != tp))
        consumer.resume(tp)
        consumer.seek(tp, start)
        out: list[RangeRecord] = []
        deadline = time.monotonic() + self._attempt_timeout
        while (position := await consumer.position(tp)) < end:
            if time.monotonic() > deadline:
                raise RangeReadError(
                    f"{self.topic}[{partition}]: offsets {start}..{end - 1} not read in "
                    f"{self._attempt_timeout:.0f}s (stopped at {position})"
                )
            batches = await consumer.getmany(tp, timeout_ms=POLL_MS)
            for message in batches.get(tp, []):
                if start <= message.offset < end:
                    out.append(RangeRecord(message.offset, message.key, message.value))
        return out
