"""The Kinesis forwarder against moto's Kinesis over HTTP: everything put arrives."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from vfstream.aws import aws_client
from vfstream.settings import Settings
from vfstream.sinks.kinesis import KinesisForwarder, KinesisRecord

pytestmark = pytest.mark.integration


async def read_stream(kinesis, stream: str) -> list[tuple[str, bytes]]:
    shards = (await kinesis.list_shards(StreamName=stream))["Shards"]
    out: list[tuple[str, bytes]] = []
    for shard in shards:
        iterator = (
            await kinesis.get_shard_iterator(
                StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )
        )["ShardIterator"]
        while iterator:
            answer = await kinesis.get_records(ShardIterator=iterator, Limit=1000)
            out += [(r["PartitionKey"], r["Data"]) for r in answer["Records"]]
            if not answer["Records"]:
                break
            iterator = answer.get("NextShardIterator")
    return out


async def test_every_record_put_in_batches_arrives_with_its_partition_key(stack: Settings) -> None:
    stream = f"vf-scores-{uuid.uuid4().hex[:8]}"
    async with aws_client(stack, "kinesis") as kinesis:
        await kinesis.create_stream(StreamName=stream, ShardCount=2)
        for _ in range(50):
            status = await kinesis.describe_stream_summary(StreamName=stream)
            if status["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
                break
            await asyncio.sleep(0.1)
        records = [KinesisRecord(f"u{i}", f'{{"n": {i}}}'.encode()) for i in range(1200)]
        result = await KinesisForwarder(kinesis, stream).forward(records)
        assert result.sent == 1200 and not result.failed
        stored = await read_stream(kinesis, stream)
    assert sorted(stored) == sorted((r.partition_key, r.data) for r in records)
