"""Poison records never stop the verification agent (issue #12): a record that would take a
fan past a limit, or that the rules cannot apply, is dead-lettered alone, the fan keeps its
last good state, the run still settles and the records around it are applied."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

import vfstream.stream.counting as verification
from tests.support.ledger import PARTITION, T0, FakeTable, event, recount
from vfstream.domain.fans import decode_envelope
from vfstream.domain.keys import partial_key, run_key
from vfstream.domain.ledger import PartialCounts
from vfstream.domain.limits import Limits
from vfstream.domain.records import RecordSource, ScoreRecord
from vfstream.domain.state import WriteStatus
from vfstream.stream.ports import FlushPolicy
from vfstream.stream.verification import VerificationLedger

SOURCE = RecordSource(bucket="b", key="k", etag="e", line=1, run="run-1")


def poison(fan: str, rank: int, event_id: str) -> ScoreRecord:
    return ScoreRecord(
        campaignId="c1",
        globalUserId=fan,
        id=f"{fan}{rank:03d}",
        rank=rank,
        eventId=event_id,
        score=0.5,
        isVerified=True,
        scoredAt=T0,
        source=SOURCE,
    )


class Harness:
    def __init__(self, limits: Limits) -> None:
        self.table = FakeTable()
        self.letters: list[dict[str, Any]] = []
        self.ledger = VerificationLedger(self.table, self._emit, self._dead_letter, limits=limits)

    async def _emit(self, snapshots: list[tuple[str, bytes]]) -> None:
        return None

    async def _dead_letter(self, key: bytes, value: bytes) -> None:
        self.letters.append(orjson.loads(value))

    async def _ack(self, item: Any) -> None:
        return None

    def run(self, records: list[ScoreRecord]) -> list[WriteStatus | None]:
        async def scenario() -> list[WriteStatus | None]:
            statuses = []
            for offset, record in enumerate(records):
                counted = await self.ledger.handle(event(offset, record), self._ack)
                assert counted is not None
                [(status, _)] = counted.items()
                statuses.append(WriteStatus(status))
            await self.ledger.flush(PARTITION, self._ack)
            return statuses

        return asyncio.run(scenario())

    def state_of(self, fan: str) -> Any:
        return decode_envelope(self.table.data[f"c1:{fan}".encode()]).state


def test_a_record_that_would_grow_a_fan_past_the_state_limit_is_dead_lettered_alone() -> None:
    # The reported poison file: rows of 60,000-character event ids for one fan.
    harness = Harness(Limits(state_bytes=100_000))
    records = [poison("u1", rank, "e" * 60_000) for rank in range(3)] + [poison("u2", 0, "ok")]
    statuses = harness.run(records)

    assert statuses == [
        WriteStatus.CREATED,
        WriteStatus.INVALID,
        WriteStatus.INVALID,
        WriteStatus.CREATED,
    ]
    assert [letter["offset"] for letter in harness.letters] == [1, 2]
    assert all("over the limit of 100000" in letter["reasons"][0] for letter in harness.letters)
    assert harness.letters[0]["kind"] == "score-record"
    assert harness.letters[0]["campaignId"] == "c1"
    # The fan keeps its last good state; the other fan is applied; counts match the states.
    assert len(harness.state_of("u1").events) == 1
    assert recount(harness.table.data) == {"c1": (2, 0, 0)}
    # Every record counts towards its run, or the run would never settle.
    run = orjson.loads(harness.table.data[run_key(PARTITION, "run-1")])
    assert run["applied"] == 4
    assert all(len(value) <= 100_000 for value in harness.table.data.values())


def test_a_rank_past_the_events_limit_is_dead_lettered_and_the_fan_keeps_its_state() -> None:
    harness = Harness(Limits(events_per_fan=3))
    statuses = harness.run([poison("u1", 0, "a"), poison("u1", 7, "b")])
    assert statuses == [WriteStatus.CREATED, WriteStatus.INVALID]
    assert "rank 7 is past the limit of 3 events" in harness.letters[0]["reasons"][0]
    assert [e.eventId for e in harness.state_of("u1").events] == ["a"]


def test_a_record_the_rules_cannot_apply_is_dead_lettered_and_the_partition_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = verification.apply_record

    def explode_for_u1(stored: Any, row: Any, *args: Any) -> Any:
        if row.globalUserId == "u1":
            raise ValueError("boom")
        return real(stored, row, *args)

    monkeypatch.setattr(verification, "apply_record", explode_for_u1)
    harness = Harness(Limits())
    statuses = harness.run([poison("u1", 0, "a"), poison("u2", 0, "b")])
    assert statuses == [WriteStatus.FAILED, WriteStatus.CREATED]
    assert harness.letters[0]["reasons"] == ["applying the record failed: ValueError: boom"]
    assert recount(harness.table.data) == {"c1": (1, 0, 0)}


# ---- issue #20: hostile messages from any producer of the topic -------------------------


def raw_event(offset: int, value: bytes) -> Any:
    return event(offset).__class__(key=None, value=value, message=event(offset).message)


def test_a_message_nested_too_deep_for_the_decoder_is_one_dead_letter_and_the_rest_applied() -> (
    None
):
    harness = Harness(Limits())

    async def scenario() -> list[Any]:
        deep = b'{"v":1,"records":[' + b"[" * 20_000 + b"]" * 20_000 + b"]}"
        counted = [
            await harness.ledger.handle(raw_event(0, deep), harness._ack),
            await harness.ledger.handle(raw_event(1, b"[" * 50_000), harness._ack),
            await harness.ledger.handle(event(2, poison("u1", 0, "a")), harness._ack),
        ]
        await harness.ledger.flush(PARTITION, harness._ack)
        return counted

    counted = asyncio.run(scenario())

    assert [dict(c) for c in counted] == [{"invalid": 1}, {"invalid": 1}, {"created": 1}]
    assert len(harness.letters) == 2
    assert all("nested deeper" in letter["reasons"][0] for letter in harness.letters)
    assert recount(harness.table.data) == {"c1": (1, 0, 0)}


def long_id_record(offset: int, campaign: str, run: str = "run-1") -> Any:
    record = poison("u1", 0, "a").model_copy(
        update={"campaignId": campaign, "source": SOURCE.model_copy(update={"run": run})}
    )
    return event(offset, record)


def test_ids_and_run_ids_past_their_limits_leave_no_bookkeeping_behind() -> None:
    """A foreign producer's 45 KB campaign ids once grew one partition's campaign index past
    1 MiB: the flush failed and the worker died. Refused before any bookkeeping now."""
    harness = Harness(Limits())

    async def scenario() -> None:
        for offset in range(30):
            await harness.ledger.handle(
                long_id_record(offset, f"c{offset:02d}" + "x" * 45_000), harness._ack
            )
        await harness.ledger.handle(long_id_record(30, "c1", run="r" * 5_000), harness._ack)
        await harness.ledger.handle(long_id_record(31, "c1\x1b[2J"), harness._ack)
        await harness.ledger.handle(event(32, poison("u1", 0, "a")), harness._ack)
        await harness.ledger.flush(PARTITION, harness._ack)

    asyncio.run(scenario())

    reasons = [letter["reasons"][0] for letter in harness.letters]
    assert reasons[:30] == ["campaignId: 45003 bytes, over the limit of 256"] * 30
    assert reasons[30] == "source.run: 5000 bytes, over the limit of 512"
    assert reasons[31] == "campaignId: holds control characters"
    assert max(len(key) + len(value) for key, value in harness.table.changelog) < 2_000
    assert recount(harness.table.data) == {"c1": (1, 0, 0)}


def test_the_index_no_longer_grows_with_campaigns_and_every_partial_is_re_announced() -> None:
    harness = Harness(Limits())
    records = [
        poison("u1", 0, "a").model_copy(update={"campaignId": f"camp{n:05d}"}) for n in range(500)
    ]

    async def scenario() -> None:
        for offset, record in enumerate(records):
            await harness.ledger.handle(event(offset, record), harness._ack)
        await harness.ledger.flush(PARTITION, harness._ack)

    asyncio.run(scenario())

    index = orjson.loads(harness.table.data[b"#index:%d" % PARTITION])
    assert set(index) == {"runs"} and index["runs"] == ["run-1"]
    announced = {campaign for campaign, _ in harness.ledger.snapshots_for({PARTITION})}
    assert {f"camp{n:05d}" for n in range(500)} <= announced


def test_a_score_in_the_future_or_unstorable_is_refused_and_still_counts_for_its_run() -> None:
    harness = Harness(Limits())
    future = poison("u1", 0, "a").model_copy(
        update={"scoredAt": datetime(9999, 12, 31, tzinfo=UTC)}
    )
    tiny = poison("u2", 0, "a").model_copy(update={"score": 1e-320})

    statuses = harness.run([future, tiny, poison("u3", 0, "a")])

    assert statuses == [WriteStatus.INVALID, WriteStatus.INVALID, WriteStatus.CREATED]
    assert "past the allowed skew of 24 h" in harness.letters[0]["reasons"][0]
    assert "cannot be stored" in harness.letters[1]["reasons"][0]
    progress = orjson.loads(harness.table.data[run_key(PARTITION, "run-1")])
    assert progress["applied"] == 3, "the run still settles"
    assert recount(harness.table.data) == {"c1": (1, 0, 0)}


def test_a_fan_frozen_by_a_far_future_score_before_the_fix_takes_its_next_real_score() -> None:
    # A state stored while such times were accepted: skew of 10,000 years, then the default.
    frozen = poison("u1", 0, "old").model_copy(
        update={"scoredAt": datetime(9999, 12, 31, tzinfo=UTC), "isVerified": False}
    )
    accepting = Harness(Limits(future_skew_seconds=3e11))
    accepting.run([frozen])
    harness = Harness(Limits())
    harness.table = accepting.table
    harness.ledger = VerificationLedger(
        harness.table, harness._emit, harness._dead_letter, limits=Limits()
    )

    async def later() -> None:
        await harness.ledger.handle(event(5, poison("u1", 0, "new")), harness._ack)
        await harness.ledger.flush(PARTITION, harness._ack)

    asyncio.run(later())

    state = harness.state_of("u1")
    assert state.isVerified is True and [e.eventId for e in state.events] == ["new"]
    assert recount(harness.table.data) == {"c1": (1, 0, 0)}


def test_a_book_keeps_a_bounded_number_of_tallies_and_counts_stay_exact_when_read_again() -> None:
    """A worker that lived for months kept a partial and a run tally in memory for every
    campaign and run its partitions ever saw. The book keeps ``cached_tallies`` now; a
    campaign or run dropped from it is read again from the table, and its counts go on
    from where the table has them."""
    table = FakeTable()
    ledger = VerificationLedger(
        table,
        _no_emit,
        _no_letter,
        policy=FlushPolicy(every_records=7, cached_tallies=16),
    )
    rng = random.Random(5)
    records = []
    for n in range(1_500):
        campaign = f"camp{rng.randrange(200):03d}"  # most campaigns come back after eviction
        fan = f"u{rng.randrange(40)}"
        record = poison(fan, 0, "a").model_copy(
            update={
                "campaignId": campaign,
                "isVerified": rng.random() < 0.7,
                "scoredAt": T0 + timedelta(seconds=n),
                "source": SOURCE.model_copy(update={"run": f"run-{campaign}-{n // 500}"}),
            }
        )
        records.append(record)
    largest = 0

    async def scenario() -> None:
        nonlocal largest
        for offset, record in enumerate(records):
            await ledger.handle(event(offset, record), _no_ack)
            book = ledger._books[PARTITION]
            largest = max(largest, len(book.partials), len(book.runs), len(book.flushed))
        await ledger.flush(PARTITION, _no_ack)

    asyncio.run(scenario())

    assert largest <= 16 + 7  # the bound, plus what one flush's records may add before it
    truth = recount(table.data)
    stored = {
        campaign: PartialCounts.model_validate_json(table.data[partial_key(PARTITION, campaign)])
        for campaign in truth
    }
    assert {c: (p.verified, p.rejected, p.selected) for c, p in stored.items()} == truth
    applied: Counter[str] = Counter()
    for key, value in table.data.items():
        if key.startswith(run_key(PARTITION, "")):
            run = orjson.loads(value)
            applied[run["campaignId"]] += run["applied"]
    assert applied == Counter({r.campaignId: 0 for r in records}) + Counter(
        r.campaignId for r in records
    )


async def _no_emit(snapshots: list[tuple[str, bytes]]) -> None:
    return None


async def _no_letter(key: bytes, value: bytes) -> None:
    raise AssertionError(orjson.loads(value))


async def _no_ack(item: Any) -> None:
    return None
