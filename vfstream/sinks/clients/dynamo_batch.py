"""Putting items into a DynamoDB table with BatchWriteItem: 25 puts a call, unprocessed items
and throttled or failed calls retried with backoff and jitter, and every item that still
cannot be written reported back, never dropped.

Generic: items are plain attribute dicts (nested dicts and lists allowed); floats are stored
as Numbers through Decimal, as DynamoDB requires.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from vfstream.aws import is_retryable_aws_error
from vfstream.errors import DependencyUnavailable, InputRejected
from vfstream.metrics import SINK_FAILURES, SINK_RETRIES
from vfstream.retry import Backoff, retrying

log = logging.getLogger(__name__)

MAX_ITEMS_PER_CALL = 25

# Error codes worth another try: the table or account is over its throughput, or the service
# had a transient fault. Anything else (a validation error, a missing table) will not heal.


@dataclass(frozen=True)
class FailedItem:
    item: Mapping[str, Any]
    reason: str
    # The item itself was refused (unserialisable, rejected by validation): writing it
    # again cannot succeed. Otherwise the table or the endpoint failed and a later try may.
    permanent: bool = False


@dataclass
class BatchWriteResult:
    written: int = 0
    retried: int = 0
    failed: list[FailedItem] = field(default_factory=list)


class UnserialisableItem(InputRejected):
    """An item holds a value DynamoDB cannot store (NaN, infinity, an unknown type)."""


_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


def to_dynamo_value(value: Any) -> Any:
    """A plain value with its floats turned into Decimals, which TypeSerializer requires.

    ``Decimal(str(x))`` keeps the float's shortest repr (0.1 stays 0.1 rather than
    0.1000000000000000055...), which is what a reader of the table expects to see.
    """
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise UnserialisableItem(f"{value!r} cannot be stored in DynamoDB")
        return Decimal(str(value))
    if isinstance(value, Mapping):
        return {str(key): to_dynamo_value(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [to_dynamo_value(inner) for inner in value]
    return value


def serialise_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A plain attribute dict in DynamoDB's wire format ({"S": ...}, {"N": ...}, ...)."""
    try:
        return {name: _SERIALIZER.serialize(to_dynamo_value(value)) for name, value in item.items()}
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise UnserialisableItem(str(exc)) from exc


class _RetryLater(DependencyUnavailable):
    """Some puts of a call are still pending and worth another try."""


@dataclass
class _Put:
    item: Mapping[str, Any]
    request: dict[str, Any]
    key: tuple[str, ...]


def _is_item_refusal(exc: Exception) -> bool:
    """DynamoDB refused something in the request itself (an item over 400 KB, an empty key
    value), which one item of a batch may cause alone."""
    return (
        isinstance(exc, ClientError)
        and exc.response.get("Error", {}).get("Code", "") == "ValidationException"
    )


def _describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'ClientError')}: {error.get('Message', '')}"
    return f"{type(exc).__name__}: {exc}"


