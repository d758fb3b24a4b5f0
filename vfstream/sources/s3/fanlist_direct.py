"""Fanlist-file ingestion (SPEC 2.2, 4): S3 object -> DynamoDB demand table -> campaign-data
stream, with invalid rows dead-lettered to Kafka and every count reported.

The whole file is read and validated before anything is written, so a file-level fault
(bad key, missing object, unusable header) leaves no trace but its error. Writes are plain
puts keyed by fan and campaign: ingesting a file again rewrites the same items, and its
stream records carry the same correlation id, so consumers can tell a repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaProducer

from vfstream import kafka
from vfstream.aws import aws_client, s3_object_missing
from vfstream.domain.fanlist import (
    FANLIST_COLUMNS,
    FanlistCounts,
    FanlistFileError,
    FanlistKey,
    FanlistRow,
    check_fanlist_header,
    fanlist_item,
    fanlist_sk,
    fanlist_stream_record,
    keep_highest_scores,
    parse_fanlist_key,
    validate_fanlist_row,
)
from vfstream.domain.limits import DEFAULT_LIMITS
from vfstream.domain.records import RowRejection
from vfstream.errors import FileRejected
from vfstream.metrics import DEAD_LETTERS, RECORDS_IN, RECORDS_OUT
from vfstream.settings import Settings
from vfstream.sinks.clients.dynamo_batch import DynamoBatchWriter
from vfstream.sinks.clients.kinesis import KinesisForwarder, KinesisRecord
from vfstream.sources.s3.csvrows import printable_raw, read_csv_rows
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

# Invalid rows are logged one by one up to this many a file; all of them are dead-lettered.
LOGGED_INVALID_ROWS = 20


@dataclass
class FanlistSummary(FileSummary):
    status: str = "pending"  # stored | incomplete (some items not stored or streamed) | failed
    correlation: str | None = None
    counts: FanlistCounts = field(default_factory=FanlistCounts)
    # Of what an incomplete run left, the items and records another run may store or
    # stream (DynamoDB or Kinesis failed); items DynamoDB refused for good are not.
    retryable: int = 0

    @property
    def settled(self) -> bool:
        return self.status != "incomplete" or self.retryable == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.file_dict(),
            "correlation": self.correlation,
            **self.counts.as_dict(),
            "retryable": self.retryable,
        }


@dataclass(frozen=True)
class FanlistFile:
    """One version of one fanlist object."""

    bucket: str
    key: str
    etag: str
    fanlist_key: FanlistKey

    @property
    def correlation(self) -> str:
        # Derived, not random: a re-run of the same object version is recognisably the same.
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"s3://{self.bucket}/{self.key}@{self.etag}"))


@dataclass
class ParsedFanlist:
    rows_in: int = 0
    valid: list[FanlistRow] = field(default_factory=list)
    rejections: list[RowRejection] = field(default_factory=list)


def parse_fanlist_rows(
    text: TextIO, source: FanlistFile, max_rows: int = DEFAULT_LIMITS.file_rows
) -> ParsedFanlist:
    """Validate every row of a fanlist file; raises FileRejected (a FanlistFileError, or
    the shared CSV reader's or the size limit's) for a file-level fault.

    ``text`` must be decoded as ``s3body.open_text`` does, so that bad bytes reach the row
    they are in rather than failing the file.
    """
    parsed = ParsedFanlist()
    rows = read_csv_rows(text, columns=FANLIST_COLUMNS, check_header=check_fanlist_header)
    for row in rows:
        parsed.rows_in += 1
        if parsed.rows_in > max_rows:
            raise FanlistFileError(
                f"the file has more than {max_rows:,} rows; "
                "raise VFSTREAM_LIMIT_FILE_ROWS to take it"
            )
        result = validate_fanlist_row(row.values)
        reasons = [*row.reasons, *(result if isinstance(result, list) else [])]
        if reasons:
            parsed.rejections.append(
                RowRejection(
                    bucket=source.bucket,
                    key=source.key,
                    etag=source.etag,
                    line=row.line,
                    raw=printable_raw(row.raw),
                    reasons=reasons,
                    campaignId=source.fanlist_key.campaign_id,
                    kind="fanlist-row",
                )
            )
        elif isinstance(result, FanlistRow):
            parsed.valid.append(result)
    return parsed


@dataclass
class _Progress:
    """What earlier runs of one object version, in this process, already did: the items
    DynamoDB holds, the stream records sent, the items DynamoDB refused for good, whether
    the dead letters went out. A run after an incomplete one does only the rest, so the
    campaign-data stream gets each record once (README "Fanlist files")."""

    stored: set[str] = field(default_factory=set)
    streamed: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)
    dead_lettered: bool = False


# DynamoDB calls: few retries inside botocore (a refused call took 20 s with its default of
# 5 adaptive tries); DynamoBatchWriter retries them within fanlist_retry_seconds.
DYNAMO_RETRIES = {"max_attempts": 3, "mode": "standard"}

# Incomplete files whose progress is kept (one entry per object version, the oldest dropped).
KEPT_PROGRESS = 64


class FanlistIngestor:
    def __init__(
        self,
        settings: Settings,
        *,
        retry_seconds: float | None = None,
        stream_attempts: int = 5,
    ) -> None:
        self.settings = settings
        # DynamoDB is retried this long in one run (throttling, an outage, unprocessed items).
        self.retry_seconds = retry_seconds or settings.fanlist_retry_seconds
        self.stream_attempts = stream_attempts
        self._progress: OrderedDict[str, _Progress] = OrderedDict()

    async def ingest(self, bucket: str, key: str) -> FanlistSummary:
        """Store one fanlist file. A file-level fault gives a ``failed`` summary; items or
        records not stored or streamed give an ``incomplete`` one (``retryable`` of them are
        worth another run, which does only what is left); a fault of S3, Kafka or the
        endpoint itself raises, so that a notification is retried."""
        started = time.monotonic()
        summary = FanlistSummary(bucket=bucket, key=key)
        try:
            await self._ingest(summary)
        except FileRejected as exc:
            summary.status = "failed"
            summary.error = str(exc)
            summary.counts = FanlistCounts()
            log.error("fanlist file s3://%s/%s rejected: %s", bucket, key, exc)
        summary.seconds = time.monotonic() - started
        RECORDS_IN.labels("fanlist").inc(summary.counts.input.in_)
        RECORDS_OUT.labels("fanlist").inc(summary.counts.stream.out)
        return summary

    def _progress_of(self, correlation: str) -> _Progress:
        progress = self._progress.pop(correlation, None) or _Progress()
        self._progress[correlation] = progress
        while len(self._progress) > KEPT_PROGRESS:
            self._progress.popitem(last=False)
        return progress

    async def _ingest(self, summary: FanlistSummary) -> None:
        fanlist_key = parse_fanlist_key(summary.key)
        summary.campaignId = fanlist_key.campaign_id
        source, parsed = await retry_while_s3_fails(
            lambda: self._read(summary.bucket, summary.key, fanlist_key),
            object_url=f"s3://{summary.bucket}/{summary.key}",
            within=self.settings.s3_retry_seconds,
        )
        summary.etag = source.etag
        summary.correlation = source.correlation
        deduplicated = keep_highest_scores(parsed.valid)
        progress = self._progress_of(source.correlation)
        if not progress.dead_lettered:
            await self._dead_letter(source, parsed.rejections)
            progress.dead_lettered = True

        now = datetime.now(UTC)
        sk = fanlist_sk(fanlist_key.campaign_id)
        to_store = [
            row
            for row in deduplicated.kept
            if row.item_pk not in progress.stored and row.item_pk not in progress.refused
        ]
        items = [fanlist_item(row, fanlist_key, updated=now) for row in to_store]
        async with aws_client(self.settings, "dynamodb", retries=DYNAMO_RETRIES) as dynamo:
            writer = DynamoBatchWriter(
                dynamo, self.settings.demand_table, attempts=None, within=self.retry_seconds
            )
            written = await writer.put_items(items)
        not_stored = {(f.item.get("PK"), f.item.get("SK")): f for f in written.failed}
        for row in to_store:
            failure = not_stored.get((row.item_pk, sk))
            if failure is None:
                progress.stored.add(row.item_pk)
            elif failure.permanent:
                progress.refused[row.item_pk] = failure.reason
        stored = [row for row in deduplicated.kept if row.item_pk in progress.stored]
        to_stream = [row for row in stored if row.item_pk not in progress.streamed]

        records = [
            KinesisRecord(
                partition_key=row.partition_key,
                data=orjson.dumps(
                    fanlist_stream_record(
                        row, fanlist_key.campaign_id, correlation=source.correlation, date=now
                    )
                ),
            )
            for row in to_stream
        ]
        async with aws_client(self.settings, "kinesis") as kinesis:
            forwarder = KinesisForwarder(
                kinesis, self.settings.campaign_data_stream, attempts=self.stream_attempts
            )
            forwarded = await forwarder.forward(records)
        unsent = {id(record) for record, _ in forwarded.failed}
        for row, record in zip(to_stream, records, strict=True):
            if id(record) not in unsent:
                progress.streamed.add(row.item_pk)
        for record, reason in forwarded.failed:
            log.error(
                "fanlist record %s of s3://%s/%s not streamed: %s",
                record.partition_key,
                source.bucket,
                source.key,
                reason,
            )

        dynamo_failed = len(deduplicated.kept) - len(stored)
        stream_failed = sum(1 for row in stored if row.item_pk not in progress.streamed)
        summary.counts = FanlistCounts.tally(
            rows_in=parsed.rows_in,
            invalid=len(parsed.rejections),
            duplicate=deduplicated.duplicates,
            dynamo_failed=dynamo_failed,
            stream_failed=stream_failed,
        )
        refused = sum(1 for row in deduplicated.kept if row.item_pk in progress.refused)
        summary.retryable = dynamo_failed - refused + stream_failed
        summary.status = "stored" if not (dynamo_failed or stream_failed) else "incomplete"
        if summary.retryable == 0:
            # Done, or done with what can be done: nothing is left for another run.
            self._progress.pop(source.correlation, None)
        log.info("fanlist summary %s", orjson.dumps(summary.as_dict()).decode())

    async def _read(
        self, bucket: str, key: str, fanlist_key: FanlistKey
    ) -> tuple[FanlistFile, ParsedFanlist]:
        async with aws_client(self.settings, "s3", retries=S3_READ_RETRIES) as s3:
            try:
                obj = await s3.get_object(Bucket=bucket, Key=key)
            except Exception as exc:
                if s3_object_missing(exc):
                    raise FanlistFileError(f"s3://{bucket}/{key} does not exist") from exc
                raise_if_s3_fault(exc)
                raise
            # The ETag of the very response read, so the correlation names those bytes; a
            # read S3 breaks off resumes in that version only (IfMatch).
            etag = obj["ETag"]
            source = FanlistFile(bucket, key, etag.strip('"'), fanlist_key)

            async def reopen(offset: int) -> Any:
                return (await get_object_version(s3, bucket, key, etag, offset=offset))["Body"]

            body = BlockingS3Body(
                obj["Body"],
                asyncio.get_running_loop(),
                content_length=int(obj["ContentLength"]) if "ContentLength" in obj else None,
                reopen=reopen,
                resume_within=self.settings.s3_resume_seconds,
                describe=f"s3://{bucket}/{key}",
            )
            try:
                # The csv module is synchronous: parse in a thread while the loop streams S3.
                limits = self.settings.limits
                parsed = await asyncio.to_thread(
                    parse_fanlist_rows,
                    open_text(body, gzipped=False, max_bytes=limits.file_bytes),
                    source,
                    limits.file_rows,
                )
            except FileRejected as exc:
                await self._report_file_failure(source, exc)
                raise
            finally:
                body.drop()
        return source, parsed

    def _producer(self) -> AIOKafkaProducer:
        return kafka.producer(
            self.settings,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=30_000,
        )

    async def _dead_letter(self, source: FanlistFile, rejections: list[RowRejection]) -> None:
        """Send invalid rows to the dead-letter topic before anything is stored: should Kafka
        be unreachable, the ingestion fails whole and its retry repeats nothing stored."""
        if not rejections:
            return
        for rejection in rejections[:LOGGED_INVALID_ROWS]:
            log.warning(
                "fanlist row s3://%s/%s:%d invalid: %s",
                source.bucket,
                source.key,
                rejection.line,
                "; ".join(rejection.reasons),
            )
        if len(rejections) > LOGGED_INVALID_ROWS:
            log.warning(
                "%d more invalid rows in s3://%s/%s; every one is in topic %s",
                len(rejections) - LOGGED_INVALID_ROWS,
                source.bucket,
                source.key,
                self.settings.dead_letter_topic,
            )
        await self._send_dead_letters(
            {
                f"s3://{source.bucket}/{source.key}:{rejection.line}": rejection.to_json()
                for rejection in rejections
            }
        )
        DEAD_LETTERS.labels("fanlist-row").inc(len(rejections))

    async def _report_file_failure(self, source: FanlistFile, error: FileRejected) -> None:
        """One dead letter says why a file that could be read was refused as a whole."""
        rejection = RowRejection(
            bucket=source.bucket,
            key=source.key,
            etag=source.etag,
            line=0,
            raw="",
            reasons=[str(error)],
            campaignId=source.fanlist_key.campaign_id,
            kind="fanlist-file",
        )
        # The file's error is what the caller must hear; a broker fault here must not mask it.
        with contextlib.suppress(Exception):
            await self._send_dead_letters(
                {f"s3://{source.bucket}/{source.key}@{source.etag}": rejection.to_json()}
            )
            DEAD_LETTERS.labels("fanlist-file").inc()

    async def _send_dead_letters(self, messages: Mapping[str, bytes]) -> None:
        producer = self._producer()
        await producer.start()
        try:
            deliveries = [
                await producer.send(self.settings.dead_letter_topic, key=key.encode(), value=value)
                for key, value in messages.items()
            ]
            await asyncio.gather(*deliveries)
        finally:
            await producer.stop()
