"""A relay's records in lanes: what the destination takes goes on, what it cannot take yet
waits, and a partition is committed only up to its oldest record not yet delivered.

A relay reads its topic (``base.TopicRelay``) and hands every record to its destination,
which turns it into **parcels**: what one delivery sends for one key (a fan's newest state,
a mirror item, a score record), each in a **lane** (a campaign for the entry forwarder, one
lane for the DynamoDB mirror and the Kinesis forwarder, whose destination is down or up for
everyone). A lane delivers its parcels in the order they came, one attempt at a time, up to
``concurrency`` lanes at once. An attempt says which parcels are done (delivered, or refused
for what they hold and reported) and, when the rest must wait, what for (``Wait``): the lane
then backs off (``vfstream.retry.Backoff``: full jitter, capped) and tries again, for as long
as the destination needs; nothing is given up and nothing is dead-lettered for an outage.
Lanes do not wait for each other: one campaign whose requests fail holds up no other.

**Offsets.** A partition is committed only up to its oldest record still held, so a lane
waiting for hours loses nothing across a restart or a rebalance (``offsets.py``, which
says why). What the waiting lanes log, count and show is in ``waiting.py``.

**Newest wins.** A parcel whose key is already held replaces the held one in place (a fan's
newer state goes instead of the older, once), taking over the older one's place in the
window (the lowest offset per partition), so the commit cannot pass the older record before
the newer is delivered. A parcel replaced while its attempt is in flight stays held until
that attempt returns.

**Bounded.** The relay stops reading (pauses its partitions) while ``max_held`` parcels are
held and goes on when fewer are: memory stays bounded, and past that bound a lane that
waits long enough holds up the others too (``/statuses`` says so: ``paused``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Hashable, Iterable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from vfstream.errors import describe_error
from vfstream.retry import Backoff
from vfstream.sinks.relays.offsets import Offsets, Sources, earliest
from vfstream.sinks.relays.waiting import Wait, WaitReports

log = logging.getLogger(__name__)

Batch = dict[TopicPartition, list[ConsumerRecord]]

DEFAULT_BACKOFF = Backoff(0.5, 10.0)


@dataclass(eq=False, slots=True)
class Parcel:
    lane: str
    key: Hashable
    value: Any
    # The records it stands for: the lowest offset of each partition.
    sources: Sources
    flying: bool = False


@dataclass
class Attempt:
    """What one delivery attempt did: ``done`` parcels are released (delivered, or refused
    and reported); the others stay held, and wait for ``wait`` when it is given."""

    done: list[Parcel] = field(default_factory=list)
    wait: Wait | None = None


class Destination(Protocol):
    name: str  # what the relay waits for when it cannot deliver: "DynamoDB", "entry service"

    def parcels(self, tp: TopicPartition, record: ConsumerRecord) -> Iterable[tuple[str, Any, Any]]:
        """The (lane, key, value) parcels a record becomes (none: nothing to deliver)."""
        ...

    async def deliver(self, lane: str, parcels: list[Parcel], go_on: Callable[[], bool]) -> Attempt:
        """One attempt at ``parcels`` (oldest first); stops early when ``go_on()`` turns
        false (the partitions are being revoked, the worker stops)."""
        ...


@dataclass(eq=False)
class Lane:
    name: str
    items: dict[Hashable, Parcel] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    failures: int = 0  # failed attempts in a row
    waiting: Wait | None = None
    waiting_since: float | None = None  # wall clock
    retry_at: float = 0.0  # loop clock
    logged_at: float = 0.0


class Lanes:
    """The parcels a relay holds, by lane, and the lanes' deliveries (module docstring)."""

    def __init__(
        self,
        relay: str,
        destination: Destination,
        *,
        concurrency: int = 1,
        per_attempt: int = 5_000,
        backoff: Backoff = DEFAULT_BACKOFF,
        lane_noun: str | None = None,
    ) -> None:
        self.relay = relay
        self.destination = destination
        self.per_attempt = per_attempt
        self.backoff = backoff
        self.offsets = Offsets()
        self.reports = WaitReports(relay, lane_noun)
        self.lanes: dict[str, Lane] = {}
        self.held = 0
        self._slots = asyncio.Semaphore(concurrency)
        self._halted = False
        self._halt = asyncio.Event()

    # --- taking records ------------------------------------------------------------------

    def take(self, batch: Batch) -> None:
        """A batch the relay read (in offset order per partition): its parcels into their
        lanes, whose deliveries start."""
        for tp, records in batch.items():
            window = self.offsets.window(tp)
            for record in records:
                self.offsets.read(window, record)
                for lane, key, value in self.destination.parcels(tp, record):
                    self._add(Parcel(lane, key, value, ((tp, record.offset),)))
                window.unless_held(record.offset)
        self._start()

    def _add(self, parcel: Parcel) -> None:
        lane = self.lanes.get(parcel.lane)
        if lane is None:
            lane = self.lanes[parcel.lane] = Lane(parcel.lane)
        older = lane.items.get(parcel.key)
        if older is not None:
            parcel.sources = earliest(older.sources, parcel.sources)
        self.offsets.hold(parcel.sources)
        lane.items[parcel.key] = parcel
        if older is None:
            self.held += 1
        elif not older.flying:
            self.offsets.release(older.sources)
        # An older parcel in flight is released when its attempt returns.

    # --- deliveries ----------------------------------------------------------------------

    def _start(self) -> None:
        if self._halted:
            return
        for lane in self.lanes.values():
            if lane.task is None and lane.items:
                lane.task = asyncio.get_running_loop().create_task(self._run(lane))

    def _going(self) -> bool:
        return not self._halted

    async def _run(self, lane: Lane) -> None:
        loop = asyncio.get_running_loop()
        try:
            while lane.items and not self._halted:
                delay = lane.retry_at - loop.time()
                if delay > 0 and await self._halted_within(delay):
                    break
                async with self._slots:
                    if self._halted:
                        break
                    await self._attempt(lane)
        finally:
            lane.task = None
            if not lane.items and self.lanes.get(lane.name) is lane:
                del self.lanes[lane.name]

    async def _attempt(self, lane: Lane) -> None:
        parcels = list(islice(lane.items.values(), self.per_attempt))
        for parcel in parcels:
            parcel.flying = True
        attempt: Attempt | None = None
        try:
            attempt = await self.destination.deliver(lane.name, parcels, self._going)
        except Exception as exc:  # an error the destination did not sort: waited out too
            log.exception("%s: delivery failed%s", self.relay, self.reports.of(lane))
            attempt = Attempt(wait=Wait(self.destination.name, describe_error(exc)))
        finally:
            done = {id(parcel) for parcel in attempt.done} if attempt is not None else set()
            for parcel in parcels:
                parcel.flying = False
                current = lane.items.get(parcel.key) is parcel
                if id(parcel) in done:
                    self.offsets.release(parcel.sources)
                    if current:
                        del lane.items[parcel.key]
                        self.held -= 1
                elif not current:  # replaced by a newer one while in flight
                    self.offsets.release(parcel.sources)
        if attempt.wait is None and not attempt.done and self._going() and lane.items:
            # A destination must deliver, refuse or say why not: never spin.
            attempt.wait = Wait(self.destination.name, "the attempt delivered nothing")
        if attempt.wait is not None:
            lane.failures += 1
            self.reports.waits(lane, attempt.wait)
            lane.retry_at = asyncio.get_running_loop().time() + self.backoff.seconds(lane.failures)
        elif lane.waiting is not None and attempt.done:
            self.reports.delivers_again(lane)
            lane.retry_at = 0.0

    async def _halted_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._halt.wait(), seconds)
        return self._halted

    # --- rebalances and stopping ---------------------------------------------------------

    async def halt(self) -> None:
        """No new attempt starts; returns once the attempts in flight have returned."""
        self._halted = True
        self._halt.set()
        tasks = [lane.task for lane in self.lanes.values() if lane.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def cancel(self) -> None:
        """Stop the attempts in flight now (their parcels stay held, uncommitted)."""
        self._halted = True
        self._halt.set()
        tasks = [lane.task for lane in self.lanes.values() if lane.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def resume(self) -> None:
        self._halted = False
        self._halt = asyncio.Event()
        self._start()

    def drop(self, partitions: Collection[TopicPartition]) -> None:
        """Forget the records of partitions no longer ours (halted first): the next owner
        reads them again from the last commit. A parcel stands for records of one partition
        (a key lives in one partition), so no other partition's records are forgotten."""
        gone = set(partitions)
        for name, lane in list(self.lanes.items()):
            for key, parcel in list(lane.items.items()):
                if any(tp in gone for tp, _ in parcel.sources):
                    del lane.items[key]
                    self.held -= 1
            if not lane.items and lane.task is None:
                del self.lanes[name]
        self.offsets.drop(gone)

    def clear(self) -> None:
        """Forget every record held (halted first)."""
        self.drop(self.offsets.partitions())
        self.lanes = {name: lane for name, lane in self.lanes.items() if lane.task is not None}
        self.held = sum(len(lane.items) for lane in self.lanes.values())

    # --- what it says --------------------------------------------------------------------

    def commit_points(self) -> dict[TopicPartition, int]:
        return self.offsets.commit_points()

    def waiting_lanes(self) -> list[Lane]:
        waiting = [lane for lane in self.lanes.values() if lane.waiting is not None]
        return sorted(waiting, key=lambda lane: lane.waiting_since or 0.0)

    def oldest_undelivered(self) -> float | None:
        """When the oldest record read and not yet delivered was written."""
        return self.offsets.oldest_undelivered()

    def status(self) -> dict[str, Any]:
        return self.reports.status(self.waiting_lanes(), self.held, self.oldest_undelivered())
