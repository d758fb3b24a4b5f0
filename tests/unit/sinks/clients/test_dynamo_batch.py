"""BatchWriteItem batching, retries and failure reporting; the client is a stub that answers
like DynamoDB, so unprocessed items, throttling and refusals can be injected put by put."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from prometheus_client import REGISTRY

from vfstream.sinks.clients.dynamo_batch import (
    MAX_ITEMS_PER_CALL,
    DynamoBatchWriter,
    serialise_item,
)

TABLE = "demand"


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} happened"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "BatchWriteItem",
    )


class ScriptedDynamo:
    """Stores puts by PK. ``unprocessed`` leaves the named PKs unprocessed that many times;
    ``errors`` are raised by the next calls, one each; a put of a PK in ``refused`` makes
    its whole call fail with a ValidationException, as an oversized item would."""

    def __init__(
        self,
        unprocessed: dict[str, int] | None = None,
        errors: list[Exception] | None = None,
        refused: set[str] | None = None,
    ) -> None:
        self.unprocessed = dict(unprocessed or {})
        self.errors = list(errors or [])
        self.refused = set(refused or ())
        self.calls: list[list[str]] = []
        self.stored: dict[str, dict[str, Any]] = {}

    async def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]]) -> Any:
        (table, requests), *others = RequestItems.items()
        assert table == TABLE and not others
        assert 1 <= len(requests) <= MAX_ITEMS_PER_CALL
        items = [request["PutRequest"]["Item"] for request in requests]
        keys = [(item["PK"]["S"], item["SK"]["S"]) for item in items]
        assert len(set(keys)) == len(keys), "DynamoDB refuses two puts of one key in a call"
        self.calls.append([pk for pk, _ in keys])
        if self.errors:
            raise self.errors.pop(0)
        if any(pk in self.refused for pk, _ in keys):
            raise client_error("ValidationException")
        left = []
        for request, item in zip(requests, items, strict=True):
            pk = item["PK"]["S"]
            if self.unprocessed.get(pk, 0) > 0:
                self.unprocessed[pk] -= 1
                left.append(request)
            else:
                self.stored[pk] = item
        return {"UnprocessedItems": {TABLE: left} if left else {}}


def items(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"PK": f"fan:u{i}", "SK": "campaign:c1", "score": 0.5} for i in range(start, n)]


def writer(client: ScriptedDynamo, **options: Any) -> DynamoBatchWriter:
    return DynamoBatchWriter(client, TABLE, base_delay=0, **options)


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"sink": "dynamodb"}) or 0.0


def test_plain_attributes_are_serialised_with_floats_as_decimal_numbers() -> None:
    item = {
        "PK": "fan:u1",
        "score": 0.1,
        "count": 3,
        "ok": True,
        "gone": None,
        "date": {"updated": "2026-10-20T12:00:00.000Z", "weights": [0.25, 1]},
        "tags": ["a", "b"],
    }
    assert serialise_item(item) == {
        "PK": {"S": "fan:u1"},
        "score": {"N": "0.1"},
        "count": {"N": "3"},
        "ok": {"BOOL": True},
        "gone": {"NULL": True},
        "date": {
            "M": {
                "updated": {"S": "2026-10-20T12:00:00.000Z"},
                "weights": {"L": [{"N": "0.25"}, {"N": "1"}]},
            }
        },
        "tags": {"L": [{"S": "a"}, {"S": "b"}]},
    }
    assert Decimal(serialise_item({"x": 1e-7})["x"]["N"]) == Decimal("1e-7")


async def test_items_go_out_25_a_call_in_order() -> None:
    client = ScriptedDynamo()
    result = await writer(client).put_items(items(60))
    assert [len(call) for call in client.calls] == [25, 25, 10]
    assert [pk for call in client.calls for pk in call] == [f"fan:u{i}" for i in range(60)]
    assert (result.written, result.retried, result.failed) == (60, 0, [])
    assert client.stored["fan:u7"]["score"] == {"N": "0.5"}


async def test_nothing_to_write_makes_no_call() -> None:
    client = ScriptedDynamo()
    result = await writer(client).put_items([])
    assert client.calls == [] and result.written == 0 and not result.failed


async def test_unprocessed_items_are_retried_alone_until_written() -> None:
    client = ScriptedDynamo(unprocessed={"fan:u3": 1, "fan:u7": 2})
    retries_before = metric("vfstream_sink_retries_total")
    result = await writer(client).put_items(items(10))
    assert client.calls[1:] == [["fan:u3", "fan:u7"], ["fan:u7"]]
    assert result.written == 10 and not result.failed
    assert result.retried == 3
    assert metric("vfstream_sink_retries_total") - retries_before == 3
    assert sorted(client.stored) == sorted(f"fan:u{i}" for i in range(10))


@pytest.mark.parametrize(
    "error",
    [
        client_error("ProvisionedThroughputExceededException"),
        client_error("ThrottlingException"),
        client_error("InternalServerError", 500),
        client_error("SomethingNew", 503),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    ],
)
async def test_throttled_failed_or_unreachable_calls_are_retried_whole(error: Exception) -> None:
    client = ScriptedDynamo(errors=[error, error])
    result = await writer(client).put_items(items(3))
    assert len(client.calls) == 3 and result.written == 3 and not result.failed


async def test_items_still_unprocessed_after_every_attempt_are_reported_not_dropped() -> None:
    client = ScriptedDynamo(unprocessed={"fan:u1": 99})
    failures_before = metric("vfstream_sink_failures_total")
    result = await writer(client, attempts=3).put_items(items(3))
    assert len(client.calls) == 3
    assert result.written == 2
    assert [(f.item["PK"], f.reason) for f in result.failed] == [
        ("fan:u1", "not written after 3 attempts: still unprocessed (throughput exceeded)")
    ]
    assert metric("vfstream_sink_failures_total") - failures_before == 1


async def test_a_call_failing_every_attempt_reports_its_items_with_the_last_error() -> None:
    throttled = client_error("ProvisionedThroughputExceededException")
    client = ScriptedDynamo(errors=[throttled] * 4)
    result = await writer(client, attempts=4).put_items(items(30))
    assert result.written == 5
    assert len(result.failed) == 25
    assert result.failed[0].reason == (
        "not written after 4 attempts: ProvisionedThroughputExceededException: "
        "ProvisionedThroughputExceededException happened"
    )


async def test_a_refused_call_is_split_so_only_the_refused_item_fails() -> None:
    client = ScriptedDynamo(refused={"fan:u4"})
    result = await writer(client).put_items(items(8))
    assert client.calls[0] == [f"fan:u{i}" for i in range(8)]
    assert client.calls[1:] == [[f"fan:u{i}"] for i in range(8)]
    assert result.written == 7
    assert [(f.item["PK"], f.reason) for f in result.failed] == [
        ("fan:u4", "ValidationException: ValidationException happened")
    ]


async def test_a_missing_table_fails_every_item_after_one_call() -> None:
    client = ScriptedDynamo(errors=[client_error("ResourceNotFoundException")])
    result = await writer(client).put_items(items(60))
    assert len(client.calls) == 1
    assert result.written == 0 and len(result.failed) == 60
    assert {f.reason for f in result.failed} == {
        "ResourceNotFoundException: ResourceNotFoundException happened"
    }


async def test_a_repeated_key_starts_a_new_call_so_the_later_put_stays() -> None:
    first = {"PK": "fan:u1", "SK": "campaign:c1", "score": 0.1}
    second = {"PK": "fan:u1", "SK": "campaign:c1", "score": 0.9}
    other_campaign = {"PK": "fan:u1", "SK": "campaign:c2", "score": 0.5}
    client = ScriptedDynamo()
    result = await writer(client).put_items([first, other_campaign, second])
    assert client.calls == [["fan:u1", "fan:u1"], ["fan:u1"]]
    assert result.written == 3
    assert client.stored["fan:u1"]["score"] == {"N": "0.9"}


async def test_an_item_that_cannot_be_stored_fails_alone() -> None:
    nan = {"PK": "fan:nan", "SK": "campaign:c1", "score": float("nan")}
    odd = {"PK": "fan:odd", "SK": "campaign:c1", "value": object()}
    keyless = {"PK": "fan:nosk", "score": 1.0}
    client = ScriptedDynamo()
    result = await writer(client).put_items([nan, *items(2), odd, keyless])
    assert result.written == 2
    reasons = {f.item["PK"]: f.reason for f in result.failed}
    assert set(reasons) == {"fan:nan", "fan:odd", "fan:nosk"}
    assert all(reason.startswith("cannot be serialised") for reason in reasons.values())
    assert "lacks its key attributes SK" in reasons["fan:nosk"]


async def test_a_failed_item_is_reported_as_the_very_mapping_given() -> None:
    given = items(1)
    client = ScriptedDynamo(unprocessed={"fan:u0": 9})
    result = await writer(client, attempts=2).put_items(given)
    assert result.failed[0].item is given[0]


async def test_an_unprocessed_put_it_cannot_match_is_still_retried_and_reported() -> None:
    class Renaming(ScriptedDynamo):
        async def batch_write_item(self, RequestItems: dict[str, Any]) -> Any:
            self.calls.append([])
            stray = {"PutRequest": {"Item": {"PK": {"S": "fan:x"}, "SK": {"S": "s"}}}}
            return {"UnprocessedItems": {TABLE: [stray]}}

    result = await writer(Renaming(), attempts=2).put_items(items(1))
    assert result.written == 1
    assert [f.item for f in result.failed] == [{"PK": "fan:x", "SK": "s"}]


async def test_within_bounds_the_retries_of_the_whole_call_and_fails_the_rest_at_once() -> None:
    """With ``within`` (a fanlist ingest's time bound), a table that throttles every item
    for longer is retried until the deadline; then every batch left gets one call, and once
    one of those fails too the rest fail without a call, each item reported."""
    client = ScriptedDynamo(unprocessed={f"fan:u{i}": 10_000 for i in range(100)})
    result = await DynamoBatchWriter(
        client, TABLE, attempts=None, within=0.3, base_delay=0.01, max_delay=0.05
    ).put_items(items(100))
    assert result.written == 0
    assert len(result.failed) == 100
    assert not any(f.permanent for f in result.failed)
    assert result.failed[0].reason.startswith("not written in 0.")
    first_batch_calls = sum(1 for call in client.calls if call[0] == "fan:u0")
    assert first_batch_calls > 3  # retried until the deadline
    assert len(client.calls) == first_batch_calls  # the three batches left: no call


async def test_within_lets_a_batch_through_that_is_throttled_for_less_than_the_bound() -> None:
    client = ScriptedDynamo(unprocessed={"fan:u3": 4})
    result = await DynamoBatchWriter(
        client, TABLE, attempts=None, within=5, base_delay=0.001, max_delay=0.002
    ).put_items(items(30))
    assert result.written == 30 and not result.failed
