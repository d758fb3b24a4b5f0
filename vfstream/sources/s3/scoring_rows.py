"""A scoring file's rows, read, validated and batched in a thread beside the event loop.

The parser thread reads the body (``s3body.BlockingS3Body``: the event loop pulls the S3
chunks) through gzip and the ``csv`` module, and hands the loop a ``Chunk`` every
``CHUNK_ROWS`` rows: finished score batches, one per table partition, and dead letters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from vfstream.domain.batches import BatchBuilder
from vfstream.domain.keys import fan_key, partition_for
from vfstream.domain.records import RowRejection, ScoringFileError, build_score_record
from vfstream.domain.row_validator import RowValidator
from vfstream.settings import Settings
from vfstream.sources.s3.csvrows import printable_raw, read_scoring_rows
from vfstream.sources.s3.faults import FILE_BYTE_ERRORS
from vfstream.sources.s3.ingested import IngestSummary
from vfstream.sources.s3.s3body import BlockingS3Body, open_text

CHUNK_ROWS = 5_000


@dataclass
class Chunk:
    """What the parser hands the event loop: finished batches and dead letters."""

    batches: list[tuple[int, bytes]] = field(default_factory=list)
    rejections: list[tuple[bytes, bytes]] = field(default_factory=list)
    rows: int = 0
    records: int = 0


class ScoringRows:
    """Reads a file's rows into chunks of batches and dead letters (module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def parse_into(
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
        chunk = Chunk()
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
                        chunk.rejections.append(row_rejection(summary, scoring_key, row, reasons))
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
                    chunk = Chunk()
        except FILE_BYTE_ERRORS as exc:
            # The file's own bytes. A read S3 broke off is S3Unavailable, never this.
            raise ScoringFileError(f"corrupt or truncated gzip stream: {exc}") from exc
        chunk.batches.extend(batches.drain())
        put(chunk)


def row_rejection(
    summary: IngestSummary, scoring_key: Any, row: Any, reasons: list[str]
) -> tuple[bytes, bytes]:
    """A row's dead letter, keyed by its place in the file."""
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
