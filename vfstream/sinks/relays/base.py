"""Copying a topic — mostly a worker table's changelog — to an outside system, as a consumer
group of its own.

Why the changelogs: they are the durable record of every state change, already collapsed to
one write per key per flush. Each relay (the DynamoDB mirror, the entry-service forwarder)
commits a changelog offset only after its handler has delivered everything up to it, so a
crash loses nothing: the next owner of the partition re-reads from the last commit and the
handler absorbs the repeats. While the outside system is down the handler keeps retrying
and nothing is committed; Kafka is the durable buffer, and the relay catches up when the
system returns.

A changelog partition has one reader at a time: a revoked partition's in-flight batch is
finished, or abandoned uncommitted, before the rebalance goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from vfstream import kafka
from vfstream.errors import DependencyUnavailable
from vfstream.retry import Backoff
from vfstream.settings import Settings

log = logging.getLogger(__name__)

Batch = dict[TopicPartition, list[ConsumerRecord]]


class Abandoned(DependencyUnavailable):
    """The batch's partitions were revoked or the worker stops: leave it uncommitted."""


class TopicRelay:
    def __init__(
        self,
        settings: Settings,
        name: str,
        topics: list[str],
        handle: Callable[[Batch, TopicRelay], Awaitable[Any]],
        *,
        max_records: int = 5_000,
        max_backoff_seconds: float = 10.0,
        read_committed: bool = False,
    ) -> None:
        self.settings = settings
        self.name = name
        self.topics = topics
        self._handle = handle
        self.max_records = max_records
        self.max_backoff_seconds = max_backoff_seconds
        # Topics written in transactions (score records) must be read committed; changelogs
        # are not transactional.
        self.isolation_level = "read_committed" if read_committed else "read_uncommitted"
        self._lock = asyncio.Lock()
        self._abandon = False
        self._should_stop: Callable[[], bool] = lambda: False

    @property
    def group_id(self) -> str:
        return f"{self.settings.app_id}-{self.name}"

    async def run(self, should_stop: Callable[[], bool]) -> None:
        self._should_stop = should_stop
        consumer = kafka.consumer(
            self.settings,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=self.isolation_level,
            metadata_max_age_ms=5_000,  # changelogs appear when the first worker starts
            session_timeout_ms=int(self.settings.session_timeout_seconds * 1000),
            heartbeat_interval_ms=int(self.settings.session_timeout_seconds * 250),
        )
        consumer.subscribe(self.topics, listener=_FinishBeforeRevoke(self))
        await consumer.start()
        try:
            while not should_stop():
                batch = await consumer.getmany(timeout_ms=500, max_records=self.max_records)
                if not batch:
                    continue
                async with self._lock:
                    self._abandon = False
                    try:
                        await self._handle(batch, self)
                    except Abandoned:
                        continue
                    await consumer.commit(
                        {tp: records[-1].offset + 1 for tp, records in batch.items()}
                    )
        finally:
            await consumer.stop()

    async def revoked(self) -> None:
        """Called before a rebalance takes partitions away: wait for the batch in hand."""
        self._abandon = True
        async with self._lock:
            pass

    async def backoff(self, attempt: int) -> None:
        """Sleep before retry ``attempt`` (exponential, jittered, capped); raises
        ``Abandoned`` as soon as the batch's partitions are revoked or the worker stops."""
        seconds = Backoff(0.2, self.max_backoff_seconds).seconds(attempt)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            if self._abandon or self._should_stop():
                raise Abandoned
            await asyncio.sleep(0.1)


class _FinishBeforeRevoke(ConsumerRebalanceListener):
    def __init__(self, relay: TopicRelay) -> None:
        self.relay = relay

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.relay.revoked()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None
