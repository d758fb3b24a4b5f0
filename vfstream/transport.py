"""The Kafka transport the worker uses: Faust's aiokafka driver, reading committed data only.

Faust reads ``read_committed`` only in its exactly-once mode, which vfstream does not use
(see ``vfstream.domain.ledger``). But a scoring file is one Kafka transaction, and a file
that fails half-way is aborted: a ``read_uncommitted`` worker would still apply the rows
produced before the fault.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport

SCHEME = "vfkafka"


class CommittedReadConsumerThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka hands this to its fetcher when the consumer starts.
        consumer._isolation_level = "read_committed"
        return consumer


class CommittedReadConsumer(Consumer):
    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return CommittedReadConsumerThread(self, loop=self.loop, beacon=self.beacon)


class CommittedReadTransport(Transport):
    Consumer = CommittedReadConsumer


TRANSPORTS.aliases[SCHEME] = f"{__name__}:CommittedReadTransport"


def broker_url(bootstrap: str) -> str:
    return f"{SCHEME}://{bootstrap}"
