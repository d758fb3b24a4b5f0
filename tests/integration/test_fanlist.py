"""Fanlist files against the real broker and moto (SPEC 2.2, 4): the counts, the DynamoDB
items, the campaign-data stream records, the dead letters and every file-level refusal.

Each test writes to a Kinesis stream of its own and to campaign ids of its own, so what it
reads back is only what it wrote.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.kinesis import create_stream, read_stream, unique_stream
from vfstream.aws import aws_client
from vfstream.dev.workers import WorkerProcess, run_cli
from vfstream.kafka.reads import read_committed
from vfstream.settings import Settings
from vfstream.sources.s3.fanlist_direct import FanlistIngestor, FanlistSummary

pytestmark = pytest.mark.integration

HEADER = "memberId,email,globalUserId,score"
STAMP = "1792497600000"


def campaign_id() -> str:
    return "fl" + uuid.uuid4().hex[:8]


def fanlist_key(campaign: str, stamp: str = STAMP) -> str:
    return f"fanlist/scored/{campaign}/{stamp}.csv"


async def put_object(settings: Settings, key: str, body: bytes) -> None:
    async with aws_client(settings, "s3") as s3:
        await s3.put_object(Bucket=settings.scoring_bucket, Key=key, Body=body)


async def ingest(settings: Settings, key: str, lines: list[str], **options: Any) -> FanlistSummary:
    await put_object(settings, key, ("\n".join(lines) + "\n").encode())
    return await FanlistIngestor(settings, **options).ingest(settings.scoring_bucket, key)


@pytest.fixture
async def fanlist_settings(isolated: Settings) -> AsyncIterator[Settings]:
    """Isolated settings with a campaign-data stream (two shards) of this test's own."""
    stream = unique_stream("vf-campaign-data")
    await create_stream(isolated, stream)
    try:
        yield isolated.model_copy(update={"campaign_data_stream": stream})
    finally:
        async with aws_client(isolated, "kinesis") as kinesis:
            await kinesis.delete_stream(StreamName=stream, EnforceConsumerDeletion=True)


async def stream_records(settings: Settings) -> list[tuple[str, dict[str, Any]]]:
    """Every record of the campaign-data stream, all shards: (partition key, JSON body)."""
    found = await read_stream(settings, settings.campaign_data_stream)
    return [(key, orjson.loads(data)) for key, data in found]


async def campaign_items(settings: Settings, campaign: str) -> dict[str, dict[str, Any]]:
    """The demand table's items of one campaign, by PK, each read back with a key query."""
    sk = f"fanlist:{campaign}"
    async with aws_client(settings, "dynamodb") as dynamo:
        pks: list[str] = []
        pages = dynamo.get_paginator("scan").paginate(
            TableName=settings.demand_table,
            FilterExpression="SK = :sk",
            ExpressionAttributeValues={":sk": {"S": sk}},
            ProjectionExpression="PK",
        )
        async for page in pages:
            pks += [item["PK"]["S"] for item in page["Items"]]
        items: dict[str, dict[str, Any]] = {}
        for pk in pks:
            answer = await dynamo.query(
                TableName=settings.demand_table,
                KeyConditionExpression="PK = :pk AND SK = :sk",
                ExpressionAttributeValues={":pk": {"S": pk}, ":sk": {"S": sk}},
            )
            (item,) = answer["Items"]
            items[pk] = item
    return items


async def dead_letters(settings: Settings, object_key: str) -> list[dict[str, Any]]:
    letters = [
        orjson.loads(m.value) for m in await read_committed(settings, settings.dead_letter_topic)
    ]
    return [letter for letter in letters if letter.get("key") == object_key]


async def eventually(
    probe: Callable[[], Awaitable[Any]], accept: Callable[[Any], bool], timeout: float = 60.0
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        seen = await probe()
        if accept(seen):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout:.0f}s; last seen {seen!r}")
        await asyncio.sleep(0.5)


