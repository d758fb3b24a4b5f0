"""A relay's lanes without Kafka: a scripted destination that is up or down per lane, records
made by hand, and what the lanes deliver, hold and would commit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from tests.support.waiting import eventually
from vfstream.retry import Backoff
from vfstream.sinks.relays.lanes import Attempt, Lanes, Parcel, Wait
from vfstream.sinks.relays.offsets import OffsetWindow

TP = TopicPartition("changelog", 0)
OTHER = TopicPartition("changelog", 1)
FAST = Backoff(0.001, 0.01)


def record(offset: int, text: str, tp: TopicPartition = TP) -> ConsumerRecord:
    """``lane:key:version`` (``lane:key:version*n`` for a record of n parcels)."""
    value = text.encode()
    return ConsumerRecord(tp.topic, tp.partition, offset, 1_000, 0, None, value, None, 0, 0, ())


class Scripted:
    """Delivers what its lanes are up for; ``down`` lanes wait; ``gate`` holds attempts."""

    name = "the service"

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.sent: list[tuple[str, str, str]] = []
        self.attempts: list[str] = []
        self.gate: asyncio.Event | None = None
        self.raises: Exception | None = None
        self.fail_after: int | None = None  # deliver this many of an attempt, then wait

    def parcels(self, tp: TopicPartition, rec: ConsumerRecord) -> Iterable[tuple[str, Any, Any]]:
        lane, key, version = rec.value.decode().split(":")
        version, _, times = version.partition("*")
        if times:
            return [(lane, (rec.offset, n), version) for n in range(int(times))]
        return [(lane, key, version)]

    async def deliver(self, lane: str, parcels: list[Parcel], go_on: Callable[[], bool]) -> Attempt:
        self.attempts.append(lane)
        if self.gate is not None:
            await self.gate.wait()
        if self.raises is not None:
            raise self.raises
        if lane in self.down:
            return Attempt(wait=Wait(self.name, "HTTP 503"))
        taken = parcels if self.fail_after is None else parcels[: self.fail_after]
        if self.fail_after is not None:
            self.down.add(lane)  # then down until told otherwise
        self.sent.extend((lane, str(p.key), p.value) for p in taken)
        wait = None if len(taken) == len(parcels) else Wait(self.name, "throttled")
        return Attempt(list(taken), wait)


def lanes_of(destination: Scripted, **options: Any) -> Lanes:
    return Lanes("relay", destination, backoff=FAST, concurrency=4, **options)


async def settled(lanes: Lanes, check: Callable[[], bool], timeout: float = 5.0) -> None:
    await eventually(lambda: asyncio.sleep(0.01, check()), bool, timeout=timeout, interval=0.01)


async def test_a_waiting_lane_holds_the_commit_at_its_oldest_record_while_others_deliver() -> None:
    service = Scripted()
    service.down.add("a")
    lanes = lanes_of(service)
    lanes.take({TP: [record(0, "b:f0:1"), record(1, "a:f1:1"), record(2, "b:f2:1")]})
    lanes.take({TP: [record(3, "a:f3:1"), record(4, "b:f4:1")]})
    await settled(lanes, lambda: len(service.sent) == 3)
    await asyncio.sleep(0.1)  # a keeps failing, b has nothing left
    assert [key for lane, key, _ in service.sent] == ["f0", "f2", "f4"]
    assert lanes.commit_points() == {TP: 1}
    assert service.attempts.count("a") > 3  # retried, never given up
    status = lanes.status()
    assert status["state"] == "waiting" and status["waitingFor"] == "the service"
    assert status["error"] == "HTTP 503" and status["held"] == 2
    assert [lane["lane"] for lane in status["lanes"]] == ["a"]
    assert status["oldestUndeliveredSeconds"] > 0
    service.down.clear()
    await settled(lanes, lambda: len(service.sent) == 5)
    assert lanes.commit_points() == {TP: 5}
    assert lanes.status()["state"] == "delivering" and lanes.held == 0
    assert lanes.status()["lastError"]["lane"] == "a"


async def test_a_newer_state_of_a_held_key_replaces_it_and_goes_once() -> None:
    service = Scripted()
    service.down.add("a")
    lanes = lanes_of(service)
    lanes.take({TP: [record(0, "a:f1:1"), record(1, "b:f2:1"), record(2, "a:f1:2")]})
    await settled(lanes, lambda: len(service.sent) == 1)
    assert lanes.held == 1 and lanes.commit_points() == {TP: 0}
    service.down.clear()
    await settled(lanes, lambda: len(service.sent) == 2)
    assert service.sent == [("b", "f2", "1"), ("a", "f1", "2")]
    assert lanes.commit_points() == {TP: 3}


async def test_a_key_replaced_in_flight_keeps_the_older_record_held_until_the_newer_goes() -> None:
    service = Scripted()
    service.gate = asyncio.Event()
    lanes = lanes_of(service)
    lanes.take({TP: [record(0, "a:f1:1")]})
    await settled(lanes, lambda: service.attempts == ["a"])
    lanes.take({TP: [record(1, "a:f1:2")]})
    service.gate.set()
    await settled(lanes, lambda: len(service.sent) == 2)
    assert service.sent == [("a", "f1", "1"), ("a", "f1", "2")]
    assert lanes.commit_points() == {TP: 2} and lanes.held == 0


async def test_in_flight_replaced_then_failing_leaves_the_older_offset_held() -> None:
    service = Scripted()
    service.gate = asyncio.Event()
    service.down.add("a")
    lanes = lanes_of(service)
    lanes.take({TP: [record(0, "a:f1:1")]})
    await settled(lanes, lambda: service.attempts == ["a"])
    lanes.take({TP: [record(1, "a:f1:2")]})
    service.gate.set()
    await settled(lanes, lambda: len(service.attempts) > 2)
    assert lanes.commit_points() == {TP: 0} and lanes.held == 1
    service.down.clear()
    await settled(lanes, lambda: lanes.held == 0)
    assert service.sent == [("a", "f1", "2")]
    assert lanes.commit_points() == {TP: 2}


async def test_a_record_of_many_parcels_is_held_until_each_is_delivered() -> None:
    service = Scripted()
    service.fail_after = 2
    lanes = lanes_of(service)
    lanes.take({TP: [record(0, ":x:1*3"), record(1, ":y:1*2")]})
    await settled(lanes, lambda: len(service.attempts) > 2)
    assert len(service.sent) == 2 and lanes.commit_points()[TP] == 0
    service.fail_after = None
    service.down.clear()
    await settled(lanes, lambda: lanes.held == 0)
    assert len(service.sent) == 5 and lanes.commit_points() == {TP: 2}


async def test_records_without_parcels_are_committed_past_and_partitions_apart() -> None:
    service = Scripted()
    service.down.add("a")
    lanes = lanes_of(service)

    lanes.destination.parcels = lambda tp, rec: (  # type: ignore[method-assign]
        [] if rec.value == b"skip" else Scripted.parcels(service, tp, rec)
    )
    lanes.take({TP: [record(0, "skip"), record(1, "a:f:1")], OTHER: [record(7, "skip", OTHER)]})
    await asyncio.sleep(0.05)
    assert lanes.commit_points() == {TP: 1, OTHER: 8}


async def test_a_destination_that_raises_is_waited_out_too() -> None:
    service = Scripted()
    service.raises = ConnectionResetError(104, "reset by peer")
    lanes = lanes_of(service)
    lanes.take({TP: [record(0, "a:f1:1")]})
    await settled(lanes, lambda: len(service.attempts) > 3)
    status = lanes.status()
    assert status["state"] == "waiting"
    assert status["error"] == "ConnectionResetError: Connection reset by peer"
    service.raises = None
    await settled(lanes, lambda: lanes.held == 0)
    assert service.sent == [("a", "f1", "1")]


async def test_halt_lets_the_attempt_in_flight_return_and_drop_forgets_the_partition() -> None:
    service = Scripted()
    service.gate = asyncio.Event()
    lanes = lanes_of(service)
    lanes.take({TP: [record(0, "a:f1:1"), record(1, "b:f2:1")], OTHER: [record(0, "c:g:1", OTHER)]})
    await settled(lanes, lambda: len(service.attempts) == 3)
    halting = asyncio.ensure_future(lanes.halt())
    await asyncio.sleep(0.05)
    assert not halting.done()  # waits for the attempts in flight
    service.gate.set()
    await halting
    assert len(service.sent) == 3 and lanes.commit_points() == {TP: 2, OTHER: 1}
    service.gate = None
    service.down.add("a")
    lanes.take({TP: [record(2, "a:f3:1")]})  # halted: held, not attempted
    await asyncio.sleep(0.05)
    assert len(service.attempts) == 3 and lanes.held == 1
    lanes.drop([TP])
    assert lanes.held == 0 and lanes.commit_points() == {OTHER: 1}
    lanes.resume()
    lanes.take({OTHER: [record(1, "c:g:2", OTHER)]})
    await settled(lanes, lambda: lanes.held == 0)
    assert service.sent[-1] == ("c", "g", "2")


async def test_a_lane_that_delivers_nothing_and_says_nothing_is_made_to_wait() -> None:
    class Silent(Scripted):
        async def deliver(
            self, lane: str, parcels: list[Parcel], go_on: Callable[[], bool]
        ) -> Attempt:
            self.attempts.append(lane)
            return Attempt()

    service = Silent()
    lanes = lanes_of(service)
    lanes.take({TP: [record(0, "a:f1:1")]})
    await settled(lanes, lambda: len(service.attempts) > 2)
    assert lanes.status()["error"] == "the attempt delivered nothing"
    await lanes.cancel()


@pytest.mark.parametrize(
    ("reads", "held", "expected"),
    [
        ([0, 1, 2], [], 3),
        ([0, 1, 2], [1], 1),
        ([5, 6], [6], 6),
    ],
)
def test_an_offset_window_commits_up_to_its_oldest_held_record(
    reads: list[int], held: list[int], expected: int
) -> None:
    window = OffsetWindow()
    for offset in reads:
        window.read(offset, 1.0)
        if offset in held:
            window.hold(offset)
        window.unless_held(offset)
    assert window.commit_point() == expected
    for offset in held:
        window.release(offset)
    assert window.commit_point() == reads[-1] + 1
