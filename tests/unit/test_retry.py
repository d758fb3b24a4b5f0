"""The one retry helper: full-jitter backoff, and a loop that stops where it is told."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfstream.retry import Backoff, retrying


@given(st.integers(min_value=-3, max_value=10_000), st.floats(0.001, 5), st.floats(0.001, 60))
def test_a_wait_is_never_negative_nor_past_its_cap(attempt: int, first: float, cap: float) -> None:
    seconds = Backoff(first, cap).seconds(attempt)

    assert 0.0 <= seconds <= min(cap, first * 2 ** min(max(attempt, 0), 32))


def test_waits_grow_with_the_attempt_on_average() -> None:
    backoff = Backoff(0.1, 100.0)
    early = sum(backoff.seconds(1) for _ in range(2000)) / 2000
    late = sum(backoff.seconds(5) for _ in range(2000)) / 2000

    assert 0.05 < early < 0.15  # uniform up to 0.2
    assert 1.2 < late < 2.0  # uniform up to 3.2


class Flaky(Exception):
    """A failure worth retrying."""


async def test_retries_what_it_names_until_the_call_succeeds() -> None:
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise Flaky
        return "done"

    async for attempt in retrying(Flaky, attempts=5, backoff=Backoff(0.001, 0.001)):
        with attempt:
            answer = await call()

    assert (answer, calls) == ("done", 3)


async def test_gives_up_after_its_attempts_with_the_last_error() -> None:
    calls = 0
    with pytest.raises(Flaky):
        async for attempt in retrying(Flaky, attempts=3, backoff=Backoff(0.001, 0.001)):
            with attempt:
                calls += 1
                raise Flaky

    assert calls == 3


async def test_other_errors_pass_at_once() -> None:
    calls = 0
    with pytest.raises(KeyError):
        async for attempt in retrying(lambda exc: isinstance(exc, Flaky), attempts=5):
            with attempt:
                calls += 1
                raise KeyError("bug")

    assert calls == 1


async def test_a_time_bound_stops_an_endless_failure() -> None:
    calls = 0
    with pytest.raises(Flaky):
        async for attempt in retrying(Flaky, within=0.05, backoff=Backoff(0.01, 0.01)):
            with attempt:
                calls += 1
                raise Flaky

    assert 2 <= calls < 50