MIXED_FILE = [
    HEADER,
    "m1,m1@example.com,g1,0.40",  # 2: m1 again below with a higher score
    "m1,m1@example.com,g1,0.90",  # 3: kept, stored as fan:g1
    ",Ana@Example.com,,0.30",  # 4: the same email as line 5 once normalised
    ",  ana@example.COM ,,0.80",  # 5: kept, stored as email:ana@example.com
    "m2,not-an-email,,0.50",  # 6: kept as sid:m2; the malformed email is left out
    ",bob@@example.com,,0.70",  # 7: invalid: malformed email and no memberId
    ",,g9,0.60",  # 8: invalid: neither memberId nor email
    "m3,,,",  # 9: invalid: no score
    "m4,,,abc",  # 10: invalid: score is not a number
    "m5,M5@example.com,,0.20",  # 11: kept, stored as sid:m5
    "m5,m5@example.com,,0.20",  # 12: the same score again: the first row stays
]


async def test_mixed_file_gives_the_spec_counts_items_records_and_dead_letters(
    fanlist_settings: Settings,
) -> None:
    settings = fanlist_settings
    campaign = campaign_id()
    key = fanlist_key(campaign)
    summary = await ingest(settings, key, MIXED_FILE)

    assert summary.status == "stored", summary.error
    assert summary.as_dict()["input"] == {"in": 11, "invalid": 4, "duplicate": 3, "valid": 4}
    assert summary.as_dict()["dynamo"] == {"in": 4, "failed": 0, "out": 4}
    assert summary.as_dict()["stream"] == {"in": 4, "failed": 0, "out": 4}
    assert summary.campaignId == campaign and summary.etag and summary.correlation

    items = await campaign_items(settings, campaign)
    assert set(items) == {"fan:g1", "email:ana@example.com", "sid:m2", "sid:m5"}
    fan = items["fan:g1"]
    assert fan["SK"] == {"S": f"fanlist:{campaign}"}
    assert fan["memberId"] == {"S": "m1"} and fan["globalUserId"] == {"S": "g1"}
    assert fan["email"] == {"S": "m1@example.com"}
    assert fan["score"] == {"N": "0.9"} and fan["campaignId"] == {"S": campaign}
    assert set(fan["date"]["M"]) == {"updated", "scored"}
    assert fan["date"]["M"]["scored"] == {"S": "2026-10-20T12:00:00.000Z"}
    assert items["email:ana@example.com"]["score"] == {"N": "0.8"}
    assert "memberId" not in items["email:ana@example.com"]
    assert "email" not in items["sid:m2"]
    assert items["sid:m5"]["email"] == {"S": "m5@example.com"}

    records = await stream_records(settings)
    by_partition_key = dict(records)
    assert len(records) == 4
    assert set(by_partition_key) == {"g1", "ana@example.com", "m2", "m5"}
    assert by_partition_key["g1"] == {
        "memberId": "m1",
        "email": "m1@example.com",
        "globalUserId": "g1",
        "score": 0.9,
        "campaignId": campaign,
        "__meta": {
            "correlation": summary.correlation,
            "date": fan["date"]["M"]["updated"]["S"],
        },
    }
    assert {body["__meta"]["correlation"] for _, body in records} == {summary.correlation}

    letters = {letter["line"]: letter for letter in await dead_letters(settings, key)}
    assert set(letters) == {7, 8, 9, 10}
    assert all(letter["kind"] == "fanlist-row" for letter in letters.values())
    assert all(letter["campaignId"] == campaign for letter in letters.values())
    assert all(letter["etag"] == summary.etag for letter in letters.values())
    assert letters[7]["raw"] == ",bob@@example.com,,0.70"
    assert letters[7]["reasons"] == [
        "email: 'bob@@example.com' is not an email address (it needs exactly one @), "
        "and there is no memberId"
    ]
    assert letters[8]["reasons"] == [
        "memberId, email: both are missing or empty; one must identify the fan"
    ]
    assert letters[9]["reasons"] == ["score: required value is missing or empty"]
    assert letters[10]["reasons"][0].startswith("score: Input should be a valid number")


