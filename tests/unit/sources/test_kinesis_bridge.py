"""The bridge's copy loop against an in-memory Kinesis and producer: retries, expired
iterators, failed commits and reshards, none of which the emulators can be made to do on
cue. The real broker and emulators are in tests/integration/test_kinesis_bridge.py."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError

from tests.support.aws import client_error
from tests.support.rows import MINIMAL_ROW
from vfstream.cli.main import build_parser
from vfstream.domain.batches import decode_batch
from vfstream.domain.keys import partition_for
from vfstream.domain.records import ScoreRecord
from vfstream.domain.shards import ShardCheckpoint
from vfstream.metrics import BRIDGE_AWS_RETRIES
from vfstream.settings import Settings
from vfstream.sources.kinesis_bridge import KinesisBridge

STREAM = "feed"
NOW = datetime(2026, 10, 21, tzinfo=UTC)


def document(fan: int) -> bytes:
    user = f"u{fan}"
    return orjson.dumps(
        {**MINIMAL_ROW, "globalUserId": user, "id": f"{user}000", "campaignId": "c1"}
    )


@dataclass
class FakeShard:
    shard_id: str
    parents: tuple[str, ...] = ()
    records: list[bytes] = field(default_factory=list)
    closed: bool = False


class FakeKinesis:
    """Kinesis as documented: sequence numbers from 1 per shard, a closed shard's iterator
    ends once it is drained, iterators are opaque. ``failures`` are raised by name, once each."""

    def __init__(self, shards: list[FakeShard]) -> None:
        self.shards = {s.shard_id: s for s in shards}
        self.failures: dict[str, list[Exception]] = {}
        self.calls: list[tuple[str, Any]] = []

    def _fail(self, name: str) -> None:
        pending = self.failures.get(name)
        if pending:
            raise pending.pop(0)

    async def list_shards(self, **arguments: Any) -> dict[str, Any]:
        self.calls.append(("ListShards", arguments))
        self._fail("ListShards")
        shards = []
        for shard in self.shards.values():
            entry: dict[str, Any] = {
                "ShardId": shard.shard_id,
                "SequenceNumberRange": {"StartingSequenceNumber": "1"},
            }
            if shard.parents:
                entry["ParentShardId"] = shard.parents[0]
            if len(shard.parents) > 1:
                entry["AdjacentParentShardId"] = shard.parents[1]
            if shard.closed:
                # Like Kinesis, far beyond the last record: only the ended iterator tells.
                entry["SequenceNumberRange"]["EndingSequenceNumber"] = "999999"
            shards.append(entry)
        return {"Shards": shards}

    async def get_shard_iterator(self, **arguments: Any) -> dict[str, Any]:
        self.calls.append(("GetShardIterator", arguments))
        self._fail("GetShardIterator")
        after = 0
        if arguments["ShardIteratorType"] == "AFTER_SEQUENCE_NUMBER":
            after = int(arguments["StartingSequenceNumber"])
        return {"ShardIterator": self._iterator(arguments["ShardId"], after)}

    @staticmethod
    def _iterator(shard_id: str, after: int) -> str:
        return base64.b64encode(f"{shard_id}:{after}".encode()).decode()

    async def get_records(self, **arguments: Any) -> dict[str, Any]:
        shard_id, after_text = base64.b64decode(arguments["ShardIterator"]).decode().split(":")
        self.calls.append(("GetRecords", shard_id))
        self._fail("GetRecords")
        shard = self.shards[shard_id]
        after = int(after_text)
        chosen = shard.records[after : after + arguments["Limit"]]
        last = after + len(chosen)
        answer: dict[str, Any] = {
            "Records": [
                {
                    "SequenceNumber": str(after + index + 1),
                    "Data": data,
                    "PartitionKey": "pk",
                    "ApproximateArrivalTimestamp": NOW,
                }
                for index, data in enumerate(chosen)
            ],
            "MillisBehindLatest": 0 if last == len(shard.records) else 1000,
        }
        if not (shard.closed and not chosen and last == len(shard.records)):
            answer["NextShardIterator"] = self._iterator(shard_id, last)
        return answer


def _done() -> asyncio.Future[None]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


class FakeProducer:
    """Keeps what committed transactions produced; ``fail_commits`` commits raise."""

    def __init__(self) -> None:
        self.committed: list[tuple[str, bytes, bytes]] = []
        self.fail_commits = 0
        self._open: list[tuple[str, bytes, bytes]] | None = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self._open = []
        try:
            yield
            if self.fail_commits:
                self.fail_commits -= 1
                raise RuntimeError("commit failed")
            self.committed.extend(self._open)
        finally:
            self._open = None

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> asyncio.Future[None]:
        assert self._open is not None, "sent outside a transaction"
        if topic == SETTINGS.score_records_topic:
            # Score batches: one message per table partition, each record where the hash says.
            for record in decode_batch(value):
                fan = ScoreRecord.model_validate(record).key.encode()
                assert partition == partition_for(fan, SETTINGS.topic_partitions)
                self._open.append((topic, fan, orjson.dumps(record)))
            return _done()
        self._open.append((topic, key or b"", value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def topic(self, name: str) -> list[tuple[bytes, bytes]]:
        return [(key, value) for topic, key, value in self.committed if topic == name]

    def checkpoints(self) -> dict[str, ShardCheckpoint]:
        latest = {}
        for _, value in self.topic(SETTINGS.bridge_checkpoints_topic):
            checkpoint = ShardCheckpoint.model_validate_json(value)
            latest[checkpoint.shardId] = checkpoint
        return latest


SETTINGS = Settings(bridge_batch_records=3, bridge_poll_seconds=0.01)


def bridge(**options: Any) -> KinesisBridge:
    return KinesisBridge(
        SETTINGS, stream=STREAM, aws_attempts=3, aws_backoff_seconds=0.001, **options
    )


async def drain(
    kinesis: FakeKinesis,
    producer: FakeProducer,
    checkpoints: dict[str, ShardCheckpoint] | None = None,
    **options: Any,
) -> KinesisBridge:
    copier = bridge(**options)
    await copier._copy(kinesis, producer, checkpoints or {}, lambda: False, once=True)
    return copier


def copied(producer: FakeProducer) -> list[str]:
    """The fans copied, in order per table partition (score batches keep no order across)."""
    return [
        ScoreRecord.from_json(value).globalUserId
        for _, value in producer.topic(SETTINGS.score_records_topic)
    ]


# ---- errors worth retrying ---------------------------------------------------------------


async def test_throttled_calls_are_retried_and_counted_then_copy_goes_on() -> None:
    kinesis = FakeKinesis([FakeShard("s0", records=[document(i) for i in range(4)])])
    kinesis.failures = {
        "ListShards": [client_error("LimitExceededException", operation="ListShards")],
        "GetRecords": [client_error("ProvisionedThroughputExceededException")] * 2,
    }
    before = BRIDGE_AWS_RETRIES.labels("GetRecords")._value.get()
    producer = FakeProducer()
    await drain(kinesis, producer)
    assert copied(producer) == ["u0", "u1", "u2", "u3"]
    assert BRIDGE_AWS_RETRIES.labels("GetRecords")._value.get() - before == 2


async def test_an_error_that_keeps_coming_gives_up_after_the_attempts() -> None:
    kinesis = FakeKinesis([FakeShard("s0", records=[document(0)])])
    kinesis.failures = {"GetRecords": [client_error("InternalFailure", 500)] * 3}
    with pytest.raises(ClientError, match="InternalFailure"):
        await drain(kinesis, FakeProducer())
    assert [name for name, _ in kinesis.calls].count("GetRecords") == 3


async def test_an_error_retrying_cannot_help_is_raised_at_once() -> None:
    kinesis = FakeKinesis([FakeShard("s0", records=[document(0)])])
    kinesis.failures = {"GetRecords": [client_error("AccessDeniedException")]}
    with pytest.raises(ClientError, match="AccessDenied"):
        await drain(kinesis, FakeProducer())
    assert [name for name, _ in kinesis.calls].count("GetRecords") == 1


async def test_an_expired_iterator_is_replaced_from_the_committed_position() -> None:
    kinesis = FakeKinesis([FakeShard("s0", records=[document(i) for i in range(5)])])

    async def expire_the_iterator(summary: Any) -> None:
        # Iterators live five minutes: a bridge paused longer finds its next one expired.
        if summary.records == 3:
            kinesis.failures["GetRecords"] = [client_error("ExpiredIteratorException")]

    producer = FakeProducer()
    await drain(kinesis, producer, on_commit=expire_the_iterator)

    assert sorted(copied(producer)) == ["u0", "u1", "u2", "u3", "u4"]
    iterators = [args for name, args in kinesis.calls if name == "GetShardIterator"]
    assert [i["ShardIteratorType"] for i in iterators] == ["TRIM_HORIZON", "AFTER_SEQUENCE_NUMBER"]
    assert iterators[1]["StartingSequenceNumber"] == "3"


# ---- transactions and checkpoints --------------------------------------------------------


async def test_a_failed_commit_leaves_the_checkpoint_so_a_restart_repeats_nothing() -> None:
    kinesis = FakeKinesis([FakeShard("s0", records=[document(i) for i in range(7)])])
    producer = FakeProducer()
    commits = 0

    async def count(_: Any) -> None:
        nonlocal commits
        commits += 1
        producer.fail_commits = 1 if commits == 1 else 0  # the second commit fails

    with pytest.raises(RuntimeError, match="commit failed"):
        await drain(kinesis, producer, on_commit=count)
    assert sorted(copied(producer)) == ["u0", "u1", "u2"]
    assert producer.checkpoints()["s0"].sequenceNumber == "3"

    await drain(kinesis, producer, producer.checkpoints())
    assert sorted(copied(producer)) == [f"u{i}" for i in range(7)]


async def test_invalid_records_are_dead_lettered_in_the_same_transaction() -> None:
    kinesis = FakeKinesis([FakeShard("s0", records=[document(0), b"oops", document(2)])])
    producer = FakeProducer()
    copier = await drain(kinesis, producer)
    assert sorted(copied(producer)) == ["u0", "u2"]
    [(key, value)] = producer.topic(SETTINGS.dead_letter_topic)
    assert key == b"kinesis://feed/s0/2"
    assert orjson.loads(value)["reasons"][0].startswith("record: not valid JSON")
    assert (copier.summary.records, copier.summary.valid, copier.summary.invalid) == (3, 2, 1)
    # One transaction held both, with the checkpoint past all three.
    assert producer.checkpoints()["s0"].sequenceNumber == "3"


async def test_an_open_shard_read_to_its_end_is_not_finished() -> None:
    kinesis = FakeKinesis([FakeShard("s0", records=[document(0)])])
    producer = FakeProducer()
    await drain(kinesis, producer)
    assert not producer.checkpoints()["s0"].finished


# ---- resharding --------------------------------------------------------------------------


async def test_children_are_read_only_after_the_parent_is_committed_as_finished() -> None:
    kinesis = FakeKinesis(
        [
            FakeShard("s0", records=[document(i) for i in range(4)], closed=True),
            FakeShard("s1", records=[document(10)]),
            FakeShard("s2", parents=("s0",), records=[document(0), document(20)], closed=True),
            FakeShard("s3", parents=("s0",), records=[document(1)], closed=True),
            FakeShard("s4", parents=("s2", "s3"), records=[document(0)]),
        ]
    )
    producer = FakeProducer()
    finished_when_read: dict[str, set[str]] = {}
    original = kinesis.get_shard_iterator

    async def watch(**arguments: Any) -> dict[str, Any]:
        finished = {s for s, c in producer.checkpoints().items() if c.finished}
        finished_when_read[arguments["ShardId"]] = finished
        return await original(**arguments)

    kinesis.get_shard_iterator = watch  # type: ignore[method-assign]
    copier = await drain(kinesis, producer)

    assert finished_when_read["s2"] >= {"s0"} and finished_when_read["s3"] >= {"s0"}
    assert finished_when_read["s4"] >= {"s0", "s2", "s3"}
    assert copier.summary.finished_shards == {"s0", "s2", "s3"}
    assert sorted(copied(producer)) == sorted(
        ["u0", "u1", "u2", "u3", "u10", "u0", "u20", "u1", "u0"]
    )
    # Fan u0's records keep their order across the lineage s0 -> s2 -> s4.
    u0_shards = [
        record.source.shardId
        for _, value in producer.topic(SETTINGS.score_records_topic)
        if (record := ScoreRecord.from_json(value)).globalUserId == "u0" and record.source
    ]
    assert u0_shards == ["s0", "s2", "s4"]
    checkpoints = producer.checkpoints()
    assert checkpoints["s0"].finished and checkpoints["s0"].sequenceNumber == "4"
    assert not checkpoints["s4"].finished


async def test_a_restart_skips_finished_shards_and_resumes_the_rest() -> None:
    kinesis = FakeKinesis(
        [
            FakeShard("s0", records=[document(0)], closed=True),
            FakeShard("s1", parents=("s0",), records=[document(1), document(2)]),
        ]
    )
    checkpoints = {
        "s0": ShardCheckpoint(stream=STREAM, shardId="s0", finished=True, updated=NOW),
        "s1": ShardCheckpoint(stream=STREAM, shardId="s1", sequenceNumber="1", updated=NOW),
    }
    producer = FakeProducer()
    copier = await drain(kinesis, producer, checkpoints)
    assert copied(producer) == ["u2"]
    assert copier.summary.shards_read == {"s1"}


def test_the_cli_takes_a_stream_and_once() -> None:
    args = build_parser().parse_args(["bridge", "--stream", "x", "--once"])
    assert (args.command, args.stream, args.once) == ("bridge", "x", True)
    args = build_parser().parse_args(["bridge"])
    assert (args.stream, args.once) == (None, False)
