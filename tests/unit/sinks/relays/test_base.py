"""The relay around its lanes, with a fake consumer: what it commits, when it stops reading,
how it hands partitions over, and what ``/statuses`` and the console say about it."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from tests.support.waiting import eventually
from tests.unit.sinks.relays.test_lanes import FAST, TP, Scripted, record
from vfstream.settings import Settings
from vfstream.sinks.relays import base
from vfstream.sinks.relays.base import TopicRelay, relay_statuses
from vfstream.web.console import worker_alarms


class FakeConsumer:
    def __init__(self, assigned: set[TopicPartition]) -> None:
        self.assigned = set(assigned)
        self.paused_tps: set[TopicPartition] = set()
        self.commits: list[dict[TopicPartition, int]] = []
        self.committed_offsets = {}
        self.seeks = []

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_tps)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused_tps.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused_tps.difference_update(tps)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    # A read: ``during_read`` runs while it waits (a rebalance overtaking it), then the batch.
    batch: dict[TopicPartition, list[Any]] | None = None
    during_read: Any = None
    committed_offsets: dict[TopicPartition, int | None]
    seeks: list[tuple[TopicPartition, int]]

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list]:
        if self.during_read is not None:
            await self.during_read()
        batch, self.batch = self.batch or {}, None
        return batch

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.committed_offsets.get(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        self.seeks.extend((tp, 0) for tp in tps)


def relay_of(service: Scripted, **options: Any) -> tuple[TopicRelay, FakeConsumer]:
    relay = TopicRelay(Settings(app_id="vfunit"), "test-relay", ["t"], service, **options)
    relay.lanes.backoff = FAST
    consumer = FakeConsumer({TP})
    relay._consumer = consumer  # type: ignore[assignment]
    return relay, consumer


async def until(check: Any) -> None:
    await eventually(lambda: asyncio.sleep(0.01, check()), bool, timeout=5, interval=0.01)


async def test_commits_advance_only_to_the_oldest_record_not_yet_delivered() -> None:
    service = Scripted()
    service.down.add("a")
    relay, consumer = relay_of(service)
    relay.lanes.take({TP: [record(0, "b:x:1"), record(1, "a:y:1"), record(2, "b:z:1")]})
    await until(lambda: len(service.sent) == 2)
    await relay._commit()
    assert consumer.commits == [{TP: 1}]
    await relay._commit()  # nothing new: no commit
    assert len(consumer.commits) == 1
    service.down.clear()
    await until(lambda: relay.lanes.held == 0)
    await relay._commit()
    assert consumer.commits[-1] == {TP: 3}


async def test_a_revocation_waits_for_the_attempt_in_flight_commits_it_and_forgets_the_rest() -> (
    None
):
    service = Scripted()
    service.gate = asyncio.Event()
    relay, consumer = relay_of(service, concurrency=2)
    relay.lanes.take({TP: [record(0, "a:x:1"), record(1, "b:y:1")]})
    await until(lambda: len(service.attempts) == 2)
    service.down.add("b")
    revoking = asyncio.ensure_future(relay.revoked({TP}))
    await asyncio.sleep(0.05)
    assert not revoking.done()
    assert relay._revoking  # a batch read meanwhile is not taken
    service.gate.set()
    await revoking
    assert consumer.commits == [{TP: 1}]  # a delivered, b waited
    assert relay.lanes.held == 0 and relay.lanes.commit_points() == {}
    assert not relay._revoking


async def test_reading_pauses_while_the_most_parcels_are_held() -> None:
    service = Scripted()
    service.down.add("a")
    relay, consumer = relay_of(service, max_held=2)
    relay.lanes.take({TP: [record(0, "a:x:1"), record(1, "a:y:1")]})
    relay._press_back(consumer)  # type: ignore[arg-type]
    assert consumer.paused_tps == {TP} and relay.status()["paused"]
    service.down.clear()
    await until(lambda: relay.lanes.held == 0)
    relay._press_back(consumer)  # type: ignore[arg-type]
    assert consumer.paused_tps == set() and not relay.status()["paused"]


async def test_statuses_and_the_console_name_a_waiting_relay() -> None:
    service = Scripted()
    service.down.add("campaign-1")
    relay, _ = relay_of(service)
    relay.lanes.take({TP: [record(0, "campaign-1:x:1")]})
    await until(lambda: relay.lanes.waiting_lanes())
    base._RUNNING[relay.group_id] = relay
    try:
        status = relay_statuses("vfunit")["test-relay"]
        assert (status["state"], status["waitingFor"], status["error"]) == (
            "waiting",
            "the service",
            "HTTP 503",
        )
        assert status["lanes"][0]["lane"] == "campaign-1" and status["held"] == 1
        assert relay_statuses("another-app") == {}
        [alarm] = worker_alarms("vfunit")["relaysWaiting"]
        assert alarm["relay"] == "test-relay" and alarm["waitingFor"] == "the service"
        assert alarm["error"] == "HTTP 503" and alarm["since"] == status["since"]
        service.down.clear()
        await until(lambda: relay.lanes.held == 0)
        assert worker_alarms("vfunit")["relaysWaiting"] == []
        assert relay_statuses("vfunit")["test-relay"]["state"] == "delivering"
    finally:
        del base._RUNNING[relay.group_id]
        await relay.lanes.cancel()


async def test_a_revocation_cancels_attempts_still_in_flight_after_its_grace(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(base, "REVOKE_GRACE_SECONDS", 0.1)
    service = Scripted()
    service.gate = asyncio.Event()  # never opened: a call that hangs
    relay, consumer = relay_of(service)
    relay.lanes.take({TP: [record(0, "a:x:1")]})
    await until(lambda: service.attempts == ["a"])
    await asyncio.wait_for(relay.revoked({TP}), 2)
    assert all(commit == {TP: 0} for commit in consumer.commits)  # nothing past the record
    assert relay.lanes.held == 0 and service.sent == []


async def test_a_read_overtaken_by_a_rebalance_is_read_again_from_the_last_commit() -> None:
    """The records a read returns after a revocation may be the new assignment's first ones:
    dropping them without rewinding would skip them (and a later commit would pass them)."""
    service = Scripted()
    relay, consumer = relay_of(service)
    other = TopicPartition("changelog", 2)
    consumer.assigned = {TP, other}

    async def rebalance() -> None:
        await relay.revoked({TP, other})
        consumer.assigned = {TP}  # the new assignment: TP stays, ``other`` moves away
        consumer.during_read = None

    consumer.during_read = rebalance
    consumer.committed_offsets = {TP: 7}
    consumer.batch = {TP: [record(7, "a:x:1"), record(8, "a:y:1")], other: [record(3, "b:z:1")]}
    await relay._poll(consumer)  # type: ignore[arg-type]
    assert relay.lanes.held == 0 and service.attempts == []
    assert consumer.seeks == [(TP, 7)]
    consumer.batch = {TP: [record(7, "a:x:1"), record(8, "a:y:1")]}
    await relay._poll(consumer)  # type: ignore[arg-type]
    await until(lambda: relay.lanes.held == 0 and len(service.sent) == 2)
    await relay._commit()
    assert consumer.commits[-1] == {TP: 9}
