"""Retrying with backoff, in one place, on tenacity.

Every retry in vfstream waits the same way: exponential backoff with full jitter (a random
wait up to ``first * 2**attempt``, capped), so many workers retrying one service spread
out instead of arriving together. ``retrying`` is the loop for calls that can simply be
made again; ``Backoff.seconds`` serves the loops that must stay their own (a relay whose
sleep a rebalance interrupts, the Slack notifier's deadline-bound attempts and Retry-After
waits, a poller that never gives up).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_any,
    stop_never,
    wait_random_exponential,
)
from tenacity.stop import stop_base


@dataclass(frozen=True)
class Backoff:
    """Waits before retry ``attempt`` (1 is the first retry): up to ``first * 2**attempt``
    seconds, never more than ``cap``."""

    first: float = 0.2
    cap: float = 10.0

    def seconds(self, attempt: int) -> float:
        return random.uniform(0.0, min(self.cap, self.first * 2 ** min(max(attempt, 0), 32)))

    def wait(self) -> wait_random_exponential:
        return wait_random_exponential(multiplier=self.first, max=self.cap)


def retrying(
    retry_on: type[BaseException]
    | tuple[type[BaseException], ...]
    | Callable[[BaseException], bool],
    *,
    attempts: int | None = None,
    within: float | None = None,
    backoff: Backoff = Backoff(),
    before_sleep: Callable[[RetryCallState], Any] | None = None,
) -> AsyncRetrying:
    """``async for attempt in retrying(...): with attempt: ...`` — the call again while it
    raises what ``retry_on`` names (classes, or a predicate), until ``attempts`` calls or
    ``within`` seconds (neither: until it succeeds); then the last error is raised."""
    if isinstance(retry_on, type | tuple):
        retry = retry_if_exception_type(retry_on)
    else:
        retry = retry_if_exception(retry_on)
    stops: list[stop_base] = []
    if attempts is not None:
        stops.append(stop_after_attempt(attempts))
    if within is not None:
        stops.append(stop_after_delay(within))
    return AsyncRetrying(
        retry=retry,
        stop=stop_any(*stops) if stops else stop_never,
        wait=backoff.wait(),
        before_sleep=before_sleep,
        reraise=True,
    )