async def test_many_fans_are_written_in_several_calls_and_spread_over_shards(
    fanlist_settings: Settings,
) -> None:
    settings = fanlist_settings
    campaign = campaign_id()
    fans = 130
    lines = [HEADER]
    for i in range(fans):
        lines.append(f"m{i},fan{i}@example.com,g{i},0.{i % 10}1")
        lines.append(f"m{i},fan{i}@example.com,g{i},0.05")  # each fan once more, lower
    summary = await ingest(settings, fanlist_key(campaign), lines)

    assert summary.counts.as_dict() == {
        "input": {"in": 2 * fans, "invalid": 0, "duplicate": fans, "valid": fans},
        "dynamo": {"in": fans, "failed": 0, "out": fans},
        "stream": {"in": fans, "failed": 0, "out": fans},
    }
    items = await campaign_items(settings, campaign)
    assert set(items) == {f"fan:g{i}" for i in range(fans)}
    assert items["fan:g17"]["score"] == {"N": "0.71"}
    records = await stream_records(settings)
    assert sorted(key for key, _ in records) == sorted(f"g{i}" for i in range(fans))


async def test_the_same_file_again_rewrites_the_same_items_under_the_same_correlation(
    fanlist_settings: Settings,
) -> None:
    settings = fanlist_settings
    campaign = campaign_id()
    key = fanlist_key(campaign)
    lines = [HEADER, "m1,,,0.5", "m2,,,0.6"]
    first = await ingest(settings, key, lines)
    again = await FanlistIngestor(settings).ingest(settings.scoring_bucket, key)
    assert first.status == again.status == "stored"
    assert first.correlation == again.correlation
    assert set(await campaign_items(settings, campaign)) == {"sid:m1", "sid:m2"}
    assert len(await stream_records(settings)) == 4


@pytest.mark.parametrize(
    "key_for",
    [
        lambda campaign: f"fanlist/scored/{campaign}/not-a-time.csv",
        lambda campaign: f"fanlist/{campaign}/{STAMP}.csv",
        lambda campaign: f"fanlist/scored/{campaign}/{STAMP}.csv.gz",
        lambda campaign: f"fanlists/scored/{campaign}/{STAMP}.csv",
    ],
)
async def test_a_key_that_does_not_match_fails_and_writes_nothing(
    fanlist_settings: Settings, key_for: Callable[[str], str]
) -> None:
    settings = fanlist_settings
    campaign = campaign_id()
    key = key_for(campaign)
    summary = await ingest(settings, key, [HEADER, "m1,,,0.5", ",,,0.1"])

    assert summary.status == "failed"
    assert summary.error is not None and key in summary.error
    assert "fanlist/scored/<campaignId>/<timestamp>.csv" in summary.error or (
        "invalid timestamp" in summary.error
    )
    assert summary.counts.as_dict()["input"] == {"in": 0, "invalid": 0, "duplicate": 0, "valid": 0}
    assert await campaign_items(settings, campaign) == {}
    assert await stream_records(settings) == []
    assert await dead_letters(settings, key) == []


async def test_a_missing_object_fails_and_writes_nothing(fanlist_settings: Settings) -> None:
    key = fanlist_key(campaign_id())
    summary = await FanlistIngestor(fanlist_settings).ingest(fanlist_settings.scoring_bucket, key)
    assert summary.status == "failed" and summary.error is not None
    assert "does not exist" in summary.error
    assert await stream_records(fanlist_settings) == []


async def test_a_header_without_score_fails_the_file_with_one_file_dead_letter(
    fanlist_settings: Settings,
) -> None:
    settings = fanlist_settings
    campaign = campaign_id()
    key = fanlist_key(campaign)
    summary = await ingest(settings, key, ["memberId,email", "m1,a@b.c", ",bad"])

    assert summary.status == "failed"
    assert summary.error == "the header lacks required columns: score"
    assert await campaign_items(settings, campaign) == {}
    assert await stream_records(settings) == []
    letters = await dead_letters(settings, key)
    assert [(letter["kind"], letter["reasons"]) for letter in letters] == [
        ("fanlist-file", ["the header lacks required columns: score"])
    ]


