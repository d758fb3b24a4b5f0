"""Score batches: the messages of the score-record topic (README "Score batches"). No I/O.

One message holds the score records of one partition of the fan-state table, in the order
they were produced, as a versioned JSON envelope::

    {"v": 1, "records": [<score record>, ...]}

Each record is the JSON object a single record has always been (``ScoreRecord.to_json``), so
a consumer outside vfstream reads a batch with any JSON parser. A message that is a bare
record object (what vfstream produced before batches, or a foreign producer) reads as a
batch of one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from vfstream.errors import InputRejected

BATCH_FORMAT = 1
MAX_BATCH_RECORDS = 1_000
MAX_BATCH_BYTES = 512 * 1024
_HEAD = b'{"v":1,"records":['
_TAIL = b"]}"


class MalformedBatch(InputRejected):
    """A message of the score-record topic that is neither a batch nor a record."""


def encode_batch(records: list[bytes]) -> bytes:
    """A batch of already encoded records, without decoding them again."""
    return _HEAD + b",".join(records) + _TAIL


def decode_batch(value: bytes | None) -> list[Any]:
    """The records of a message: each a decoded JSON value, to be checked one by one."""
    if not value:
        raise MalformedBatch("empty message")
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise MalformedBatch(f"not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise MalformedBatch(f"expected a JSON object, got {type(body).__name__}")
    if "records" in body and "v" in body:
        if body["v"] != BATCH_FORMAT:
            raise MalformedBatch(f"batch format {body['v']!r}, expected {BATCH_FORMAT}")
        records = body["records"]
        if not isinstance(records, list):
            raise MalformedBatch("records: expected a list")
        return records
    return [body]


@dataclass
class _Open:
    records: list[bytes] = field(default_factory=list)
    size: int = len(_HEAD) + len(_TAIL)


class BatchBuilder:
    """Collects encoded records per partition; a batch is done at MAX_BATCH_RECORDS records
    or when the next record would take it past MAX_BATCH_BYTES."""

    def __init__(
        self, max_records: int = MAX_BATCH_RECORDS, max_bytes: int = MAX_BATCH_BYTES
    ) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._open: dict[int, _Open] = {}

    def add(self, partition: int, record: bytes) -> bytes | None:
        """Add a record; returns the partition's finished batch when this one did not fit."""
        batch = self._open.get(partition)
        if batch is None:
            batch = self._open[partition] = _Open()
        done = None
        if batch.records and (
            len(batch.records) >= self.max_records or batch.size + len(record) + 1 > self.max_bytes
        ):
            done = encode_batch(batch.records)
            batch = self._open[partition] = _Open()
        batch.records.append(record)
        batch.size += len(record) + 1
        return done

    def drain(self) -> Iterator[tuple[int, bytes]]:
        """Every open batch, emptied."""
        for partition, batch in sorted(self._open.items()):
            if batch.records:
                yield partition, encode_batch(batch.records)
        self._open.clear()
