"""Answers shared by everyone asking at once (issue #20): the console is polled every 2 s by
every open page, so an answer is computed once and handed to all who ask while it is fresh,
and askers arriving while it is being computed wait for that one computation instead of
starting their own (single-flight)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class SharedAnswers(Generic[V]):
    """At most ``maxsize`` answers, each kept ``ttl`` seconds; one computation per key at a
    time, whoever asks. A failed computation is not kept: each of its waiters gets the error,
    and the next asker tries again. A waiter that gives up (its request cancelled) does not
    cancel the computation the others wait for."""

    def __init__(
        self,
        ttl: float,
        maxsize: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.maxsize = maxsize
        self._clock = clock
        self._kept: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self._running: dict[Hashable, asyncio.Future[V]] = {}
        self.computed = 0  # how many computations ran (tests, diagnostics)

    def fresh(self, key: Hashable) -> V | None:
        """The kept answer for ``key`` while it is fresh, else None."""
        entry = self._kept.get(key)
        if entry is None:
            return None
        at, value = entry
        if self._clock() - at > self.ttl:
            del self._kept[key]
            return None
        return value

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[V]]) -> V:
        entry = self._kept.get(key)
        if entry is not None and self._clock() - entry[0] <= self.ttl:
            return entry[1]
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(compute())
            self._running[key] = running
            self.computed += 1
            running.add_done_callback(lambda done, k=key: self._finished(k, done))
        return await asyncio.shield(running)

    def _finished(self, key: Hashable, done: asyncio.Future[V]) -> None:
        if self._running.get(key) is done:
            del self._running[key]
        if done.cancelled() or done.exception() is not None:
            return
        self._kept[key] = (self._clock(), done.result())
        self._kept.move_to_end(key)
        while len(self._kept) > self.maxsize:
            self._kept.popitem(last=False)

    def clear(self) -> None:
        self._kept.clear()


class UnchangedAnswers:
    """Answers derived from a stored value, made again only when the value changed: exact
    (a changed value is always seen) and cheap for a value polled many times a second. At
    most ``maxsize`` keys, the least recently asked dropped first; a value is remembered by
    its length and hash, not kept."""

    def __init__(self, maxsize: int = 1024) -> None:
        self.maxsize = maxsize
        self._kept: OrderedDict[Hashable, tuple[tuple[int, int], bytes]] = OrderedDict()
        self.made = 0

    def get(self, key: Hashable, value: bytes, make: Callable[[], bytes]) -> bytes:
        digest = (len(value), hash(value))
        entry = self._kept.get(key)
        if entry is not None and entry[0] == digest:
            self._kept.move_to_end(key)
            return entry[1]
        answer = make()
        self.made += 1
        self._kept[key] = (digest, answer)
        self._kept.move_to_end(key)
        while len(self._kept) > self.maxsize:
            self._kept.popitem(last=False)
        return answer