async def test_items_the_table_refuses_are_counted_failed_and_not_streamed(
    fanlist_settings: Settings,
) -> None:
    settings = fanlist_settings.model_copy(update={"demand_table": "vf-no-such-table"})
    summary = await ingest(settings, fanlist_key(campaign_id()), [HEADER, "m1,,,0.5", "m2,,,0.6"])

    assert summary.status == "incomplete"
    assert summary.counts.as_dict()["dynamo"] == {"in": 2, "failed": 2, "out": 0}
    assert summary.counts.as_dict()["stream"] == {"in": 0, "failed": 0, "out": 0}
    assert await stream_records(settings) == []


async def test_records_the_stream_refuses_are_counted_failed(fanlist_settings: Settings) -> None:
    settings = fanlist_settings.model_copy(update={"campaign_data_stream": "vf-no-such-stream"})
    campaign = campaign_id()
    summary = await ingest(
        settings, fanlist_key(campaign), [HEADER, "m1,,,0.5", "m2,,,0.6"], stream_attempts=2
    )

    assert summary.status == "incomplete"
    assert summary.counts.as_dict()["dynamo"] == {"in": 2, "failed": 0, "out": 2}
    assert summary.counts.as_dict()["stream"] == {"in": 2, "failed": 2, "out": 0}
    assert set(await campaign_items(settings, campaign)) == {"sid:m1", "sid:m2"}


async def test_cli_prints_the_json_summary_and_fails_a_bad_key(fanlist_settings: Settings) -> None:
    settings = fanlist_settings
    campaign = campaign_id()
    key = fanlist_key(campaign)
    await put_object(settings, key, f"{HEADER}\nm1,,,0.5\nm1,,,0.7\n,,,1\n".encode())

    done = run_cli(settings, "fanlist", f"s3://{settings.scoring_bucket}/{key}", timeout=120)
    assert done.returncode == 0, done.stderr
    summary = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert summary["status"] == "stored" and summary["campaignId"] == campaign
    assert {name: summary[name] for name in ("input", "dynamo", "stream")} == {
        "input": {"in": 3, "invalid": 1, "duplicate": 1, "valid": 1},
        "dynamo": {"in": 1, "failed": 0, "out": 1},
        "stream": {"in": 1, "failed": 0, "out": 1},
    }

    bad_key = f"fanlist/scored/{campaign}.csv"
    await put_object(settings, bad_key, f"{HEADER}\nm1,,,0.5\n".encode())
    refused = run_cli(settings, "fanlist", f"s3://{settings.scoring_bucket}/{bad_key}")
    assert refused.returncode == 1
    assert "does not match fanlist/scored/<campaignId>/<timestamp>.csv" in refused.stderr
    assert orjson.loads(refused.stdout.strip().splitlines()[-1])["status"] == "failed"


async def test_a_fanlist_notification_is_routed_to_fanlist_ingestion_in_the_worker(
    fanlist_settings: Settings, tmp_path: Path
) -> None:
    queue = f"vf-fanlist-events-{uuid.uuid4().hex[:8]}"
    settings = fanlist_settings.model_copy(
        update={"notification_queue": queue, "listen_for_notifications": True}
    )
    async with aws_client(settings, "sqs") as sqs:
        url = (await sqs.create_queue(QueueName=queue))["QueueUrl"]
    campaign = campaign_id()
    key = fanlist_key(campaign)
    await put_object(settings, key, f"{HEADER}\nm1,,g1,0.5\n".encode())
    notification = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": settings.scoring_bucket},
                    "object": {"key": key.replace("/", "%2F")},
                },
            }
        ]
    }
    worker = WorkerProcess(settings, "fanlist-listener", tmp_path / "logs")
    worker.start()
    try:
        await worker.wait_ready()
        async with aws_client(settings, "sqs") as sqs:
            await sqs.send_message(QueueUrl=url, MessageBody=orjson.dumps(notification).decode())
        items = await eventually(lambda: campaign_items(settings, campaign), bool)
        assert set(items) == {"fan:g1"}
        records = await eventually(lambda: stream_records(settings), bool)
        assert [partition_key for partition_key, _ in records] == ["g1"]
    finally:
        worker.stop()
        async with aws_client(settings, "sqs") as sqs:
            await sqs.delete_queue(QueueUrl=url)
