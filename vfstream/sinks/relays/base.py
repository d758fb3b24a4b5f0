"""Copying a topic — mostly a worker table's changelog — to an outside system, as a consumer
group of its own.

Why the changelogs: they are the durable record of every state change, already collapsed to
one write per key per flush. Each relay (the DynamoDB mirror, the entry-service forwarder,
the Kinesis score forwarder) commits a partition's offset only up to its oldest record not
yet delivered (``lanes``), so a crash loses nothing: the next owner of the partition re-reads
from the last commit and the destination absorbs the repeats.

**Outages.** A destination that is down, overloaded, throttling or timing out is waited
out, however long: the lane that cannot deliver backs off with jitter (capped at
``max_backoff_seconds``) and tries again; nothing is dropped or dead-lettered for it, Kafka
is the durable buffer and the relay catches up when the destination returns. Only what the
destination refuses for a reason in the record itself is reported and passed. The consumer
keeps polling meanwhile (with its partitions paused while ``max_held`` parcels are held), so
an outage longer than ``max.poll.interval.ms`` does not cost the relay its group membership.
``/statuses`` (``relay_statuses``) and the console say which relay waits for what, since
when, the last error and the age of the oldest undelivered record; so do the
``vfstream_relay_*`` metrics.

**Rebalances.** A changelog partition has one reader at a time: before a rebalance takes
partitions away, the relay starts no new attempt, waits for those in flight (a write in
flight finishes before another worker may write the same key; after
``REVOKE_GRACE_SECONDS`` they are cancelled, and the group waits longer than that for the
relay), commits what was delivered, and forgets the rest (the next owner reads it again
from that commit). Each attempt's calls give up soon (the clients' own timeouts and few
retries, ``AWS_CALLS``): the relay's backoff is the retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from vfstream import kafka
from vfstream.errors import DependencyUnavailable
from vfstream.metrics import RELAY_HELD, RELAY_OLDEST, RELAY_WAITING
from vfstream.retry import Backoff
from vfstream.settings import Settings
from vfstream.sinks.relays.lanes import Batch, Destination, Lanes

log = logging.getLogger(__name__)

__all__ = ["Abandoned", "Batch", "TopicRelay", "relay_statuses"]

STOP_SECONDS = 15.0  # how long a stopping relay waits for its attempts in flight
# How long a revocation waits for the attempts in flight before it cancels them (a request
# already sent may then still be applied: at least once); the group waits longer for us.
REVOKE_GRACE_SECONDS = 30.0
REBALANCE_TIMEOUT_SECONDS = REVOKE_GRACE_SECONDS + 15.0
# The relays' AWS clients: the relay retries for as long as it takes, so each call gives up
# soon (an attempt in flight is what a rebalance waits for).
AWS_CALLS = {
    "connect_timeout": 5,
    "read_timeout": 30,
    "retries": {"max_attempts": 3, "mode": "adaptive"},
}

# The relays running in this process, by consumer group: what /statuses shows.
_RUNNING: dict[str, TopicRelay] = {}


def relay_statuses(app_id: str) -> dict[str, dict[str, Any]]:
    """Each running relay of the app ``app_id``: delivering, or waiting for what since when
    (``Lanes.status``), and whether it stopped reading (``paused``)."""
    return {
        relay.name: relay.status()
        for relay in list(_RUNNING.values())
        if relay.settings.app_id == app_id
    }


class Abandoned(DependencyUnavailable):
    """The partitions were revoked or the worker stops: leave the batch uncommitted."""


class TopicRelay:
    def __init__(
        self,
        settings: Settings,
        name: str,
        topics: list[str],
        destination: Destination,
        *,
        max_records: int = 5_000,
        max_held: int = 20_000,
        per_attempt: int = 5_000,
        concurrency: int = 1,
        max_backoff_seconds: float = 10.0,
        read_committed: bool = False,
        lane_noun: str | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.topics = topics
        self.max_records = max_records
        self.max_held = max_held
        self.max_backoff_seconds = max_backoff_seconds
        # Topics written in transactions (score records) must be read committed; changelogs
        # are not transactional.
        self.isolation_level = "read_committed" if read_committed else "read_uncommitted"
        self.lanes = Lanes(
            name,
            destination,
            concurrency=concurrency,
            per_attempt=per_attempt,
            backoff=Backoff(0.5, max_backoff_seconds),
            lane_noun=lane_noun,
        )
        self.paused = False
        self._consumer: AIOKafkaConsumer | None = None
        self._committed: dict[TopicPartition, int] = {}
        self._generation = 0  # +1 at every revocation: a batch read before it is dropped
        self._revoking = False
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
            # The revocation waits for the attempts in flight: the group waits for it.
            rebalance_timeout_ms=int(REBALANCE_TIMEOUT_SECONDS * 1000),
        )
        consumer.subscribe(self.topics, listener=_FinishBeforeRevoke(self))
        await consumer.start()
        self._consumer = consumer
        # A relay run again after a failure starts from the last commit, like a new owner.
        self.lanes.clear()
        self._committed.clear()
        self.lanes.resume()
        _RUNNING[self.group_id] = self
        try:
            while not should_stop():
                await self._poll(consumer)
        finally:
            if _RUNNING.get(self.group_id) is self:
                del _RUNNING[self.group_id]
            self._publish(stopped=True)
            await self._stop()
            await consumer.stop()
            self._consumer = None

    async def _poll(self, consumer: AIOKafkaConsumer) -> None:
        """One read: its records to the lanes, then the commit of what was delivered."""
        self._press_back(consumer)
        generation = self._generation
        batch = await consumer.getmany(timeout_ms=500, max_records=self.max_records)
        if batch:
            if generation == self._generation and not self._revoking:
                self.lanes.take(batch)
            else:
                await self._rewind(consumer, batch)
        await self._commit()
        self._publish()

    async def _rewind(self, consumer: AIOKafkaConsumer, batch: Batch) -> None:
        """A read that a revocation overtook: its records may be the old assignment's
        (another worker's now) or the new one's first, read from the last commit. Neither
        is taken; a partition assigned now is read again from its last commit (where a new
        owner starts, as everything held for it was forgotten)."""
        assigned = consumer.assignment()
        for tp in batch:
            if tp not in assigned:
                continue
            try:
                offset = await consumer.committed(tp)
                if offset is None or offset < 0:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, offset)
            except (KafkaError, AssertionError) as exc:  # moved again: the new owner resets it
                log.info("%s: %s not rewound (%s)", self.name, tp, exc)

    async def _stop(self) -> None:
        """Let the attempts in flight return (for a while), then commit what was delivered."""
        try:
            await asyncio.wait_for(self.lanes.halt(), STOP_SECONDS)
        except TimeoutError:
            await self.lanes.cancel()
        await self._commit()

    def _press_back(self, consumer: AIOKafkaConsumer) -> None:
        """Stop reading while ``max_held`` parcels are held; read again once fewer are."""
        assigned = consumer.assignment()
        if self.lanes.held >= self.max_held:
            unpaused = assigned - consumer.paused()
            if unpaused:
                consumer.pause(*unpaused)
            if not self.paused:
                log.warning(
                    "%s: %d parcel(s) held, the most it holds: reading paused until fewer are",
                    self.name,
                    self.lanes.held,
                )
                self.paused = True
        elif self.paused or consumer.paused():
            consumer.resume(*consumer.paused())
            if self.paused:
                log.info("%s: reading again (%d parcel(s) held)", self.name, self.lanes.held)
            self.paused = False

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        """Commit each partition up to its oldest record not yet delivered."""
        consumer = self._consumer
        if consumer is None:
            return
        assigned = consumer.assignment()
        offsets = {
            tp: point
            for tp, point in self.lanes.commit_points().items()
            if tp in assigned
            and (only is None or tp in only)
            and point > self._committed.get(tp, -1)
        }
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:  # a rebalance under way: the next owner reads them again
            log.warning("%s: commit of %d partition(s) failed: %s", self.name, len(offsets), exc)
            return
        self._committed.update(offsets)

    def _publish(self, *, stopped: bool = False) -> None:
        waiting = 0 if stopped else len(self.lanes.waiting_lanes())
        RELAY_WAITING.labels(self.name).set(waiting)
        RELAY_HELD.labels(self.name).set(0 if stopped else self.lanes.held)
        oldest = None if stopped else self.lanes.oldest_undelivered()
        RELAY_OLDEST.labels(self.name).set(0.0 if oldest is None else max(time.time() - oldest, 0))

    def status(self) -> dict[str, Any]:
        return {**self.lanes.status(), "paused": self.paused}

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        """Called before a rebalance takes partitions away: no new attempt starts, those in
        flight return, what they delivered is committed and the rest is forgotten."""
        self._generation += 1
        self._revoking = True
        try:
            try:
                await asyncio.wait_for(self.lanes.halt(), REVOKE_GRACE_SECONDS)
            except TimeoutError:
                log.warning(
                    "%s: attempts still in flight after %.0f s of a rebalance: cancelled",
                    self.name,
                    REVOKE_GRACE_SECONDS,
                )
                await self.lanes.cancel()
            await self._commit(only=partitions)
            self.lanes.drop(partitions)
            for tp in partitions:
                self._committed.pop(tp, None)
        finally:
            self._revoking = False
            self.lanes.resume()

    async def backoff(self, attempt: int) -> None:
        """Sleep before retry ``attempt`` (exponential, jittered, capped), for a caller that
        delivers a batch itself (``DynamoMirror.mirror``); raises ``Abandoned`` as soon as
        the partitions are being revoked or the worker stops."""
        seconds = Backoff(0.2, self.max_backoff_seconds).seconds(attempt)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            if self._revoking or self._should_stop():
                raise Abandoned
            await asyncio.sleep(0.1)


class _FinishBeforeRevoke(ConsumerRebalanceListener):
    def __init__(self, relay: TopicRelay) -> None:
        self.relay = relay

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.relay.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None