class DynamoBatchWriter:
    """Puts items into one table; the caller learns from the result which ones failed.

    ``key_names`` are the table's key attributes. A BatchWriteItem call refuses two puts of
    one key, so a repeated key starts a new call; calls go out one after another, so the
    later put of a key is also the one that stays, as with single puts in order.
    """

    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        key_names: Sequence[str] = ("PK", "SK"),
        attempts: int | None = 6,
        within: float | None = None,
        base_delay: float = 0.05,
        max_delay: float = 5.0,
        sink_label: str = "dynamodb",
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.key_names = tuple(key_names)
        # Retries end after ``attempts`` calls of a batch or ``within`` seconds of one
        # put_items call, whichever comes first (neither: never). Past ``within`` every batch
        # left gets one call; once one of those fails too, the rest fail without a call.
        self.attempts = attempts
        self.within = within
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sink_label = sink_label

    async def put_items(self, items: Iterable[Mapping[str, Any]]) -> BatchWriteResult:
        result = BatchWriteResult()
        table_fault: str | None = None
        deadline = None if self.within is None else time.monotonic() + self.within
        left: list[Mapping[str, Any]] = []
        for batch in self._plan(items, result):
            if table_fault is not None:
                # The table is missing or closed to us, or DynamoDB failed past the deadline:
                # more calls would fail the same way.
                left.extend(put.item for put in batch)
                continue
            table_fault = await self._write_batch(batch, result, deadline)
        if table_fault is not None:
            self._fail(result, left, table_fault)
        return result

    @staticmethod
    def _time_left(deadline: float | None) -> float | None:
        return None if deadline is None else max(deadline - time.monotonic(), 0.0)

    def _plan(
        self, items: Iterable[Mapping[str, Any]], result: BatchWriteResult
    ) -> Iterable[list[_Put]]:
        batch: list[_Put] = []
        keys_in_batch: set[tuple[str, ...]] = set()
        for item in items:
            try:
                put = self._prepare(item)
            except UnserialisableItem as exc:
                self._fail(result, [item], f"cannot be serialised: {exc}", permanent=True)
                continue
            if len(batch) >= MAX_ITEMS_PER_CALL or put.key in keys_in_batch:
                yield batch
                batch, keys_in_batch = [], set()
            batch.append(put)
            keys_in_batch.add(put.key)
        if batch:
            yield batch

    def _prepare(self, item: Mapping[str, Any]) -> _Put:
        missing = [name for name in self.key_names if name not in item]
        if missing:
            raise UnserialisableItem(f"the item lacks its key attributes {', '.join(missing)}")
        serialised = serialise_item(item)
        return _Put(
            item=item,
            request={"PutRequest": {"Item": serialised}},
            key=self._key_of(serialised),
        )

    def _key_of(self, serialised: Mapping[str, Any]) -> tuple[str, ...]:
        # Wire-format key values compare exactly as DynamoDB compares them ("1" vs 1 differ).
        return tuple(
            orjson.dumps(serialised.get(name), option=orjson.OPT_SORT_KEYS).decode()
            for name in self.key_names
        )

    async def _write_batch(
        self, batch: list[_Put], result: BatchWriteResult, deadline: float | None = None
    ) -> str | None:
        """Write one call's puts, retrying what is worth it; returns a table-level fault."""
        pending = batch
        last_error = "no attempt made"
        time_left = self._time_left(deadline)
        attempts = 1 if time_left == 0.0 else self.attempts
        started = time.monotonic()
        try:
            async for attempt in retrying(
                _RetryLater,
                attempts=attempts,
                within=time_left or None,
                backoff=Backoff(self.base_delay, self.max_delay),
            ):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        SINK_RETRIES.labels(self.sink_label).inc(len(pending))
                        result.retried += len(pending)
                    try:
                        pending = await self._call(pending, result)
                    except Exception as exc:
                        if _is_item_refusal(exc):
                            return await self._isolate(pending, exc, result, deadline)
                        if not is_retryable_aws_error(exc):
                            self._fail(result, [put.item for put in pending], _describe(exc))
                            return _describe(exc)
                        last_error = _describe(exc)
                        log.warning(
                            "BatchWriteItem to %s failed (attempt %d): %s",
                            self.table_name,
                            attempt.retry_state.attempt_number,
                            last_error,
                        )
                        raise _RetryLater(last_error) from exc
                    if pending:
                        last_error = "still unprocessed (throughput exceeded)"
                        raise _RetryLater(last_error)
        except _RetryLater:
            if deadline is None:
                reason = f"not written after {self.attempts} attempts: {last_error}"
            else:
                reason = f"not written in {time.monotonic() - started:.1f}s: {last_error}"
            self._fail(result, [put.item for put in pending], reason)
            if deadline is not None and self._time_left(deadline) == 0.0:
                return reason
        return None

    async def _call(self, puts: list[_Put], result: BatchWriteResult) -> list[_Put]:
        """One BatchWriteItem call; returns the puts DynamoDB left unprocessed."""
        answer = await self.client.batch_write_item(
            RequestItems={self.table_name: [put.request for put in puts]}
        )
        unprocessed = answer.get("UnprocessedItems", {}).get(self.table_name, [])
        if not unprocessed:
            result.written += len(puts)
            return []
        by_key = {put.key: put for put in puts}
        left: list[_Put] = []
        for request in unprocessed:
            item = request.get("PutRequest", {}).get("Item", {})
            key = self._key_of(item)
            put = by_key.pop(key, None)
            if put is None:
                # An answer naming a put we cannot match is still retried rather than lost,
                # and reported, should it fail, as plain attributes like every other item.
                plain = {name: _DESERIALIZER.deserialize(value) for name, value in item.items()}
                put = _Put(item=plain, request=request, key=key)
            left.append(put)
        # Every put the answer did not hand back was written.
        result.written += len(by_key)
        return left

    async def _isolate(
        self,
        puts: list[_Put],
        exc: Exception,
        result: BatchWriteResult,
        deadline: float | None = None,
    ) -> str | None:
        """A refused call fails every put in it; writing them one by one lets the sound ones
        through and pins the refusal on the item that caused it."""
        if len(puts) == 1:
            self._fail(result, [puts[0].item], _describe(exc), permanent=True)
            return None
        log.warning(
            "BatchWriteItem to %s refused a batch of %d (%s); writing its items one by one",
            self.table_name,
            len(puts),
            _describe(exc),
        )
        for index, put in enumerate(puts):
            table_fault = await self._write_batch([put], result, deadline)
            if table_fault is not None:
                self._fail(result, [later.item for later in puts[index + 1 :]], table_fault)
                return table_fault
        return None

    def _fail(
        self,
        result: BatchWriteResult,
        items: list[Mapping[str, Any]],
        reason: str,
        *,
        permanent: bool = False,
    ) -> None:
        if not items:
            return
        result.failed.extend(
            FailedItem(item=item, reason=reason, permanent=permanent) for item in items
        )
        SINK_FAILURES.labels(self.sink_label).inc(len(items))
        log.error("%d item(s) could not be written to %s: %s", len(items), self.table_name, reason)
