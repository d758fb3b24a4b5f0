"""Scoring-file ingestion: S3 object -> validated score records on Kafka, one transaction a file.

Every valid row, every dead letter and the file's "done" marker are produced in a single
Kafka transaction. A file-level fault aborts it, so consumers reading committed data see
all of a file or nothing of it, and the marker makes a second ingestion a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from vfstream import kafka
from vfstream.aws import aws_client, s3_object_missing
from vfstream.domain.batches import BatchBuilder
from vfstream.domain.keys import fan_key, partition_for
from vfstream.domain.records import (
    RowRejection,
    ScoringFileError,
    build_score_record,
    parse_scoring_key,
)
from vfstream.domain.reports import RunAnnouncement
from vfstream.domain.row_validator import RowValidator
from vfstream.domain.tally import announce_message
from vfstream.errors import FileRejected
from vfstream.kafka.reads import latest_values
from vfstream.metrics import DEAD_LETTERS, INGESTED_FILES, RECORDS_IN, RECORDS_OUT
from vfstream.settings import Settings
from vfstream.sources.s3.csvrows import printable_raw, read_scoring_rows
from vfstream.sources.s3.faults import FILE_BYTE_ERRORS
from vfstream.sources.s3.inflight import InflightAnnouncer, InflightFencer, fence_dead_ingests
from vfstream.sources.s3.s3body import (
    S3_READ_RETRIES,
    BlockingS3Body,
    get_object_version,
    open_text,
    raise_if_s3_fault,
    retry_while_s3_fails,
)
from vfstream.sources.s3.summary import FileSummary

log = logging.getLogger(__name__)

CHUNK_ROWS = 5_000
_STOP = object()


@dataclass
class IngestSummary(FileSummary):
    status: str = "pending"  # ingested | skipped | failed
    rows_in: int = 0
    valid: int = 0
    invalid: int = 0
    produced: int = 0
    forced: bool = False
    runId: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    def restart(self) -> None:
        """The counts of an attempt whose transaction was aborted: nothing of them counts."""
        self.status = "pending"
        self.rows_in = self.valid = self.invalid = self.produced = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.file_dict(),
            "in": self.rows_in,
            "valid": self.valid,
            "invalid": self.invalid,
            "produced": self.produced,
            "forced": self.forced,
            "runId": self.runId,
        }


def run_announcement(marker: dict[str, Any]) -> tuple[bytes, bytes] | None:
    """The partials-topic message announcing a committed file's run to its campaign's tally."""
    run = RunAnnouncement.from_marker(marker)
    if run is None or not run.campaignId:
        return None
    return run.campaignId.encode(), announce_message(run)


def file_id(bucket: str, key: str, etag: str) -> str:
    return f"s3://{bucket}/{key}@{etag}"


@dataclass
class _Chunk:
    """What the parser hands the event loop: finished batches and dead letters."""

    batches: list[tuple[int, bytes]] = field(default_factory=list)
    rejections: list[tuple[bytes, bytes]] = field(default_factory=list)
    rows: int = 0
    records: int = 0


class IngestedFiles:
    """The compacted registry of committed files, read with read_committed isolation."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def load(self) -> dict[str, dict[str, Any]]:
        values = await latest_values(self.settings, self.settings.ingested_files_topic)
        return {key.decode(): orjson.loads(value) for key, (_, value) in values.items()}


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
                    await self._report_file_failure(producer, summary, this_file)
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
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=8)
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
        cancelled = threading.Event()
        topic = self.settings.score_records_topic
        partitions = await _partition_count(producer, topic)

        def put(item: Any) -> None:
            asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

        def parse() -> None:
            try:
                self._parse_into(body, scoring_key, summary, partitions, put, cancelled)
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
        finally:
            body.drop()
            if bar is not None:
                bar.close()

    def _parse_into(
        self,
        body: BlockingS3Body,
        scoring_key: Any,
        summary: IngestSummary,
        partitions: int,
        put: Callable[[Any], None],
        cancelled: threading.Event,
    ) -> None:
        """Read, validate and batch the file's rows (in a thread beside the event loop).

        Valid rows go into a score batch per table partition (``domain.batches``); a fan's
        rows are consecutive in a file, so its key is hashed once.
        """
        bucket, key, etag = summary.bucket, summary.key, summary.etag or ""
        source = {"bucket": bucket, "key": key, "etag": etag, "run": summary.runId}
        limits = self.settings.limits
        batches = BatchBuilder(max_records=self.settings.score_batch_records)
        chunk = _Chunk()
        validator: RowValidator | None = None
        last_fan, partition = b"", 0
        try:
            text = open_text(
                body,
                scoring_key.gzipped,
                limits.file_bytes,
                max_ratio=limits.compression_ratio,
                ratio_from=limits.compression_check_bytes,
            )
            for row in read_scoring_rows(text):
                if cancelled.is_set():
                    return
                summary.rows_in += 1
                if summary.rows_in > limits.file_rows:
                    raise ScoringFileError(
                        f"the file has more than {limits.file_rows:,} rows; "
                        "raise VFSTREAM_LIMIT_FILE_ROWS to take it"
                    )
                chunk.rows += 1
                if validator is None:
                    validator = RowValidator(row.kept, scoring_key, source, limits)
                record = None if row.reasons else validator.validate(row.fields, row.line)
                if record is not None:
                    encoded = orjson.dumps(record)
                    fan = fan_key(record["campaignId"], record["globalUserId"]).encode()
                else:
                    result = build_score_record(
                        row.values, scoring_key, {**source, "line": row.line}, limits
                    )
                    if isinstance(result, list) or row.reasons:
                        reasons = [*row.reasons, *(result if isinstance(result, list) else [])]
                        chunk.rejections.append(self._rejection(summary, scoring_key, row, reasons))
                        summary.invalid += 1
                        continue
                    encoded, fan = result.to_json(), result.key.encode()
                if fan != last_fan:
                    partition, last_fan = partition_for(fan, partitions), fan
                summary.valid += 1
                chunk.records += 1
                done = batches.add(partition, encoded)
                if done is not None:
                    chunk.batches.append((partition, done))
                if chunk.rows >= CHUNK_ROWS:
                    put(chunk)
                    chunk = _Chunk()
        except FILE_BYTE_ERRORS as exc:
            # The file's own bytes. A read S3 broke off is S3Unavailable, never this.
            raise ScoringFileError(f"corrupt or truncated gzip stream: {exc}") from exc
        chunk.batches.extend(batches.drain())
        put(chunk)

    @staticmethod
    def _rejection(
        summary: IngestSummary, scoring_key: Any, row: Any, reasons: list[str]
    ) -> tuple[bytes, bytes]:
        rejection = RowRejection(
            bucket=summary.bucket,
            key=summary.key,
            etag=summary.etag or "",
            line=row.line,
            raw=printable_raw(row.raw),
            reasons=reasons,
            campaignId=scoring_key.campaign_id,
        )
        return f"s3://{summary.bucket}/{summary.key}:{row.line}".encode(), rejection.to_json()

    async def _report_file_failure(
        self, producer: AIOKafkaProducer, summary: IngestSummary, this_file: str
    ) -> None:
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
            async with producer.transaction():
                await producer.send(
                    self.settings.dead_letter_topic,
                    key=this_file.encode(),
                    value=rejection.to_json(),
                )

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
