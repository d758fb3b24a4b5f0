"""Every accepted score record to the Kinesis scores stream (SPEC 4), read from the
score-record topic with committed isolation (a ``TopicRelay``, see ``relay.py``).

Records are put with the fan's ``globalUserId`` as partition key. Entries Kinesis refuses
inside a ``PutRecords`` answer are retried alone by ``KinesisForwarder``; whatever still
fails is retried until it goes through, so the topic offset is committed only once every
record up to it is in the stream. Consumers of the stream see each record at least once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from vfstream.aws import aws_client
from vfstream.domain.batches import MalformedBatch
from vfstream.domain.fans import Refused, read_batch_json
from vfstream.metrics import RECORDS_IN, RECORDS_OUT
from vfstream.settings import Settings
from vfstream.sinks.clients.kinesis import KinesisForwarder, KinesisRecord
from vfstream.sinks.relays.base import Batch, TopicRelay

log = logging.getLogger(__name__)


def scores_stream_records(batch: Batch) -> list[KinesisRecord]:
    """The batch's valid score records as Kinesis records (one each, as the record's own
    JSON), in topic order per partition. Score batches are opened; what the verify agent
    would refuse is left out (it dead-letters it)."""
    out: list[KinesisRecord] = []
    for records in batch.values():
        for message in records:
            try:
                rows = read_batch_json(message.value)
            except MalformedBatch:
                continue
            out.extend(
                KinesisRecord(partition_key=row.globalUserId, data=raw)
                for raw, row in rows
                if not isinstance(row, Refused)
            )
    return out


class ScoreStreamForwarder:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.relay = TopicRelay(
            settings,
            "kinesis-forwarder",
            [settings.score_records_topic],
            self._handle,
            read_committed=True,
        )
        self._forwarder: KinesisForwarder | None = None

    async def run(self, should_stop: Callable[[], bool]) -> None:
        async with aws_client(self.settings, "kinesis") as kinesis:
            self._forwarder = KinesisForwarder(kinesis, self.settings.scores_stream)
            await self.relay.run(should_stop)

    async def _handle(self, batch: Batch, relay: TopicRelay) -> int:
        assert self._forwarder is not None
        pending = scores_stream_records(batch)
        RECORDS_IN.labels("kinesis").inc(len(pending))
        sent, attempt = 0, 0
        while pending:
            result = await self._forwarder.forward(pending)
            sent += result.sent
            RECORDS_OUT.labels("kinesis").inc(result.sent)
            pending = [record for record, _ in result.failed]
            if pending:
                attempt += 1
                log.warning(
                    "%d record(s) not yet in %s; retry %d",
                    len(pending),
                    self.settings.scores_stream,
                    attempt,
                )
                await relay.backoff(attempt)
        return sent
