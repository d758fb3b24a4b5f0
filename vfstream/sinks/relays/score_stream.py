"""Every accepted score record to the Kinesis scores stream (SPEC 4), read from the
score-record topic with committed isolation (a ``TopicRelay``, see ``base.py`` and
``lanes.py``).

Records are put with the fan's ``globalUserId`` as partition key, in topic order, in one
lane (the stream is up or down for every record). Entries Kinesis refuses inside a
``PutRecords`` answer are retried alone by ``KinesisForwarder``; whatever still fails (the
endpoint down, throttling, a timeout) waits, retried with capped jittered backoff for as long
as it takes, so a topic offset is committed only once every record up to it is in the
stream. A record over Kinesis's 1 MiB limit can never go: it is logged, counted and passed.
Consumers of the stream see each record at least once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from vfstream.aws import aws_client
from vfstream.domain.batches import MalformedBatch
from vfstream.domain.fans import Refused, read_batch_json
from vfstream.metrics import RECORDS_IN, RECORDS_OUT, SINK_FAILURES
from vfstream.settings import Settings
from vfstream.sinks.clients.kinesis import (
    MAX_BYTES_PER_RECORD,
    MAX_RECORDS_PER_CALL,
    KinesisForwarder,
    KinesisRecord,
)
from vfstream.sinks.relays.base import AWS_CALLS, TopicRelay
from vfstream.sinks.relays.lanes import Attempt, Parcel, Wait

log = logging.getLogger(__name__)


def _records_of(message: ConsumerRecord) -> list[KinesisRecord]:
    """A score batch's records as Kinesis records; what the verify agent would refuse is
    left out (it dead-letters it)."""
    try:
        rows = read_batch_json(message.value)
    except MalformedBatch:
        return []
    return [
        KinesisRecord(partition_key=row.globalUserId, data=raw)
        for raw, row in rows
        if not isinstance(row, Refused)
    ]


class ScoreStreamForwarder:
    name = "Kinesis"

    def __init__(self, settings: Settings, *, max_backoff_seconds: float = 10.0) -> None:
        self.settings = settings
        self.relay = TopicRelay(
            settings,
            "kinesis-forwarder",
            [settings.score_records_topic],
            self,
            read_committed=True,
            max_held=20_000,
            per_attempt=2_000,
            max_backoff_seconds=max_backoff_seconds,
        )
        self._forwarder: KinesisForwarder | None = None

    async def run(self, should_stop: Callable[[], bool]) -> None:
        async with aws_client(self.settings, "kinesis", **AWS_CALLS) as kinesis:
            self._forwarder = KinesisForwarder(kinesis, self.settings.scores_stream, attempts=3)
            await self.relay.run(should_stop)

    def parcels(self, tp: TopicPartition, record: ConsumerRecord) -> Iterable[tuple[str, Any, Any]]:
        records = _records_of(record)
        RECORDS_IN.labels("kinesis").inc(len(records))
        key = (tp.partition, record.offset)
        return [("", (*key, index), value) for index, value in enumerate(records)]

    async def deliver(self, lane: str, parcels: list[Parcel], go_on: Callable[[], bool]) -> Attempt:
        """``PutRecords`` calls of at most 500 records, in order, until one leaves records
        unsent (they and the rest wait) or the relay is being stopped."""
        assert self._forwarder is not None
        done: list[Parcel] = []
        sendable: list[Parcel] = []
        for parcel in parcels:
            if parcel.value.size > MAX_BYTES_PER_RECORD:
                SINK_FAILURES.labels("kinesis").inc()
                log.error(
                    "score record of %r is %d bytes, over Kinesis's limit of %d: not sent",
                    parcel.value.partition_key[:256],
                    parcel.value.size,
                    MAX_BYTES_PER_RECORD,
                )
                done.append(parcel)
            else:
                sendable.append(parcel)
        for start in range(0, len(sendable), MAX_RECORDS_PER_CALL):
            if not go_on():
                break
            chunk = sendable[start : start + MAX_RECORDS_PER_CALL]
            result = await self._forwarder.forward([parcel.value for parcel in chunk])
            RECORDS_OUT.labels("kinesis").inc(result.sent)
            unsent = {id(record) for record, _ in result.failed}
            done.extend(parcel for parcel in chunk if id(parcel.value) not in unsent)
            if result.failed:
                why = f"{len(result.failed)} record(s) not put: {result.failed[0][1]}"
                return Attempt(done, Wait(self.name, why[:256]))
        return Attempt(done)
