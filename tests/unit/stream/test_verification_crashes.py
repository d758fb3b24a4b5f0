"""The exact-count bookkeeping under crashes, as a property: whatever prefix of the changelog
survives, whichever offset was last committed — even one past records never applied, as
Faust can commit — and whichever records the stream drops, resuming where the worker does
(``resume_offset``) ends with partial counts equal to a recount of the fan states, in the
local store and in the changelog another worker would recover from, and with the same states
as one uninterrupted run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.ledger import (
    PARTITION,
    FakeSource,
    FakeTable,
    Run,
    event,
    fan_record,
    fetched_in,
    partials,
    records,
    recount,
    replay_changelog,
    with_markers,
)
from vfstream.domain.fans import decode_envelope
from vfstream.domain.keys import partial_key, position_key
from vfstream.domain.records import ScoreRecord
from vfstream.stream.transport import resume_offset


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(records, min_size=1, max_size=30),
    sizes=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    markers=st.sets(st.integers(0, 40), max_size=5),
    dropped=st.sets(st.integers(0, 40), max_size=8),
    crash_at=st.integers(0, 30),
    survive=st.floats(0, 1),
    commit_lag=st.integers(-5, 5),
    same_machine=st.booleans(),
    mid_flush=st.booleans(),
    flush_every=st.integers(1, 6),
)
def test_crash_anywhere_then_replay_leaves_partials_equal_to_a_recount(
    items: list[ScoreRecord],
    sizes: list[int],
    markers: set[int],
    dropped: set[int],
    crash_at: int,
    survive: float,
    commit_lag: int,
    same_machine: bool,
    mid_flush: bool,
    flush_every: int,
) -> None:
    events = with_markers(items, markers, sizes)
    end = events[-1].message.offset + 1
    # What the stream hands over: some records are fetched and dropped, as Faust does
    # around a rebalance; the ledger reads them directly.
    delivered = [item for item in events if item.message.offset not in dropped]

    async def scenario() -> None:
        uninterrupted = Run(FakeTable(), flush_every, tail_idle_seconds=0.0)
        await uninterrupted.process(events, stop_after=None)
        first = Run(FakeTable(), flush_every, FakeSource(events), tail_idle_seconds=0.0)
        stop = min(crash_at, len(delivered))
        await first.process(delivered, stop_after=stop, mid_flush=mid_flush)
        # The crash: the changelog keeps every vouched-for write and maybe some more; the
        # committed offset trails the acks by a little.
        log = first.table.changelog
        kept = first.durable_len + round((len(log) - first.durable_len) * survive)
        acked_to = max(first.acked) + 1 if first.acked else 0
        if same_machine:
            # Restart on the same disk: the local store kept every write it made (made once
            # the broker held it), and Faust's recovery applies what the changelog holds
            # past the offset the store had persisted.
            table = FakeTable(
                {**first.table.data, **replay_changelog(log[first.durable_len : kept])}
            )
        else:  # another worker recovers from the changelog alone
            table = FakeTable(replay_changelog(log[:kept]))
        table.changelog = list(log[:kept])
        raw_position = table.data.get(position_key(PARTITION))
        recorded = int(raw_position) if raw_position else None
        # A negative lag commits past the acks (records never applied), as Faust can once
        # it has acked something, so once a flush recorded a position. Not modelled with a
        # local store holding writes the changelog lost: that position may then be past
        # what another worker could recover.
        overcommit = recorded is not None and not (same_machine and mid_flush)
        lag = commit_lag if overcommit else max(commit_lag, 0)
        committed = min(max(acked_to - lag, 0), end)
        start = resume_offset(committed, recorded) or 0
        second = Run(table, flush_every, FakeSource(events), tail_idle_seconds=0.0)
        await second.process(
            [item for item in delivered if item.message.offset >= start], stop_after=None
        )
        # The stream went quiet: its consumer's position is the partition's end.
        await second.ledger.fill_tails({PARTITION: end})

        local = second.table.data
        assert partials(local) == recount(local)
        durable = replay_changelog(second.table.changelog)
        assert partials(durable) == recount(durable)
        assert recount(durable) == recount(local)
        assert recount(durable) == recount(uninterrupted.table.data)

    asyncio.run(scenario())


def test_redelivered_record_rewrites_a_state_the_changelog_never_got() -> None:
    record = fan_record("u1")

    async def scenario() -> tuple[FakeTable, Callable[[], None]]:
        first = Run(FakeTable(), flush_every=1)
        await first.process([event(0, record)], stop_after=None)
        # Same disk, but the changelog lost everything (killed before the broker acked).
        table = FakeTable(first.table.data)
        second = Run(table, flush_every=1)
        await second.process([event(0, record)], stop_after=None)
        return table, lambda: None

    table, _ = asyncio.run(scenario())
    durable = replay_changelog(table.changelog)
    assert recount(durable) == {"c1": (1, 0, 0)}
    assert orjson.loads(durable[partial_key(PARTITION, "c1")])["verified"] == 1


def test_a_fan_with_several_rows_in_one_batch_is_a_no_op_when_the_batch_comes_again() -> None:
    rows = [fan_record("u1")] + [
        fan_record("u1").model_copy(update={"id": f"u100{rank}", "rank": rank, "isVerified": False})
        for rank in (1, 2)
    ]

    async def scenario() -> Run:
        run = Run(FakeTable(), flush_every=1)
        await run.ledger.handle(event(0, *rows), run._ack)
        statuses = await run.ledger.handle(event(0, *rows), run._ack)
        assert statuses == {"unchanged": 3}
        return run

    run = asyncio.run(scenario())
    durable = replay_changelog(run.table.changelog)
    assert recount(durable) == partials(durable) == {"c1": (0, 1, 0)}
    state = decode_envelope(durable[b"c1:u1"]).state
    assert len(state.events) == 3 and state.version == 3


def test_a_rebalance_drops_the_unflushed_book_and_its_events_count_once_when_they_come_again() -> (
    None
):
    fans = [fan_record(f"u{n}") for n in range(4)]

    async def scenario() -> Run:
        run = Run(FakeTable(), flush_every=100, flush_seconds=0.2)
        for offset in range(3):  # applied in generation 1, never flushed
            await run.ledger.handle(fetched_in(1, offset, fans[offset]), run._ack)
        # The rebalance restarts the partition at its resume offset, 0.
        for offset in range(4):
            await run.ledger.handle(fetched_in(2, offset, fans[offset]), run._ack)
        await run.ledger.flush(PARTITION, run._ack)
        return run

    run = asyncio.run(scenario())
    durable = replay_changelog(run.table.changelog)
    assert recount(durable) == partials(durable) == {"c1": (4, 0, 0)}
    assert run.acked == [0, 1, 2, 3]  # generation 2's events only


def test_an_event_fetched_before_the_latest_rebalance_is_ignored_and_never_acked() -> None:
    async def scenario() -> tuple[Run, Any]:
        run = Run(FakeTable(), flush_every=1)
        await run.ledger.handle(fetched_in(2, 0, fan_record("u0")), run._ack)
        late = await run.ledger.handle(fetched_in(1, 1, fan_record("u1")), run._ack)
        await run.ledger.flush(PARTITION, run._ack)
        return run, late

    run, late = asyncio.run(scenario())
    assert late is None
    assert run.ledger.stale_events == 1
    assert run.acked == [0]
    assert recount(run.table.data) == {"c1": (1, 0, 0)}


def test_each_flush_records_the_position_after_its_last_event_as_its_last_write() -> None:
    async def scenario() -> Run:
        run = Run(FakeTable(), flush_every=100, flush_seconds=0.2)
        for offset in (0, 1, 3):  # 2: a transaction marker
            await run.ledger.handle(fetched_in(1, offset, fan_record(f"u{offset}")), run._ack)
        await run.ledger.flush(PARTITION, run._ack)
        return run

    run = asyncio.run(scenario())
    assert run.table.changelog[-1] == (position_key(PARTITION), b"4")
    assert run.ledger.recorded_position(PARTITION) == 4


def test_an_idle_flush_drops_a_book_of_an_older_generation_without_acking_it() -> None:
    generation = {"now": 1}

    async def scenario() -> tuple[Run, int]:
        run = Run(FakeTable(), flush_every=100, flush_seconds=0.2)
        run.ledger._current_generation = lambda: generation["now"]
        await run.ledger.handle(fetched_in(1, 0, fan_record("u0")), run._ack)
        generation["now"] = 2
        await asyncio.sleep(0.3)  # past the idle flush interval
        return run, await run.ledger.flush_idle()

    run, flushed = asyncio.run(scenario())
    assert flushed == 0
    assert run.acked == []
    assert run.table.changelog == []
