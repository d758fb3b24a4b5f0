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

**Offsets.** Each partition's read records are kept in an ``OffsetWindow`` while a parcel
stands for them; the offset committed is that of the oldest record still held (or the one
after the last read). A lane waiting for hours therefore keeps its records' partitions from
being committed past them, while later records of other lanes are delivered meanwhile: a
restart or a rebalance reads again from the oldest undelivered record, repeating what other
lanes delivered after it (at least once) and losing nothing.

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
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any, Protocol

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from vfstream.errors import SHOWN_CHARS, describe_error
from vfstream.metrics import RELAY_RETRIES
from vfstream.retry import Backoff

log = logging.getLogger(__name__)

Batch = dict[TopicPartition, list[ConsumerRecord]]
Sources = tuple[tuple[TopicPartition, int], ...]

STILL_WAITING_LOG_SECONDS = 60.0  # a lane still waiting is logged again this often
DEFAULT_BACKOFF = Backoff(0.5, 10.0)
LANES_SHOWN = 20  # waiting lanes a status lists (the longest waiting)


@dataclass(frozen=True)
class Wait:
    """Why an attempt's undelivered parcels must wait: the destination, and its error."""

    destination: str
    error: str


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


class OffsetWindow:
    """One partition's records read and still held, by offset (in the order read), with how
    many parcels hold each and when it was written."""

    __slots__ = ("next", "open")

    def __init__(self) -> None:
        self.open: OrderedDict[int, list[float]] = OrderedDict()  # offset -> [holders, at]
        self.next: int | None = None

    def read(self, offset: int, at: float) -> None:
        self.open[offset] = [0, at]
        self.next = offset + 1

    def hold(self, offset: int) -> None:
        self.open[offset][0] += 1

    def release(self, offset: int) -> None:
        entry = self.open.get(offset)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] <= 0:
            del self.open[offset]

    def unless_held(self, offset: int) -> None:
        """Forget a record just read that no parcel holds."""
        entry = self.open.get(offset)
        if entry is not None and entry[0] <= 0:
            del self.open[offset]

    def commit_point(self) -> int | None:
        """The offset to commit: the oldest held record's, else the one after the last read."""
        return next(iter(self.open), self.next)

    def oldest(self) -> float | None:
        for entry in self.open.values():
            return entry[1]
        return None


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


def iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


