"""Kinesis streams for tests: create one, put records to it, reshard it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from vfstream.aws import aws_client
from vfstream.settings import Settings


@dataclass(frozen=True)
class PutRecord:
    data: bytes
    partition_key: str
    shard_id: str
    sequence_number: str


def unique_stream(prefix: str = "vf-feed") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def wait_active(kinesis: Any, stream: str) -> None:
    for _ in range(200):
        summary = await kinesis.describe_stream_summary(StreamName=stream)
        if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"stream {stream} did not become ACTIVE")


async def read_stream(settings: Settings, stream: str) -> list[tuple[str, bytes]]:
    """Every record in the stream, all shards from their start: (partition key, data)."""
    found: list[tuple[str, bytes]] = []
    async with aws_client(settings, "kinesis") as kinesis:
        for shard in (await kinesis.list_shards(StreamName=stream))["Shards"]:
            iterator = (
                await kinesis.get_shard_iterator(
                    StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
                )
            )["ShardIterator"]
            while iterator:
                answer = await kinesis.get_records(ShardIterator=iterator, Limit=1000)
                found += [(r["PartitionKey"], r["Data"]) for r in answer["Records"]]
                if not answer["Records"]:
                    break
                iterator = answer.get("NextShardIterator")
    return found


async def create_stream(settings: Settings, stream: str, shards: int = 2) -> None:
    async with aws_client(settings, "kinesis") as kinesis:
        await kinesis.create_stream(StreamName=stream, ShardCount=shards)
        await wait_active(kinesis, stream)


async def put_records(
    settings: Settings,
    stream: str,
    documents: Sequence[Any],
    *,
    partition_key: str = "globalUserId",
) -> list[PutRecord]:
    """Put documents in order, one PutRecords call at a time (moto loses records when
    several callers put at once). Bytes are sent as they are; anything else as JSON."""
    put: list[PutRecord] = []
    async with aws_client(settings, "kinesis") as kinesis:
        for start in range(0, len(documents), 500):
            chunk = documents[start : start + 500]
            entries = []
            for index, document in enumerate(chunk):
                data = document if isinstance(document, bytes) else orjson.dumps(document)
                key = document.get(partition_key) if isinstance(document, dict) else None
                entries.append({"Data": data, "PartitionKey": str(key or f"k{start + index}")})
            answer = await kinesis.put_records(StreamName=stream, Records=entries)
            assert not answer.get("FailedRecordCount"), answer
            for entry, result in zip(entries, answer["Records"], strict=True):
                put.append(
                    PutRecord(
                        data=entry["Data"],
                        partition_key=entry["PartitionKey"],
                        shard_id=result["ShardId"],
                        sequence_number=result["SequenceNumber"],
                    )
                )
    return put


async def list_shards(settings: Settings, stream: str) -> list[dict[str, Any]]:
    async with aws_client(settings, "kinesis") as kinesis:
        return (await kinesis.list_shards(StreamName=stream))["Shards"]


def _middle(shard: dict[str, Any]) -> str:
    hash_range = shard["HashKeyRange"]
    return str((int(hash_range["StartingHashKey"]) + int(hash_range["EndingHashKey"])) // 2)


async def split_shard(settings: Settings, stream: str, shard_id: str) -> list[str]:
    """Split a shard at the middle of its hash range; returns the children's ids."""
    async with aws_client(settings, "kinesis") as kinesis:
        shards = (await kinesis.list_shards(StreamName=stream))["Shards"]
        shard = next(s for s in shards if s["ShardId"] == shard_id)
        await kinesis.split_shard(
            StreamName=stream, ShardToSplit=shard_id, NewStartingHashKey=_middle(shard)
        )
        await wait_active(kinesis, stream)
        shards = (await kinesis.list_shards(StreamName=stream))["Shards"]
    return [s["ShardId"] for s in shards if s.get("ParentShardId") == shard_id]


async def merge_shards(settings: Settings, stream: str, shard_id: str, adjacent_id: str) -> str:
    """Merge two adjacent shards; returns the child's id."""
    async with aws_client(settings, "kinesis") as kinesis:
        await kinesis.merge_shards(
            StreamName=stream, ShardToMerge=shard_id, AdjacentShardToMerge=adjacent_id
        )
        await wait_active(kinesis, stream)
        shards = (await kinesis.list_shards(StreamName=stream))["Shards"]
    return next(
        s["ShardId"]
        for s in shards
        if {s.get("ParentShardId"), s.get("AdjacentParentShardId")} == {shard_id, adjacent_id}
    )
