"""One attempt at a scoring file in one Kafka transaction.

Every valid row, every dead letter and the file's "done" marker are produced in a single
Kafka transaction: the parser thread (``scoring_rows``) hands the event loop chunks, which
are sent as they come; the run's announcement to its campaign's tally and the marker go
last, then the transaction commits. Any fault aborts it (the parser stopped, the S3 read
abandoned first), so consumers reading committed data see all of a file or nothing of it;
a file refused for its bytes is then told by one ``scoring-file`` dead letter.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from vfstream.domain.keys import partition_for
from vfstream.domain.records import RowRejection
from vfstream.settings import Settings
from vfstream.sources.s3.ingested import IngestSummary, run_announcement
from vfstream.sources.s3.s3body import BlockingS3Body
from vfstream.sources.s3.scoring_rows import ScoringRows

_STOP = object()


class FileTransaction:
    """Produces one file through ``producer`` (transactional, started) (module docstring)."""

    def __init__(
        self,
        settings: Settings,
        producer: AIOKafkaProducer,
        *,
        on_chunk: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.rows = ScoringRows(settings)
        self._on_chunk = on_chunk

    async def produce(
        self, body: BlockingS3Body, scoring_key: Any, summary: IngestSummary, this_file: str
    ) -> None:
        """The file's rows, its run's announcement and its marker, committed; aborted on any
        fault (``body`` aborted too; dropping it is the caller's)."""
        producer = self.producer
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=8)
        cancelled = threading.Event()
        topic = self.settings.score_records_topic
        partitions = await _partition_count(producer, topic)

        def put(item: Any) -> None:
            asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

        def parse() -> None:
            try:
                self.rows.parse_into(body, scoring_key, summary, partitions, put, cancelled)
                put(_STOP)
            except BaseException as exc:
                put(exc)

        await producer.begin_transaction()
        thread = threading.Thread(target=parse, name="scoring-file-parser", daemon=True)
        thread.start()
        try:
            sender = _Sender(producer)
            while True:
                item = await queue.get()
                if item is _STOP:
                    break
                if isinstance(item, BaseException):
                    raise item
                for partition, batch in item.batches:
                    await sender.send(topic, batch, partition=partition)
                for key, letter in item.rejections:
                    await sender.send(self.settings.dead_letter_topic, letter, key=key)
                summary.produced += item.records
                if self._on_chunk is not None:
                    self._on_chunk(item.rows)
            summary.status = "ingested"
            marker = {**summary.as_dict(), "seconds": None}
            # The campaign's tally learns, in the same transaction, what settles this run.
            announcement = run_announcement(marker)
            if announcement is not None:
                campaign, body_bytes = announcement
                await sender.send(
                    self.settings.partials_topic,
                    body_bytes,
                    key=campaign,
                    partition=partition_for(campaign, partitions),
                )
            await sender.send(
                self.settings.ingested_files_topic, orjson.dumps(marker), key=this_file.encode()
            )
            await sender.flush()
            await producer.commit_transaction()
        except BaseException:
            cancelled.set()
            body.abort()
            with contextlib.suppress(Exception):
                while thread.is_alive():
                    with contextlib.suppress(asyncio.QueueEmpty):
                        queue.get_nowait()
                    await asyncio.sleep(0.01)
            with contextlib.suppress(Exception):
                await producer.abort_transaction()
            raise

    async def report_failure(self, summary: IngestSummary, this_file: str) -> None:
        """After the abort, one dead letter says why the whole file was refused."""
        error = sys.exc_info()[1]
        rejection = RowRejection(
            bucket=summary.bucket,
            key=summary.key,
            etag=summary.etag or "",
            line=0,
            raw="",
            reasons=[str(error)],
            campaignId=summary.campaignId,
            kind="scoring-file",
        )
        with contextlib.suppress(Exception):
            async with self.producer.transaction():
                await self.producer.send(
                    self.settings.dead_letter_topic,
                    key=this_file.encode(),
                    value=rejection.to_json(),
                )


async def _partition_count(producer: AIOKafkaProducer, topic: str) -> int:
    count = len(await producer.partitions_for(topic) or ())
    if count == 0:
        raise RuntimeError(f"topic {topic!r} does not exist; run `vfstream dev up`")
    return count


class _Sender:
    """Sends inside the file's transaction, keeping the delivery futures bounded; ``flush``
    waits for every one (a transaction may only commit after its sends are done)."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._futures: list[asyncio.Future[Any]] = []

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None = None, partition: int | None = None
    ) -> None:
        future = await self._producer.send(topic, value, key=key, partition=partition)
        self._futures.append(future)
        if len(self._futures) > 256:
            for done in [f for f in self._futures if f.done()]:
                done.result()
            self._futures = [f for f in self._futures if not f.done()]

    async def flush(self) -> None:
        await asyncio.gather(*self._futures)
        self._futures.clear()
