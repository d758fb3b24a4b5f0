"""The console's dead letters (issue #20): one long-lived tail of the dead-letter topic per
worker, kept in a bounded ring from which every query is answered in memory.

Before, each query the console's cache did not hold opened Kafka clients and read the last
2,000 letters of every partition; 300 open pages asking at once were 300 readers. Now the
worker keeps one group-less ``read_committed`` consumer (made by ``vfstream.kafka``) that
starts when the console first asks, reads the newest ``per_partition`` letters of each
partition and then follows the topic as letters arrive; it stops, and the ring is emptied,
when nobody has asked for ``idle_seconds``. Every request, whatever its campaign, kind and
limit, is answered from the ring: a query's answer is computed once per change of the ring
and kept as the JSON bytes sent.

Bounds: at most ``per_partition`` letters a partition and at most ``max_bytes`` for all of
them (each counted as its JSON plus ``LETTER_OVERHEAD`` for the Python objects around it;
past that the oldest letters of the fullest partition go first); each letter is held as its
display form, raw text cut to 500 characters (``domain.dead_letters.describe``), the
campaign id and the place cut to 1,000; kept answers at most ``ANSWER_BYTES``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import TopicPartition

from vfstream import kafka
from vfstream.domain.dead_letters import describe
from vfstream.settings import Settings

log = logging.getLogger(__name__)

PER_PARTITION = 2_000
MAX_BYTES = 32 << 20
# What a held letter costs beside its JSON: the tuple, the bytes object, the time, campaign
# and kind strings (measured with sys.getsizeof on typical letters: 250-300 bytes).
LETTER_OVERHEAD = 320
ANSWER_CAP = 200  # letters in one answer at most, newest first
ANSWER_BYTES = 8 << 20  # kept answers, all queries together
FIELD_CHARS = 1_000
REINDEX_SECONDS = 1.0  # a changing ring is re-sorted at most this often
IDLE_SECONDS = 300.0
READY_SECONDS = 10.0
RETRY_SECONDS = 5.0

# (at, campaignId, kind, the letter as JSON)
Held = tuple[str, Any, str, bytes]


def held(value: bytes, timestamp_ms: int | None) -> Held | None:
    """A dead-letter message as the ring holds it; None when it is not a dead letter."""
    letter = describe(value, timestamp_ms)
    if letter is None:
        return None
    for field in ("campaignId", "where"):
        text = letter[field]
        if isinstance(text, str) and len(text) > FIELD_CHARS:
            letter[field] = text[:FIELD_CHARS] + "…"
        elif text is not None and not isinstance(text, str):
            letter[field] = str(text)[:FIELD_CHARS]
    return (letter["at"] or "", letter["campaignId"], letter["kind"], orjson.dumps(letter))


class LetterRing:
    """The newest dead letters of each partition, and answers to the console's queries.

    An answer is what ``domain.dead_letters.latest`` gives over the same letters (the newest
    ``limit`` of each campaign and kind, filtered, newest first), at most ``answer_cap``
    letters in all. No I/O.
    """

    def __init__(
        self,
        per_partition: int = PER_PARTITION,
        max_bytes: int = MAX_BYTES,
        answer_cap: int = ANSWER_CAP,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_partition = per_partition
        self.max_bytes = max_bytes
        self.answer_cap = answer_cap
        self._clock = clock
        self._parts: dict[int, deque[Held]] = {}
        self._part_bytes: dict[int, int] = {}
        self.held_bytes = 0
        self.generation = 0  # moves with every change
        self._indexed = -1
        self._indexed_at = float("-inf")
        self._newest: list[Held] = []
        self._by_campaign: dict[Any, list[Held]] = {}
        self._by_kind: dict[str, list[Held]] = {}
        self._by_group: dict[tuple[Any, str], list[Held]] = {}
        self._answers: OrderedDict[tuple[Any, Any, int], bytes] = OrderedDict()
        self._answer_bytes = 0

    def __len__(self) -> int:
        return sum(len(part) for part in self._parts.values())

    @staticmethod
    def _cost(letter: Held) -> int:
        return len(letter[3]) + LETTER_OVERHEAD

    def add(self, partition: int, letter: Held) -> None:
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = deque()
            self._part_bytes[partition] = 0
        if len(part) >= self.per_partition:
            self._drop_oldest(partition)
        part.append(letter)
        cost = self._cost(letter)
        self._part_bytes[partition] += cost
        self.held_bytes += cost
        while self.held_bytes > self.max_bytes:
            self._drop_oldest(max(self._part_bytes, key=self._part_bytes.__getitem__))
        self.generation += 1

    def _drop_oldest(self, partition: int) -> None:
        cost = self._cost(self._parts[partition].popleft())
        self._part_bytes[partition] -= cost
        self.held_bytes -= cost

    def clear(self) -> None:
        self._parts.clear()
        self._part_bytes.clear()
        self.held_bytes = 0
        self.generation += 1
        self._indexed = -1  # the next answer sorts what is held then, whenever that is
        self._newest, self._by_campaign, self._by_kind, self._by_group = [], {}, {}, {}
        self._answers.clear()
        self._answer_bytes = 0

    def _reindex(self) -> None:
        letters = [letter for part in self._parts.values() for letter in part]
        letters.sort(key=lambda letter: letter[0], reverse=True)
        by_campaign: dict[Any, list[Held]] = {}
        by_kind: dict[str, list[Held]] = {}
        by_group: dict[tuple[Any, str], list[Held]] = {}
        for letter in letters:
            by_campaign.setdefault(letter[1], []).append(letter)
            by_kind.setdefault(letter[2], []).append(letter)
            by_group.setdefault((letter[1], letter[2]), []).append(letter)
        self._newest, self._by_campaign = letters, by_campaign
        self._by_kind, self._by_group = by_kind, by_group
        self._indexed, self._indexed_at = self.generation, self._clock()
        self._answers.clear()
        self._answer_bytes = 0

    def answer(self, campaign: str | None, kind: str | None, limit: int) -> bytes:
        """The route's JSON body: ``{"deadLetters": [...]}``. A ring that keeps changing is
        re-sorted at most every ``REINDEX_SECONDS``, so an answer may lag it by that much."""
        if self._indexed != self.generation and (
            self._clock() - self._indexed_at >= REINDEX_SECONDS or self._indexed < 0
        ):
            self._reindex()
        query = (campaign, kind, limit)
        body = self._answers.get(query)
        if body is not None:
            return body
        body = b'{"deadLetters":[' + b",".join(self._select(campaign, kind, limit)) + b"]}"
        self._answers[query] = body
        self._answer_bytes += len(body)
        while self._answer_bytes > ANSWER_BYTES and len(self._answers) > 1:
            _, dropped = self._answers.popitem(last=False)
            self._answer_bytes -= len(dropped)
        return body

    def _select(self, campaign: str | None, kind: str | None, limit: int) -> list[bytes]:
        if campaign is not None and kind is not None:
            group = self._by_group.get((campaign, kind), [])
            return [letter[3] for letter in group[: min(limit, self.answer_cap)]]
        if campaign is not None:
            candidates = self._by_campaign.get(campaign, [])
        elif kind is not None:
            candidates = self._by_kind.get(kind, [])
        else:
            candidates = self._newest
        chosen: list[bytes] = []
        per_group: dict[tuple[Any, str], int] = {}
        for letter in candidates:
            group = (letter[1], letter[2])
            seen = per_group.get(group, 0)
            if seen < limit:
                per_group[group] = seen + 1
                chosen.append(letter[3])
                if len(chosen) >= self.answer_cap:
                    break
        return chosen


class DeadLetterTail:
    """One reader of the dead-letter topic for the whole worker, feeding a ``LetterRing``.

    ``answer`` starts it when needed and waits (all askers on the same start) until it has
    read what the topic held when it started; the reader then follows the topic until
    nobody has asked for ``idle_seconds``. A broker that cannot be reached fails the askers
    of that start (the view answers 503) and is tried again after ``RETRY_SECONDS``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        per_partition: int = PER_PARTITION,
        max_bytes: int = MAX_BYTES,
        idle_seconds: float = IDLE_SECONDS,
        open_transaction_grace: float = 2.0,
    ) -> None:
        self.settings = settings
        self.ring = LetterRing(per_partition, max_bytes)
        self.idle_seconds = idle_seconds
        self.open_transaction_grace = open_transaction_grace
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._failed_at = float("-inf")
        self._failure: BaseException | None = None
        self._asked_at = time.monotonic()
        self.readers_started = 0  # Kafka consumers this tail made (tests, diagnostics)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def answer(self, campaign: str | None, kind: str | None, limit: int) -> bytes:
        self._asked_at = time.monotonic()
        if not self.running:
            if self._failure is not None and time.monotonic() - self._failed_at < RETRY_SECONDS:
                raise self._failure
            self._ready = asyncio.get_running_loop().create_future()
            self._task = asyncio.ensure_future(self._follow(self._ready))
        ready = self._ready
        assert ready is not None
        if not ready.done():
            # Waiting askers share the start; one that gives up does not stop it.
            await asyncio.wait_for(asyncio.shield(ready), READY_SECONDS)
        elif ready.cancelled() or ready.exception() is not None:
            raise self._failure or ConnectionError("the dead-letter reader stopped")
        return self.ring.answer(campaign, kind, limit)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _follow(self, ready: asyncio.Future[None]) -> None:
        topic = self.settings.dead_letter_topic
        consumer = kafka.consumer(
            self.settings,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self.readers_started += 1
        try:
            try:
                await consumer.start()
                partitions = await self._partitions(consumer, topic)
                ends = await self._seek_to_tail(consumer, partitions)
                await self._catch_up(consumer, ends)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failure, self._failed_at = exc, time.monotonic()
                log.warning("dead letters for the console unavailable: %s", type(exc).__name__)
                if not ready.done():
                    ready.set_exception(exc)
                    ready.exception()  # retrieved: askers that gave up do not warn
                return
            self._failure = None
            if not ready.done():
                ready.set_result(None)
            while time.monotonic() - self._asked_at < self.idle_seconds:
                try:
                    await self._read(consumer, timeout_ms=1000)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the next asker starts a new reader
                    self._failure, self._failed_at = exc, time.monotonic()
                    log.warning("the console's dead-letter reader stopped: %r", exc)
                    return
        finally:
            self.ring.clear()
            if not ready.done():
                ready.cancel()
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _partitions(self, consumer: Any, topic: str) -> list[TopicPartition]:
        numbers = consumer.partitions_for_topic(topic)
        if not numbers:
            from vfstream.topics import partition_count

            count = await partition_count(self.settings, topic)
            if count == 0:
                raise LookupError(f"topic {topic} does not exist")
            numbers = set(range(count))
        partitions = [TopicPartition(topic, p) for p in sorted(numbers)]
        consumer.assign(partitions)
        return partitions

    async def _seek_to_tail(
        self, consumer: Any, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """Each partition's reader placed ``per_partition`` messages before its end; the
        ends (high watermarks)."""
        starts = await consumer.beginning_offsets(partitions)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, max(starts[tp], ends[tp] - self.ring.per_partition))
        return {tp: end for tp, end in ends.items() if end > starts[tp]}

    async def _catch_up(self, consumer: Any, ends: dict[TopicPartition, int]) -> None:
        """Read what the topic held at the start (an open transaction is waited for
        ``open_transaction_grace`` seconds, then left to the following reads)."""
        remaining = set(ends)
        deadline = time.monotonic() + self.open_transaction_grace + 5
        while remaining and time.monotonic() < deadline:
            await self._read(consumer, timeout_ms=200)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)

    async def _read(self, consumer: Any, *, timeout_ms: int) -> None:
        # At most 500 letters between two yields to the loop: the counting goes on.
        batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=500)
        for tp, messages in batches.items():
            for message in messages:
                if message.value and (letter := held(message.value, message.timestamp)):
                    self.ring.add(tp.partition, letter)
