"""The Kafka transport the worker uses: Faust's aiokafka driver, reading committed data only,
resuming partitions where the state says.

Faust reads ``read_committed`` only in its exactly-once mode, which vfstream does not use
(see ``vfstream.domain.ledger``). But a scoring file is one Kafka transaction, and a file
that fails half-way is aborted: a ``read_uncommitted`` worker would still apply the rows
produced before the fault.

Faust drops records it has fetched whenever its flow stops (every rebalance) and seeks back
to the committed offsets when the flow resumes. That is not enough: aiokafka's
``seek_to_committed`` skips partitions committed at 0 or never (so after ``replay --to
earliest`` dropped records were not read again), and Faust's acknowledgement bookkeeping can
commit past records that were never applied. So every stream partition is sought explicitly,
and the score-record partitions to ``resume_offset``: the earlier of the committed offset
and the position the verification ledger recorded with the state.

What the consumer needs from the worker (where the ledger recorded each partition, the
fetcher's gaps) is handed to it at construction in one ``ConsumerHooks``: the worker's
assembly builds the transport with it and gives it to the app (``install_transport``, the
one hook), instead of hanging the objects on the Faust app.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport
from faust.types import TP

log = logging.getLogger(__name__)

SCHEME = "vfkafka"

PositionLookup = Callable[[TP], int | None]


class FetchedGaps:
    """Per partition, the offsets the stream consumer's fetcher passed without returning a
    record: transaction markers and aborted records (read_committed), nothing else.

    The verification ledger reads a range the stream skipped directly, to apply records Faust
    fetched and dropped. A scoring file leaves one marker a partition, but a Kinesis bridge
    commits a transaction every pass: one marker a partition every 200 ms, each a direct read
    (a broker round trip) on the agent's path. A range known to hold no record needs none.

    Only gaps the fetcher itself proved are kept: between two records of one fetch, and
    between the position a fetch left a partition at and the next record fetched, unless
    the partition was sought in between (every seek forgets the partition). Records Faust
    fetched and then dropped were fetched, so they are never inside a gap.
    """

    def __init__(self, keep: int = 4096) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._frontier: dict[TP, int] = {}
        self._gaps: dict[TP, deque[tuple[int, int]]] = {}

    def forget(self, tps: Iterable[Any]) -> None:
        with self._lock:
            for tp in tps:
                key = TP(tp.topic, tp.partition)
                self._frontier.pop(key, None)
                self._gaps.pop(key, None)

    def observe(self, tp: Any, offsets: list[int], position: int | None) -> None:
        """A fetch returned records at ``offsets`` (ascending) and left the partition at
        ``position``."""
        if not offsets:
            return
        key = TP(tp.topic, tp.partition)
        with self._lock:
            gaps = self._gaps.setdefault(key, deque(maxlen=self._keep))
            previous = self._frontier.get(key)
            if previous is not None and offsets[0] > previous:
                gaps.append((previous, offsets[0]))
            for before, after in itertools.pairwise(offsets):
                if after > before + 1:
                    gaps.append((before + 1, after))
            end = offsets[-1] + 1
            if position is not None and position > end:
                gaps.append((end, position))
                end = position
            self._frontier[key] = end

    def holds_no_record(self, topic: str, partition: int, start: int, end: int) -> bool:
        """Whether every offset of ``[start, end)`` lies in a gap the fetcher proved."""
        with self._lock:
            gaps = self._gaps.get(TP(topic, partition))
            if not gaps:
                return False
            covered = end
            for low, high in reversed(gaps):
                if high < covered:
                    return False
                if low <= start:
                    return True
                covered = min(covered, low)
                if covered <= start:
                    return True
            return False


class ConsumerHooks:
    """What the worker hands its stream consumer, through the transport it builds: the gaps
    the fetcher proves (``FetchedGaps``, shared with the verification ledger) and where each
    score partition's reading resumes no later than (``recorded``, the ledger's positions;
    set once the ledger is built, before the worker starts). Empty: plain Faust behaviour."""

    def __init__(self, gaps: FetchedGaps | None = None) -> None:
        self.gaps = gaps
        self.recorded: PositionLookup | None = None


class CommittedReadConsumerThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka hands this to its fetcher when the consumer starts.
        consumer._isolation_level = "read_committed"
        return consumer

    @property
    def fetched_gaps(self) -> FetchedGaps | None:
        hooks: ConsumerHooks = self.consumer.transport.hooks
        return hooks.gaps

    async def _fetch_records(
        self,
        consumer: AIOKafkaConsumer,
        active_partitions: Any,
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        # Runs in the consumer's thread, right after the fetch: positions are as it left them.
        records = await super()._fetch_records(
            consumer, active_partitions, timeout=timeout, max_records=max_records
        )
        gaps = self.fetched_gaps
        if gaps is not None:
            for tp, messages in records.items():
                try:
                    position: int | None = await consumer.position(tp)
                except Exception:  # unassigned meanwhile: the gap after it stays unknown
                    position = None
                gaps.observe(tp, [message.offset for message in messages], position)
        return records

    def _forget(self, tps: Iterable[Any]) -> None:
        gaps = self.fetched_gaps
        if gaps is not None:
            gaps.forget(tps)

    def seek(self, partition: TP, offset: int) -> None:
        self._forget([partition])
        super().seek(partition, offset)

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        self._forget(partitions)
        await super().seek_wait(partitions)

    async def seek_to_beginning(self, *partitions: Any) -> None:
        self._forget(partitions)
        await super().seek_to_beginning(*partitions)

    async def seek_to_resume_offsets(
        self, recorded: Mapping[TopicPartition, int]
    ) -> Mapping[TopicPartition, int | None]:
        self._forget(self.assignment())
        return await self.call_thread(
            seek_to_resume_offsets,
            self._ensure_consumer(),
            recorded,
            self.consumer._is_changelog_tp,
        )


class CommittedReadConsumer(Consumer):
    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return CommittedReadConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def seek_to_committed(self) -> Mapping[TP, int | None]:
        # The positions are read here, on the app's loop, where the tables live.
        # Handed in by the worker's assembly (ConsumerHooks.recorded); None: Kafka's alone.
        hooks: ConsumerHooks = self.transport.hooks
        lookup = hooks.recorded
        recorded: dict[TopicPartition, int] = {}
        if lookup is not None:
            for tp in self.assignment():
                try:
                    position = lookup(tp)
                except Exception:  # a store closing mid-rebalance: fall back to Kafka's
                    log.warning("no recorded position for %s", tp, exc_info=True)
                    continue
                if position is not None:
                    recorded[TopicPartition(tp.topic, tp.partition)] = position
        thread: CommittedReadConsumerThread = self._thread  # type: ignore[assignment]
        return await thread.seek_to_resume_offsets(recorded)


class CommittedReadTransport(Transport):
    Consumer = CommittedReadConsumer

    def __init__(
        self,
        url: list[Any],
        app: Any,
        loop: Any = None,
        *,
        hooks: ConsumerHooks | None = None,
    ) -> None:
        super().__init__(url, app, loop=loop)
        self.hooks = hooks if hooks is not None else ConsumerHooks()


def resume_offset(committed: int | None, recorded: int | None) -> int | None:
    """Where a source partition's reading resumes after an assignment.

    ``recorded`` is the offset after the last event a flush of this partition covered, kept
    in the table beside the states. Kafka's committed offset alone is not enough: Faust can
    commit past records it fetched and then dropped (a flow stopped by a rebalance), and
    skips seeking partitions committed at 0 or never. The earlier of the two is safe, as
    records at or below a fan's stored offset change nothing; it also honours a ``replay``
    that moved the committed offsets back. None: nothing known, the reset policy decides.
    """
    if recorded is None:
        return committed
    return min(committed if committed is not None else 0, recorded)


async def seek_to_resume_offsets(
    consumer: AIOKafkaConsumer,
    recorded: Mapping[TopicPartition, int],
    is_changelog: Callable[[TopicPartition], bool],
) -> dict[TopicPartition, int | None]:
    """Seek every assigned stream partition to its resume offset, 0 included, or to the
    beginning when nothing is known; changelog partitions as aiokafka would. Returns where
    each partition resumes, as Faust expects from ``seek_to_committed``."""
    resumed: dict[TopicPartition, int | None] = {}
    from_beginning: list[TopicPartition] = []
    for tp in consumer.assignment():
        committed = await consumer.committed(tp)
        if is_changelog(tp):
            # Table recovery positions changelog partitions itself; aiokafka's rule.
            if committed:
                consumer.seek(tp, committed)
            resumed[tp] = committed
            continue
        offset = resume_offset(committed, recorded.get(tp))
        log.info(
            "%s resumes at %s (committed %s, recorded %s)", tp, offset, committed, recorded.get(tp)
        )
        if offset is None:
            # Nothing committed or recorded: where auto_offset_reset="earliest" starts.
            from_beginning.append(tp)
        else:
            consumer.seek(tp, offset)
        resumed[tp] = offset
    if from_beginning:
        # One call for all: each waits out the fetch in flight (up to fetch_max_wait_ms,
        # 1.5 s in Faust), which one by one held a new worker's start for half a minute.
        await consumer.seek_to_beginning(*from_beginning)
    return resumed


def install_transport(app: Any, hooks: ConsumerHooks) -> None:
    """Give ``app`` this transport, built with ``hooks``: the one place the worker's objects
    reach Faust's consumer. Faust builds the consumer itself (``Transport.create_consumer``),
    so the objects travel on the transport, set through the app's public ``transport``
    setter. The ``vfkafka`` scheme of the app's broker URL is registered here too, so a
    transport Faust makes itself from the URL is this one (with empty hooks). Call it right
    after building the app: declaring an agent makes Faust build ``app.transport``."""
    TRANSPORTS.aliases[SCHEME] = f"{__name__}:CommittedReadTransport"
    app.transport = CommittedReadTransport(app.conf.broker_consumer, app, hooks=hooks)


def broker_url(bootstrap: str) -> str:
    return f"{SCHEME}://{bootstrap}"
