"""The Kinesis side of the bridge (``kinesis_bridge``): listing a stream's shards and
reading each from where the bridge is in it.

Every Kinesis call is retried here, with exponential backoff and jitter, while that can
help (``vfstream.aws.is_retryable_aws_error``: a shard or the account over its limits,
Kinesis unwell); each retry is counted in ``vfstream_bridge_aws_retries_total`` and logged.
An iterator only ever points just past the committed position (``Cursor``), so an expired
one is replaced from that position and nothing is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.exceptions import ClientError
from tenacity import RetryCallState

from vfstream.aws import is_retryable_aws_error
from vfstream.domain.shards import ShardInfo
from vfstream.errors import OperatorError
from vfstream.metrics import BRIDGE_AWS_RETRIES, BRIDGE_MILLIS_BEHIND
from vfstream.retry import Backoff, retrying
from vfstream.settings import Settings

log = logging.getLogger("vfstream.sources.kinesis_bridge")  # the bridge's log lines

T = TypeVar("T")

# Kinesis answers these when a shard or the account is over its limits, or it is unwell;
# waiting helps. Anything else (no such stream, bad arguments) would fail again.
EXPIRED_ITERATOR = "ExpiredIteratorException"


class BridgeError(OperatorError):
    """The bridge cannot go on (no such stream, no checkpoints topic)."""


def _error_code(exc: BaseException) -> str | None:
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code")
    return None


@dataclass
class Cursor:
    """Where the bridge is in one shard: the committed position and the iterator past it."""

    shard: ShardInfo
    position: str | None  # the last committed sequence number
    iterator: str | None = None  # only ever points just past ``position``
    caught_up: bool = False  # the last read found nothing and nothing newer exists


@dataclass
class ShardRead:
    cursor: Cursor
    records: list[dict[str, Any]]
    next_iterator: str | None
    millis_behind: int


class ShardReader:
    """One stream's shards, listed and read through a Kinesis client (module docstring)."""

    def __init__(
        self, settings: Settings, stream: str, *, attempts: int, backoff_seconds: float
    ) -> None:
        self.settings = settings
        self.stream = stream
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds

    async def _call(self, name: str, operation: Callable[..., Awaitable[T]], **arguments: Any) -> T:
        """One Kinesis call, retried with exponential backoff and jitter while that can help."""

        def count_retry(state: RetryCallState) -> None:
            BRIDGE_AWS_RETRIES.labels(name).inc()
            outcome = state.outcome
            log.warning(
                "Kinesis %s on stream %s failed (attempt %d of %d), retrying: %s",
                name,
                self.stream,
                state.attempt_number,
                self.attempts,
                outcome.exception() if outcome else "?",
            )

        async for attempt in retrying(
            is_retryable_aws_error,
            attempts=self.attempts,
            backoff=Backoff(self.backoff_seconds, 10.0),
            before_sleep=count_retry,
        ):
            with attempt:
                return await operation(**arguments)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def list_shards(self, kinesis: Any) -> dict[str, ShardInfo]:
        shards: dict[str, ShardInfo] = {}
        token: str | None = None
        while True:
            # Kinesis refuses StreamName beside a NextToken: the token names the stream.
            arguments = {"NextToken": token} if token else {"StreamName": self.stream}
            try:
                answer = await self._call("ListShards", kinesis.list_shards, **arguments)
            except ClientError as exc:
                if _error_code(exc) == "ResourceNotFoundException":
                    raise BridgeError(f"Kinesis stream {self.stream} does not exist") from exc
                raise
            for entry in answer.get("Shards", []):
                shard = ShardInfo.from_listing(entry)
                shards[shard.shard_id] = shard
            token = answer.get("NextToken")
            if not token:
                return shards

    async def _iterator(self, kinesis: Any, cursor: Cursor) -> str:
        arguments: dict[str, Any] = {"StreamName": self.stream, "ShardId": cursor.shard.shard_id}
        if cursor.position is None:
            arguments["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            arguments["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
            arguments["StartingSequenceNumber"] = cursor.position
        answer = await self._call("GetShardIterator", kinesis.get_shard_iterator, **arguments)
        return answer["ShardIterator"]

    async def read(self, kinesis: Any, cursor: Cursor) -> ShardRead:
        for _ in range(2):
            if cursor.iterator is None:
                cursor.iterator = await self._iterator(kinesis, cursor)
            try:
                answer = await self._call(
                    "GetRecords",
                    kinesis.get_records,
                    ShardIterator=cursor.iterator,
                    Limit=self.settings.bridge_batch_records,
                )
            except ClientError as exc:
                # Iterators live five minutes; a fresh one from the committed position loses
                # nothing.
                if _error_code(exc) != EXPIRED_ITERATOR:
                    raise
                cursor.iterator = None
                continue
            millis_behind = int(answer.get("MillisBehindLatest") or 0)
            BRIDGE_MILLIS_BEHIND.labels(self.stream, cursor.shard.shard_id).set(millis_behind)
            return ShardRead(
                cursor=cursor,
                records=answer.get("Records") or [],
                next_iterator=answer.get("NextShardIterator"),
                millis_behind=millis_behind,
            )
        raise BridgeError(f"shard {cursor.shard.shard_id}: a fresh shard iterator expired at once")
