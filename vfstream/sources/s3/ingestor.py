"""Scoring-file ingestion: S3 object -> validated score records on Kafka, one transaction a file.

Every valid row, every dead letter and the file's "done" marker are produced in a single
Kafka transaction. A file-level fault aborts it, so consumers reading committed data see
all of a file or nothing of it, and the marker makes a second ingestion a no-op.

The ingestor reads the object from S3 (resuming a broken read, starting the file again
while S3 fails) and decides whether to ingest it; the parts it hands on, one job each:
the rows, read and batched in a thread (``scoring_rows.py``), the file's transaction
(``file_transaction.py``) and the bookkeeping of ingested files: the summary, the marker
registry, the run announced (``ingested.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer

from vfstream import kafka
from vfstream.aws import aws_client, s3_object_missing
from vfstream.domain.records import ScoringFileError, parse_scoring_key
from vfstream.errors import FileRejected
from vfstream.metrics import DEAD_LETTERS, INGESTED_FILES, RECORDS_IN, RECORDS_OUT
from vfstream.settings import Settings
from vfstream.sources.s3.file_transaction import FileTransaction
from vfstream.sources.s3.inflight import InflightAnnouncer, InflightFencer, fence_dead_ingests
from vfstream.sources.s3.ingested import IngestedFiles, IngestSummary, file_id
from vfstream.sources.s3.s3body import (
    S3_READ_RETRIES,
    BlockingS3Body,
    get_object_version,
    raise_if_s3_fault,
    retry_while_s3_fails,
)

log = logging.getLogger(__name__)


class ScoringFileIngestor:
    def __init__(
        self,
        settings: Settings,
        *,
        progress: bool = False,
        on_chunk: Callable[[int], None] | None = None,
        fencer: InflightFencer | None = None,
    ) -> None:
        self.settings = settings
        self.progress = progress and sys.stderr.isatty()
        self._on_chunk = on_chunk
        # A worker's listener shares its fencer (an incremental reader of the in-flight
        # topic); a one-off ingest reads the topic once.
        self._fencer = fencer

    def transactional_id(self, bucket: str, key: str) -> str:
        # One transactional id per object: a second ingester of the same file fences the
        # first, so two racing notifications cannot both commit.
        digest = hashlib.sha256(f"{bucket}/{key}".encode()).hexdigest()[:24]
        return f"{self.settings.app_id}-ingest-{digest}"

    def _producer(self, bucket: str, key: str) -> AIOKafkaProducer:
        return kafka.producer(
            self.settings,
            transactional_id=self.transactional_id(bucket, key),
            transaction_timeout_ms=self.settings.ingest_transaction_timeout_ms,
            max_batch_size=1 << 20,
            linger_ms=5,
            request_timeout_ms=60_000,
        )

    async def ingest(self, bucket: str, key: str, *, force: bool = False) -> IngestSummary:
        started = time.monotonic()
        summary = IngestSummary(bucket=bucket, key=key, forced=force)
        try:
            await self._ingest(summary, force)
        except FileRejected as exc:
            summary.status = "failed"
            summary.error = str(exc)
            summary.produced = 0
            log.error("scoring file s3://%s/%s rejected: %s", bucket, key, exc)
        summary.seconds = time.monotonic() - started
        INGESTED_FILES.labels(summary.status).inc()
        RECORDS_IN.labels("ingest").inc(summary.rows_in)
        RECORDS_OUT.labels("ingest").inc(summary.produced)
        DEAD_LETTERS.labels("scoring-row").inc(summary.invalid if summary.produced else 0)
        return summary

    async def _ingest(self, summary: IngestSummary, force: bool) -> None:
        """Ingest the file, starting it again while S3 fails (SPEC 2 "Transient is not
        invalid"): a read S3 broke off and that resuming did not heal aborts the file's
        transaction (nothing of it was committed), waits, and reads the file from its start.
        After ``s3_retry_seconds`` (unset: as long as the process runs) ``S3Unavailable``
        is raised; the file is never refused for it."""
        scoring_key = parse_scoring_key(summary.key, self.settings.limits)
        summary.campaignId = scoring_key.campaign_id
        await retry_while_s3_fails(
            lambda: self._attempt(summary, scoring_key, force),
            object_url=f"s3://{summary.bucket}/{summary.key}",
            within=self.settings.s3_retry_seconds,
            on_restart=summary.restart,
            aborted="its transaction was aborted (nothing of it committed)",
        )

    async def _attempt(self, summary: IngestSummary, scoring_key: Any, force: bool) -> None:
        async with aws_client(self.settings, "s3", retries=S3_READ_RETRIES) as s3:
            try:
                head = await s3.head_object(Bucket=summary.bucket, Key=summary.key)
            except Exception as exc:
                if s3_object_missing(exc):
                    raise ScoringFileError(
                        f"s3://{summary.bucket}/{summary.key} does not exist"
                    ) from exc
                raise_if_s3_fault(exc)
                raise
            summary.etag = head["ETag"].strip('"')
            await self._fence_dead_ingests()
            producer = self._producer(summary.bucket, summary.key)
            await producer.start()
            try:
                this_file = file_id(summary.bucket, summary.key, summary.etag)
                if not force and this_file in await IngestedFiles(self.settings).load():
                    summary.status = "skipped"
                    log.info("%s was ingested before; skipped (use --force)", this_file)
                    return
                obj = await get_object_version(s3, summary.bucket, summary.key, head["ETag"])
                announcer = InflightAnnouncer(
                    self.settings,
                    self.transactional_id(summary.bucket, summary.key),
                    f"s3://{summary.bucket}/{summary.key}",
                )
                try:
                    async with announcer.held():
                        await self._produce_file(
                            producer, s3, obj, head["ETag"], scoring_key, summary, this_file
                        )
                except FileRejected:
                    await FileTransaction(self.settings, producer).report_failure(
                        summary, this_file
                    )
                    raise
                finally:
                    with contextlib.suppress(Exception):
                        obj["Body"].close()
            finally:
                await producer.stop()

    async def _fence_dead_ingests(self) -> None:
        """Another ingest killed mid-file holds a transaction every worker waits behind."""
        try:
            if self._fencer is not None:
                await self._fencer.fence()
            else:
                await fence_dead_ingests(self.settings)
        except Exception:  # a help, not a precondition: the workers' listeners fence too
            log.warning("could not check for dead ingests", exc_info=True)

    async def _produce_file(
        self,
        producer: AIOKafkaProducer,
        s3: Any,
        obj: dict[str, Any],
        etag: str,
        scoring_key: Any,
        summary: IngestSummary,
        this_file: str,
    ) -> None:
        loop = asyncio.get_running_loop()
        length = int(obj.get("ContentLength") or 0)
        bar = self._progress_bar(length, summary.key)

        async def reopen(offset: int) -> Any:
            # The same version (IfMatch its ETag), from the byte the read stopped at.
            ranged = await get_object_version(s3, summary.bucket, summary.key, etag, offset=offset)
            return ranged["Body"]

        body = BlockingS3Body(
            obj["Body"],
            loop,
            on_bytes=bar.update if bar else None,
            content_length=length if "ContentLength" in obj else None,
            reopen=reopen,
            resume_within=self.settings.s3_resume_seconds,
            describe=f"s3://{summary.bucket}/{summary.key}",
        )
        transaction = FileTransaction(self.settings, producer, on_chunk=self._on_chunk)
        try:
            await transaction.produce(body, scoring_key, summary, this_file)
        finally:
            body.drop()
            if bar is not None:
                bar.close()

    def _progress_bar(self, total: int, key: str) -> Any:
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(
            total=total or None,
            unit="B",
            unit_scale=True,
            desc=key.rsplit("/", 1)[-1][:40],
            file=sys.stderr,
        )
