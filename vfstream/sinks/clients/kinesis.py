"""Forwarding records to a Kinesis stream: batches within the PutRecords limits, failed
entries retried alone with backoff, nothing dropped silently (SPEC 4, issue #4).

Not wired into the worker yet; the forwarding agent and its offset handling come with #4.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vfstream.errors import DependencyUnavailable, InputRejected
from vfstream.metrics import SINK_FAILURES, SINK_RETRIES
from vfstream.retry import Backoff, retrying

log = logging.getLogger(__name__)

MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 5 * 1024 * 1024
MAX_BYTES_PER_RECORD = 1024 * 1024  # data plus partition key


@dataclass(frozen=True)
class KinesisRecord:
    partition_key: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data) + len(self.partition_key.encode())


class _Unsent(DependencyUnavailable):
    """Records of a PutRecords call are still unsent (the call failed, or some entries)."""


@dataclass
class _Left:
    """The records of one batch still to put, and why each failed last time."""

    records: list[KinesisRecord]
    errors: dict[int, str] = field(default_factory=dict)


class RecordTooLarge(InputRejected):
    """A single record over Kinesis's 1 MiB limit can never be sent."""


def plan_batches(
    records: Sequence[KinesisRecord],
    max_records: int = MAX_RECORDS_PER_CALL,
    max_bytes: int = MAX_BYTES_PER_CALL,
) -> list[list[KinesisRecord]]:
    """Split records, in order, into PutRecords calls within both limits."""
    batches: list[list[KinesisRecord]] = []
    current: list[KinesisRecord] = []
    size = 0
    for record in records:
        if record.size > MAX_BYTES_PER_RECORD:
            raise RecordTooLarge(
                f"record for partition key {record.partition_key!r} is {record.size} bytes; "
                f"Kinesis takes at most {MAX_BYTES_PER_RECORD}"
            )
        if current and (len(current) >= max_records or size + record.size > max_bytes):
            batches.append(current)
            current, size = [], 0
        current.append(record)
        size += record.size
    if current:
        batches.append(current)
    return batches


@dataclass
class ForwardResult:
    sent: int = 0
    retried: int = 0
    failed: list[tuple[KinesisRecord, str]] = field(default_factory=list)


class KinesisForwarder:
    """Puts records to one stream; the caller acks its source only when ``failed`` is empty."""

    def __init__(
        self,
        client: Any,
        stream_name: str,
        *,
        attempts: int = 5,
        base_delay: float = 0.1,
        max_delay: float = 5.0,
    ) -> None:
        self.client = client
        self.stream_name = stream_name
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay

    async def forward(self, records: Sequence[KinesisRecord]) -> ForwardResult:
        result = ForwardResult()
        for batch in plan_batches(records):
            await self._put_batch(batch, result)
        return result

    async def _put_batch(self, batch: list[KinesisRecord], result: ForwardResult) -> None:
        left = _Left(batch)
        try:
            async for attempt in retrying(
                _Unsent, attempts=self.attempts, backoff=Backoff(self.base_delay, self.max_delay)
            ):
                with attempt:
                    number = attempt.retry_state.attempt_number
                    if number > 1:
                        SINK_RETRIES.labels("kinesis").inc(len(left.records))
                        result.retried += len(left.records)
                    await self._put_once(left, result, number)
            return
        except _Unsent:
            pass
        for index, record in enumerate(left.records):
            result.failed.append((record, left.errors.get(index, "unknown error")))
        SINK_FAILURES.labels("kinesis").inc(len(left.records))
        log.error(
            "%d record(s) could not be put to %s after %d attempts",
            len(left.records),
            self.stream_name,
            self.attempts,
        )

    async def _put_once(self, left: _Left, result: ForwardResult, number: int) -> None:
        """One PutRecords call of what is left; raises ``_Unsent`` while records remain, so
        the retry loop sends only those again."""
        try:
            answer = await self.client.put_records(
                StreamName=self.stream_name,
                Records=[{"Data": r.data, "PartitionKey": r.partition_key} for r in left.records],
            )
        except Exception as exc:  # throttling, 5xx, endpoint down: retry the whole call
            log.warning("PutRecords to %s failed (attempt %d): %s", self.stream_name, number, exc)
            left.errors = {index: str(exc) for index in range(len(left.records))}
            raise _Unsent from exc
        entries = answer.get("Records", [])
        retry: list[KinesisRecord] = []
        errors: dict[int, str] = {}
        for record, entry in zip(left.records, entries, strict=False):
            if entry.get("ErrorCode"):
                errors[len(retry)] = f"{entry['ErrorCode']}: {entry.get('ErrorMessage', '')}"
                retry.append(record)
            else:
                result.sent += 1
        # An answer shorter than the request would lose records: retry the unanswered.
        for record in left.records[len(entries) :]:
            errors[len(retry)] = "no answer entry"
            retry.append(record)
        left.records, left.errors = retry, errors
        if retry:
            raise _Unsent
