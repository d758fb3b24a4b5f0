"""Answers shared by concurrent askers: one computation in flight per key, kept a while."""

from __future__ import annotations

import asyncio

import pytest

from vfstream.web.shared import SharedAnswers, UnchangedAnswers


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_concurrent_askers_share_one_computation_and_its_answer() -> None:
    shared: SharedAnswers[int] = SharedAnswers(ttl=1.0)
    started = 0
    gate = asyncio.Event()

    async def compute() -> int:
        nonlocal started
        started += 1
        await gate.wait()
        return 42

    askers = [asyncio.create_task(shared.get("q", compute)) for _ in range(300)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*askers) == [42] * 300
    assert started == 1 and shared.computed == 1


async def test_an_answer_is_kept_for_its_ttl_then_computed_again() -> None:
    clock = Clock()
    shared: SharedAnswers[float] = SharedAnswers(ttl=1.0, clock=clock)

    async def compute() -> float:
        return clock.now

    assert await shared.get("q", compute) == 0.0
    clock.now = 0.9
    assert await shared.get("q", compute) == 0.0
    assert shared.fresh("q") == 0.0
    clock.now = 1.2
    assert shared.fresh("q") is None
    assert await shared.get("q", compute) == 1.2
    assert shared.computed == 2


async def test_different_keys_compute_separately_and_the_oldest_goes_past_maxsize() -> None:
    shared: SharedAnswers[str] = SharedAnswers(ttl=10.0, maxsize=2)
    for key in ("a", "b", "c"):

        async def compute(key: str = key) -> str:
            return key.upper()

        assert await shared.get(key, compute) == key.upper()
    assert shared.fresh("a") is None and shared.fresh("b") == "B" and shared.fresh("c") == "C"


async def test_a_failure_reaches_every_waiter_and_is_not_kept() -> None:
    shared: SharedAnswers[int] = SharedAnswers(ttl=10.0)
    calls = 0

    async def failing() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise ConnectionError("broker away")

    results = await asyncio.gather(
        *(shared.get("q", failing) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(result, ConnectionError) for result in results) and calls == 1

    async def working() -> int:
        return 7

    assert await shared.get("q", working) == 7


async def test_a_cancelled_asker_does_not_cancel_the_computation_others_wait_for() -> None:
    shared: SharedAnswers[int] = SharedAnswers(ttl=10.0)
    gate = asyncio.Event()

    async def compute() -> int:
        await gate.wait()
        return 1

    first = asyncio.create_task(shared.get("q", compute))
    second = asyncio.create_task(shared.get("q", compute))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.set()
    assert await second == 1 and shared.computed == 1


def test_unchanged_answers_are_made_again_only_when_the_value_changes() -> None:
    memo = UnchangedAnswers(maxsize=2)
    made: list[bytes] = []

    def maker(value: bytes) -> bytes:
        made.append(value)
        return value.upper()

    for _ in range(100):
        assert memo.get("c1", b"abc", lambda: maker(b"abc")) == b"ABC"
    assert made == [b"abc"]
    assert memo.get("c1", b"abd", lambda: maker(b"abd")) == b"ABD"
    assert made == [b"abc", b"abd"]
    memo.get("c2", b"x", lambda: maker(b"x"))
    memo.get("c3", b"y", lambda: maker(b"y"))  # c1 is the least recently asked: it goes
    memo.get("c1", b"abd", lambda: maker(b"abd"))
    assert made == [b"abc", b"abd", b"x", b"y", b"abd"] and memo.made == 5
