"""The worker's assembly (issue #22): what runs beside the agents is a list of small parts,
each a ``mode.Service`` started and stopped with the app, and the objects the stream
consumer needs are handed to it on the transport, not hung on the Faust app."""

from __future__ import annotations

import asyncio
from typing import Any

from vfstream.settings import Settings
from vfstream.stream import assembly
from vfstream.stream.assembly import Every, Task, build_app

QUIET = {
    "listen_for_notifications": False,
    "mirror_to_dynamodb": False,
    "forward_to_entry_service": False,
    "forward_to_kinesis": False,
}


def periods(worker: Any) -> dict[str, float]:
    return {part.name: part.seconds for part in worker.parts if isinstance(part, Every)}


def test_the_timers_keep_their_periods(tmp_path: Any) -> None:
    worker = build_app(Settings(data_dir=tmp_path, **QUIET))
    assert periods(worker) == {
        "warn overdue runs": 10.0,
        "flush idle books": 0.05,
        "fill tails": 1.0,
        "reannounce snapshots": 5.0,
        "measure lag": 5.0,
        "sample activity": 1.0,
    }
    assert [p.name for p in worker.parts if isinstance(p, Task)] == ["diagnostics"]


def test_the_settings_turn_the_relays_and_the_listener_on(tmp_path: Any) -> None:
    on = dict.fromkeys(QUIET, True)
    worker = build_app(Settings(data_dir=tmp_path, **on))
    tasks = [p.name for p in worker.parts if isinstance(p, Task)]
    assert tasks == [
        "notification listener",
        "DynamoDB mirror",
        "entry forwarder",
        "Kinesis forwarder",
        "diagnostics",
    ]


def test_the_consumer_gets_the_ledgers_positions_through_the_transport(tmp_path: Any) -> None:
    worker = build_app(Settings(data_dir=tmp_path, **QUIET))
    hooks = worker.app.transport.hooks
    assert hooks.recorded == worker.topology.recorded_position
    assert hooks.gaps is not None
    assert not hasattr(worker.app, "recorded_positions")
    assert not hasattr(worker.app, "fetched_gaps")


async def test_a_timer_ticks_every_period_and_not_once_the_worker_stops() -> None:
    ticks: list[float] = []
    stopping = False

    async def tick() -> None:
        ticks.append(asyncio.get_running_loop().time())

    timer = Every("t", 0.01, tick, lambda: stopping)
    await timer.start()
    await asyncio.sleep(0.1)
    assert len(ticks) >= 3
    stopping = True
    await asyncio.sleep(0.05)
    seen = len(ticks)
    await asyncio.sleep(0.05)
    assert len(ticks) == seen
    await timer.stop()


async def test_a_relay_is_run_again_after_a_failure(monkeypatch: Any) -> None:
    runs: list[int] = []
    stop = asyncio.Event()

    class Flaky:
        async def run(self, should_stop: Any) -> None:
            runs.append(1)
            if len(runs) == 1:
                raise RuntimeError("boom")
            stop.set()
            while not should_stop():
                await asyncio.sleep(0.01)

    real_sleep = asyncio.sleep
    monkeypatch.setattr(assembly.asyncio, "sleep", lambda s: real_sleep(0 if s == 5 else s))
    part = assembly.relay("flaky", Flaky, stop.is_set)
    await part.start()
    await asyncio.wait_for(stop.wait(), 2)
    await part.stop()
    assert len(runs) == 2