def _earliest(first: Sources, second: Sources) -> Sources:
    lowest: dict[TopicPartition, int] = {}
    for tp, offset in (*first, *second):
        if tp not in lowest or offset < lowest[tp]:
            lowest[tp] = offset
    return tuple(lowest.items())


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
        self.lane_noun = lane_noun  # what a lane is, in log lines ("campaign")
        self.windows: dict[TopicPartition, OffsetWindow] = {}
        self.lanes: dict[str, Lane] = {}
        self.held = 0
        self.retries = 0
        self.last_error: tuple[float, str, Wait] | None = None  # (when, lane, why)
        self._slots = asyncio.Semaphore(concurrency)
        self._halted = False
        self._halt = asyncio.Event()

    # --- taking records ------------------------------------------------------------------

    def take(self, batch: Batch) -> None:
        """A batch the relay read (in offset order per partition): its parcels into their
        lanes, whose deliveries start."""
        for tp, records in batch.items():
            window = self.windows.setdefault(tp, OffsetWindow())
            for record in records:
                stamp = record.timestamp
                window.read(record.offset, stamp / 1000 if stamp and stamp > 0 else time.time())
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
            parcel.sources = _earliest(older.sources, parcel.sources)
        self._hold(parcel)
        lane.items[parcel.key] = parcel
        if older is None:
            self.held += 1
        elif not older.flying:
            self._release(older)
        # An older parcel in flight is released when its attempt returns.

    def _hold(self, parcel: Parcel) -> None:
        for tp, offset in parcel.sources:
            self.windows[tp].hold(offset)

    def _release(self, parcel: Parcel) -> None:
        for tp, offset in parcel.sources:
            window = self.windows.get(tp)
            if window is not None:
                window.release(offset)

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
            log.exception("%s: delivery failed%s", self.relay, self._of(lane))
            attempt = Attempt(wait=Wait(self.destination.name, describe_error(exc)))
        finally:
            done = {id(parcel) for parcel in attempt.done} if attempt is not None else set()
            for parcel in parcels:
                parcel.flying = False
                current = lane.items.get(parcel.key) is parcel
                if id(parcel) in done:
                    self._release(parcel)
                    if current:
                        del lane.items[parcel.key]
                        self.held -= 1
                elif not current:  # replaced by a newer one while in flight
                    self._release(parcel)
        if attempt.wait is None and not attempt.done and self._going() and lane.items:
            # A destination must deliver, refuse or say why not: never spin.
            attempt.wait = Wait(self.destination.name, "the attempt delivered nothing")
        if attempt.wait is not None:
            self._waits(lane, attempt.wait)
        elif lane.waiting is not None and attempt.done:
            log.info(
                "%s: delivering again%s after waiting %.0f s for %s",
                self.relay,
                self._of(lane),
                time.time() - (lane.waiting_since or time.time()),
                lane.waiting.destination,
            )
            lane.waiting = lane.waiting_since = None
            lane.failures = 0
            lane.retry_at = 0.0

    def _waits(self, lane: Lane, wait: Wait) -> None:
        loop = asyncio.get_running_loop()
        now = time.time()
        lane.failures += 1
        self.retries += 1
        RELAY_RETRIES.labels(self.relay, wait.destination).inc()
        self.last_error = (now, lane.name, wait)
        lane.waiting = wait
        if lane.waiting_since is None:
            lane.waiting_since = lane.logged_at = now
            log.warning(
                "%s: waiting for %s%s: %s; its %d record(s) stay uncommitted and are retried",
                self.relay,
                wait.destination,
                self._of(lane),
                wait.error,
                len(lane.items),
            )
        elif now - lane.logged_at >= STILL_WAITING_LOG_SECONDS:
            lane.logged_at = now
            log.warning(
                "%s: still waiting for %s%s since %s (%d attempts, %d record(s)): %s",
                self.relay,
                wait.destination,
                self._of(lane),
                iso(lane.waiting_since),
                lane.failures,
                len(lane.items),
                wait.error,
            )
        lane.retry_at = loop.time() + self.backoff.seconds(lane.failures)

    def _of(self, lane: Lane) -> str:
        return f" ({self.lane_noun} {lane.name[:SHOWN_CHARS]!r})" if self.lane_noun else ""

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
        for tp in gone:
            self.windows.pop(tp, None)

    def clear(self) -> None:
        """Forget every record held (halted first)."""
        self.drop(list(self.windows))
        self.lanes = {name: lane for name, lane in self.lanes.items() if lane.task is not None}
        self.held = sum(len(lane.items) for lane in self.lanes.values())

    # --- what it says --------------------------------------------------------------------

    def commit_points(self) -> dict[TopicPartition, int]:
        points = {tp: window.commit_point() for tp, window in self.windows.items()}
        return {tp: point for tp, point in points.items() if point is not None}

    def waiting_lanes(self) -> list[Lane]:
        waiting = [lane for lane in self.lanes.values() if lane.waiting is not None]
        return sorted(waiting, key=lambda lane: lane.waiting_since or 0.0)

    def oldest_undelivered(self) -> float | None:
        """When the oldest record read and not yet delivered was written."""
        times = [at for window in self.windows.values() if (at := window.oldest()) is not None]
        return min(times, default=None)

    def status(self) -> dict[str, Any]:
        now = time.time()
        waiting = self.waiting_lanes()
        oldest = self.oldest_undelivered()
        body: dict[str, Any] = {
            "state": "waiting" if waiting else "delivering",
            "held": self.held,
            "oldestUndeliveredSeconds": (
                round(max(now - oldest, 0.0), 1) if oldest is not None else None
            ),
            "retries": self.retries,
            "lastError": None,
        }
        if self.last_error is not None:
            at, lane, wait = self.last_error
            body["lastError"] = {
                "at": iso(at),
                "destination": wait.destination,
                "error": wait.error[:SHOWN_CHARS],
                **({"lane": lane[:SHOWN_CHARS]} if lane else {}),
            }
        if waiting:
            first = waiting[0]
            assert first.waiting is not None
            body["waitingFor"] = first.waiting.destination
            body["since"] = iso(first.waiting_since)
            body["error"] = first.waiting.error[:SHOWN_CHARS]
            body["lanesWaiting"] = len(waiting)
            body["laneKind"] = self.lane_noun or "lane"
            body["lanes"] = [
                {
                    "lane": lane.name[:SHOWN_CHARS],
                    "waitingFor": lane.waiting.destination,
                    "since": iso(lane.waiting_since),
                    "error": lane.waiting.error[:SHOWN_CHARS],
                    "attempts": lane.failures,
                    "held": len(lane.items),
                }
                for lane in waiting[:LANES_SHOWN]
                if lane.waiting is not None
            ]
        return body
