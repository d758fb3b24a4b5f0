"""The Kafka transport the worker uses: Faust's aiokafka driver, reading committed data only.

Faust reads ``read_committed`` only in its exactly-once mode, which vfstream does not use
(see ``vfstream.domain.ledger``). But a scoring file is one Kafka transaction, and a file
that fails half-way is aborted: a ``read_uncommitted`` worker would still apply the rows
produced before the fault.

It also seeks stream partitions whose committed offset is 0 or missing. Faust drops records
it has fetched whenever the flow stops (every rebalance) and counts on seeking back to the
committed offsets when the flow resumes; aiokafka's ``seek_to_committed`` skips partitions
committed at 0 or not at all, so after ``replay --to earliest`` or on a new consumer group
the dropped records were never read again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport

SCHEME = "vfkafka"


class CommittedReadConsumerThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka hands this to its fetcher when the consumer starts.
        consumer._isolation_level = "read_committed"
        return consumer

    async def seek_to_committed(self) -> Mapping[TopicPartition, int | None]:
        return await self.call_thread(
            seek_to_committed_offsets, self._ensure_consumer(), self.consumer._is_changelog_tp
        )


class CommittedReadConsumer(Consumer):
    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return CommittedReadConsumerThread(self, loop=self.loop, beacon=self.beacon)


class CommittedReadTransport(Transport):
    Consumer = CommittedReadConsumer


async def seek_to_committed_offsets(
    consumer: AIOKafkaConsumer, is_changelog: Callable[[TopicPartition], bool]
) -> dict[TopicPartition, int | None]:
    """Seek every assigned stream partition to its committed offset, 0 included, or to the
    beginning when nothing is committed; changelog partitions as aiokafka would."""
    committed: dict[TopicPartition, int | None] = {}
    for tp in consumer.assignment():
        offset = await consumer.committed(tp)
        committed[tp] = offset
        if is_changelog(tp):
            # Table recovery positions changelog partitions itself; aiokafka's rule.
            if offset:
                consumer.seek(tp, offset)
        elif offset is None:
            # Nothing committed: where auto_offset_reset="earliest" starts.
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, offset)
    return committed


TRANSPORTS.aliases[SCHEME] = f"{__name__}:CommittedReadTransport"


def broker_url(bootstrap: str) -> str:
    return f"{SCHEME}://{bootstrap}"
