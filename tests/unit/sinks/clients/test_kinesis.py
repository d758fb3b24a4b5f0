"""Kinesis batching and partial-failure retry; the client is a stub that answers like
PutRecords, so failures can be injected entry by entry."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfstream.sinks.clients.kinesis import (
    MAX_BYTES_PER_RECORD,
    KinesisForwarder,
    KinesisRecord,
    RecordTooLarge,
    plan_batches,
)


class ScriptedKinesis:
    """Fails the entries whose partition keys are listed, the given number of times each."""

    def __init__(self, fail: dict[str, int] | None = None, raise_first: int = 0) -> None:
        self.fail = dict(fail or {})
        self.raise_first = raise_first
        self.calls: list[list[str]] = []
        self.stored: list[tuple[str, bytes]] = []

    async def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append([r["PartitionKey"] for r in Records])
        if self.raise_first:
            self.raise_first -= 1
            raise ConnectionError("endpoint down")
        entries = []
        for record in Records:
            key = record["PartitionKey"]
            if self.fail.get(key, 0) > 0:
                self.fail[key] -= 1
                entries.append({"ErrorCode": "ProvisionedThroughputExceededException"})
            else:
                self.stored.append((key, record["Data"]))
                entries.append({"SequenceNumber": str(len(self.stored)), "ShardId": "s-0"})
        failed = sum(1 for e in entries if "ErrorCode" in e)
        return {"FailedRecordCount": failed, "Records": entries}


def records(n: int, size: int = 10) -> list[KinesisRecord]:
    return [KinesisRecord(f"u{i}", b"x" * size) for i in range(n)]


@given(
    sizes=st.lists(st.integers(1, 300_000), max_size=60),
    max_records=st.integers(1, 20),
)
def test_batches_keep_order_and_both_limits(sizes: list[int], max_records: int) -> None:
    items = [KinesisRecord(f"k{i}", b"x" * s) for i, s in enumerate(sizes)]
    batches = plan_batches(items, max_records=max_records, max_bytes=1_000_000)
    assert [r for batch in batches for r in batch] == items
    for batch in batches:
        assert 1 <= len(batch) <= max_records
        assert len(batch) == 1 or sum(r.size for r in batch) <= 1_000_000


def test_a_batch_holds_at_most_500_records_and_5_mib() -> None:
    assert [len(b) for b in plan_batches(records(1200))] == [500, 500, 200]
    big = records(12, size=1_000_000)  # 5 fit in 5 MiB, not 6
    assert [len(b) for b in plan_batches(big)] == [5, 5, 2]


def test_a_record_over_1_mib_is_refused_with_a_clear_error() -> None:
    with pytest.raises(RecordTooLarge, match="at most"):
        plan_batches([KinesisRecord("u1", b"x" * MAX_BYTES_PER_RECORD)])


async def test_failed_entries_are_retried_alone_and_nothing_is_lost() -> None:
    client = ScriptedKinesis(fail={"u3": 1, "u7": 2})
    forwarder = KinesisForwarder(client, "scores", base_delay=0)
    result = await forwarder.forward(records(10))
    assert result.sent == 10 and not result.failed
    assert client.calls[1] == ["u3", "u7"] and client.calls[2] == ["u7"]
    assert sorted(key for key, _ in client.stored) == sorted(f"u{i}" for i in range(10))


async def test_a_call_that_raises_is_retried_whole() -> None:
    client = ScriptedKinesis(raise_first=2)
    result = await KinesisForwarder(client, "scores", base_delay=0).forward(records(3))
    assert result.sent == 3 and len(client.calls) == 3


async def test_records_still_failing_after_all_attempts_are_reported_not_dropped() -> None:
    client = ScriptedKinesis(fail={"u1": 99})
    result = await KinesisForwarder(client, "scores", attempts=3, base_delay=0).forward(records(2))
    assert result.sent == 1
    assert [(r.partition_key, why.split(":")[0]) for r, why in result.failed] == [
        ("u1", "ProvisionedThroughputExceededException")
    ]
    assert len(client.calls) == 3
