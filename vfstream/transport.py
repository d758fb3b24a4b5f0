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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport
from faust.types import TP

from vfstream.domain.ledger import resume_offset

log = logging.getLogger(__name__)

SCHEME = "vfkafka"

PositionLookup = Callable[[TP], int | None]


class CommittedReadConsumerThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka hands this to its fetcher when the consumer starts.
        consumer._isolation_level = "read_committed"
        return consumer

    async def seek_to_resume_offsets(
        self, recorded: Mapping[TopicPartition, int]
    ) -> Mapping[TopicPartition, int | None]:
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
        # vfstream.app.StreamApp.recorded_positions; a plain Faust app has none.
        lookup: PositionLookup | None = getattr(self.app, "recorded_positions", None)
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


async def seek_to_resume_offsets(
    consumer: AIOKafkaConsumer,
    recorded: Mapping[TopicPartition, int],
    is_changelog: Callable[[TopicPartition], bool],
) -> dict[TopicPartition, int | None]:
    """Seek every assigned stream partition to its resume offset, 0 included, or to the
    beginning when nothing is known; changelog partitions as aiokafka would. Returns where
    each partition resumes, as Faust expects from ``seek_to_committed``."""
    resumed: dict[TopicPartition, int | None] = {}
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
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, offset)
        resumed[tp] = offset
    return resumed


TRANSPORTS.aliases[SCHEME] = f"{__name__}:CommittedReadTransport"


def broker_url(bootstrap: str) -> str:
    return f"{SCHEME}://{bootstrap}"
