"""The console's dead letters: the ring's bounds and answers, and the one tail feeding it."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from vfstream.domain.dead_letters import describe, latest
from vfstream.settings import Settings
from vfstream.web import letters as letters_module
from vfstream.web.letters import LETTER_OVERHEAD, DeadLetterTail, LetterRing, held

BASE_MS = 1_764_633_600_000  # 2025-12-02T00:00:00Z


def letter(n: int, campaign: str = "c1", kind: str = "scoring-row", raw: str = "x") -> bytes:
    return orjson.dumps(
        {
            "kind": kind,
            "campaignId": campaign,
            "bucket": "b",
            "key": f"f{n}.csv",
            "line": n,
            "raw": raw,
            "reasons": [f"reason {n}"],
        }
    )


def answer(ring: LetterRing, campaign: str | None, kind: str | None, limit: int) -> list[Any]:
    return orjson.loads(ring.answer(campaign, kind, limit))["deadLetters"]


def test_answers_are_the_newest_per_campaign_and_kind_as_the_cli_gives_them() -> None:
    rng = random.Random(7)
    ring = LetterRing(per_partition=10_000, answer_cap=10_000)
    described = []
    for n in range(3_000):
        value = letter(n, rng.choice(["c1", "c2", "c3"]), rng.choice(["scoring-row", "k2"]))
        stamp = BASE_MS + rng.randrange(10**7) * 1000 + n  # distinct times
        ring.add(rng.randrange(6), held(value, stamp))  # type: ignore[arg-type]
        described.append(describe(value, stamp))
    for campaign in (None, "c1", "c2", "nope"):
        for kind in (None, "scoring-row", "k2"):
            for limit in (1, 5, 200):
                assert answer(ring, campaign, kind, limit) == latest(
                    described, campaign=campaign, kind=kind, limit=limit
                ), (campaign, kind, limit)


def test_an_answer_holds_at_most_answer_cap_letters_newest_first() -> None:
    ring = LetterRing(answer_cap=200)
    for n in range(1_000):
        ring.add(0, held(letter(n, campaign=f"c{n}"), BASE_MS + n * 1000))  # type: ignore[arg-type]
    shown = answer(ring, None, None, 20)
    assert len(shown) == 200
    assert [item["line"] for item in shown] == list(range(999, 799, -1))


def test_each_partition_keeps_its_newest_letters_only() -> None:
    ring = LetterRing(per_partition=100)
    for n in range(250):
        ring.add(n % 2, held(letter(n), BASE_MS + n * 1000))  # type: ignore[arg-type]
    assert len(ring) == 200
    lines = sorted(item["line"] for item in answer(ring, "c1", "scoring-row", 200))
    assert lines == list(range(50, 250))


def test_all_letters_together_stay_within_the_byte_bound() -> None:
    bound = 200_000
    ring = LetterRing(per_partition=2_000, max_bytes=bound)
    for n in range(3_000):
        raw = "y" * (480 if n % 3 == 0 else 20)
        ring.add(n % 3, held(letter(n, raw=raw), BASE_MS + n * 1000))  # type: ignore[arg-type]
        assert ring.held_bytes <= bound
    # The fullest partition (the one with long raw text) gave up most of its letters.
    assert 0 < len(ring._parts[0]) < min(len(ring._parts[1]), len(ring._parts[2]))
    assert abs(len(ring._parts[1]) - len(ring._parts[2])) <= 1
    assert ring.held_bytes == sum(
        len(item[3]) + LETTER_OVERHEAD for part in ring._parts.values() for item in part
    )


def test_raw_text_is_cut_to_500_characters_and_long_ids_to_1000() -> None:
    value = orjson.dumps(
        {"kind": "scoring-row", "campaignId": "c" * 5000, "raw": "r" * 5000, "reasons": ["x"]}
    )
    kept = held(value, BASE_MS)
    assert kept is not None
    shown = orjson.loads(kept[3])
    assert len(shown["raw"]) == 501 and len(shown["campaignId"]) == 1001
    assert held(b"not json", BASE_MS) is None and held(b'{"no": "kind"}', BASE_MS) is None


def test_an_answer_is_computed_once_per_change_and_a_busy_ring_is_resorted_once_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [0.0]
    ring = LetterRing(clock=lambda: now[0])
    ring.add(0, held(letter(1), BASE_MS))  # type: ignore[arg-type]
    first = ring.answer(None, None, 20)
    assert ring.answer(None, None, 20) is first  # the same bytes, not computed again
    ring.add(0, held(letter(2), BASE_MS + 1000))  # type: ignore[arg-type]
    now[0] = 0.5
    assert ring.answer(None, None, 20) is first  # within a second of the last sort
    now[0] = 1.1
    assert [item["line"] for item in answer(ring, None, None, 20)] == [2, 1]


class FakeConsumer:
    """A consumer over fixed messages: what the tail calls of aiokafka's."""

    made: list[FakeConsumer] = []

    def __init__(self, messages: dict[int, list[bytes]], fail: bool = False) -> None:
        self.messages = messages
        self.fail = fail
        self.positions: dict[TopicPartition, int] = {}
        self.stopped = False
        FakeConsumer.made.append(self)

    async def start(self) -> None:
        await asyncio.sleep(0.01)
        if self.fail:
            raise ConnectionError("no broker")

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(self.messages)

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.positions = dict.fromkeys(partitions, 0)

    async def beginning_offsets(self, partitions: list[TopicPartition]) -> dict:
        return dict.fromkeys(partitions, 0)

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict:
        return {tp: len(self.messages[tp.partition]) for tp in partitions}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        out: dict[TopicPartition, list[Any]] = {}
        for tp, at in self.positions.items():
            values = self.messages[tp.partition][at : at + max_records]
            if values:
                out[tp] = [
                    SimpleNamespace(
                        value=v, timestamp=BASE_MS + (tp.partition * 10**4 + at + i) * 1000
                    )
                    for i, v in enumerate(values)
                ]
                self.positions[tp] = at + len(values)
        if not out:
            await asyncio.sleep(0.01)
        return out

    async def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def consumers(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    FakeConsumer.made = []
    setup: dict[str, Any] = {"messages": {0: [letter(n) for n in range(3000)], 1: []}}

    def consumer(settings: Settings, *topics: str, **options: Any) -> FakeConsumer:
        assert options["isolation_level"] == "read_committed"
        return FakeConsumer(setup["messages"], fail=setup.get("fail", False))

    monkeypatch.setattr(letters_module.kafka, "consumer", consumer)
    return setup


async def test_concurrent_askers_of_any_query_share_one_reader(consumers: dict) -> None:
    tail = DeadLetterTail(Settings(), per_partition=2_000)
    try:
        queries = [("c1", None, 5), (None, "scoring-row", 20), (None, None, 200), ("x", None, 1)]
        answers = await asyncio.gather(
            *(tail.answer(*queries[n % len(queries)]) for n in range(200))
        )
        assert len(FakeConsumer.made) == 1 and tail.readers_started == 1
        assert len(tail.ring) == 2_000  # the newest 2,000 of partition 0's 3,000
        lines = [item["line"] for item in orjson.loads(answers[0])["deadLetters"]]
        assert lines == [2999, 2998, 2997, 2996, 2995]
        # Letters arriving later are followed by the same reader.
        consumers["messages"][1].append(letter(5000))
        await asyncio.sleep(0.1)
        letters_module.LetterRing._reindex(tail.ring)
        newest = orjson.loads(await tail.answer(None, None, 1))["deadLetters"]
        assert {item["line"] for item in newest} >= {5000}
        assert len(FakeConsumer.made) == 1
    finally:
        await tail.stop()
    assert FakeConsumer.made[0].stopped and len(tail.ring) == 0


async def test_the_reader_stops_and_lets_go_of_its_letters_when_nobody_asks(
    consumers: dict,
) -> None:
    tail = DeadLetterTail(Settings(), idle_seconds=0.2)
    await tail.answer(None, None, 20)
    assert tail.running and len(tail.ring) > 0
    await asyncio.sleep(1.5)
    assert not tail.running and len(tail.ring) == 0 and FakeConsumer.made[0].stopped
    await tail.answer(None, None, 20)  # asked again: a new reader
    assert len(FakeConsumer.made) == 2
    await tail.stop()


async def test_a_broker_away_fails_the_askers_and_is_retried_later(
    consumers: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumers["fail"] = True
    tail = DeadLetterTail(Settings())
    results = await asyncio.gather(
        *(tail.answer(None, None, 20) for _ in range(50)), return_exceptions=True
    )
    assert all(isinstance(result, ConnectionError) for result in results)
    assert len(FakeConsumer.made) == 1 and FakeConsumer.made[0].stopped
    with pytest.raises(ConnectionError):  # within the retry pause: no new reader
        await tail.answer(None, None, 20)
    assert len(FakeConsumer.made) == 1
    monkeypatch.setattr(letters_module, "RETRY_SECONDS", 0.0)
    consumers["fail"] = False
    assert orjson.loads(await tail.answer("c1", None, 1))["deadLetters"]
    assert len(FakeConsumer.made) == 2
    await tail.stop()
