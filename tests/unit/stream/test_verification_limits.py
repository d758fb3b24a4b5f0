"""Poison records never stop the verification agent (issue #12): a record that would take a
fan past a limit, or that the rules cannot apply, is dead-lettered alone, the fan keeps its
last good state, the run still settles and the records around it are applied."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

import vfstream.stream.verification as verification
from tests.support.ledger import PARTITION, T0, FakeTable, event, recount
from vfstream.domain.fans import decode_envelope
from vfstream.domain.keys import run_key
from vfstream.domain.limits import Limits
from vfstream.domain.records import RecordSource, ScoreRecord
from vfstream.domain.state import WriteStatus
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
