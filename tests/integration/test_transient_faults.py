"""Transient S3, DynamoDB and SQS faults heal themselves (issue #21 items 1, 2 and 4; SPEC 2
"Transient is not invalid"), on the real broker and moto behind a TCP proxy that resets,
cuts and slows the AWS endpoint:

- a read S3 resets mid-body resumes where it stopped (or the file starts again when S3 stays
  away), from the CLI and from a worker's SQS listener: the file is ingested once, exactly,
  never dead-lettered; past the retry time the CLI says "S3 unavailable" (exit 4);
- a fanlist DynamoDB throttles (items left unprocessed) past the ingest's retry time is
  stored whole once DynamoDB takes writes again, each stream record sent once, and its
  notification deleted only then;
- a file slower than the queue's visibility timeout is ingested once by one of two
  listeners: its notification stays invisible while it is worked on, so no other listener
  takes it and fences the ingest;
- the dev stack's queue has a redrive policy to its dead-letter queue, where a message that
  always fails for an unknown reason ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.awsfront import AwsFront
from tests.support.kafka import read_committed, score_records
from tests.support.kinesis import create_stream, read_stream, unique_stream
from tests.support.tcpproxy import TcpProxy
from tests.support.waiting import eventually
from vfstream.aws import aws_client
from vfstream.dev.generator import GeneratorConfig, ScoringRun, expected_counts, generate_run
from vfstream.dev.provision import dead_letter_queue, provision_queue
from vfstream.dev.scenario import upload_run, wait_for_counts
from vfstream.dev.workers import WorkerProcess, run_cli
from vfstream.metrics import FENCED_INGESTS
from vfstream.settings import Settings
from vfstream.sources.s3.faults import S3Unavailable
from vfstream.sources.s3.ingestor import IngestSummary
from vfstream.sources.s3.notifications import NotificationListener, listen_for_files

pytestmark = pytest.mark.integration

# An answer past this many bytes is reset: only a scoring file's GET carries that much.
RESET_AT = 200_000


@pytest.fixture
async def proxy(stack: Settings) -> AsyncIterator[TcpProxy]:
    aws = TcpProxy(stack.aws_port)
    await aws.start()
    try:
        yield aws
    finally:
        await aws.close()


def behind(settings: Settings, proxy: TcpProxy, **more: Any) -> Settings:
    """``settings`` reaching AWS through the proxy."""
    return settings.model_copy(update={"aws_endpoint_url": proxy.url, **more})


def big_run(campaign: str, fans: int = 8000) -> ScoringRun:
    # 8,000 fans: ~18,000 rows, a 570 KB gzip (3 MB of CSV).
    return generate_run(GeneratorConfig(campaign_id=campaign, campaign_name="T", fans=fans))


def campaign_id() -> str:
    return "c" + uuid.uuid4().hex[:8]


async def records_of(settings: Settings, campaign: str) -> int:
    return sum(1 for r in await score_records(settings) if r.record["campaignId"] == campaign)


async def markers_of(settings: Settings, key: str) -> list[dict[str, Any]]:
    """Every committed "done" marker of the object (not only the latest: each run's)."""
    prefix = f"s3://{settings.scoring_bucket}/{key}@".encode()
    messages = await read_committed(settings, settings.ingested_files_topic)
    return [orjson.loads(m.value) for m in messages if m.key and m.key.startswith(prefix)]


async def file_letters(settings: Settings, key: str) -> list[dict[str, Any]]:
    letters = [
        orjson.loads(m.value) for m in await read_committed(settings, settings.dead_letter_topic)
    ]
    return [x for x in letters if x.get("key") == key and x.get("kind") == "scoring-file"]


async def assert_ingested_once(settings: Settings, run: ScoringRun, key: str) -> None:
    assert await records_of(settings, run.campaign_id) == run.expected_valid_rows
    markers = await markers_of(settings, key)
    assert len(markers) == 1, markers
    assert (markers[0]["in"], markers[0]["valid"], markers[0]["invalid"]) == (
        run.expected_rows,
        run.expected_valid_rows,
        run.expected_invalid_rows,
    )
    assert await file_letters(settings, key) == []


async def cli_ingest(settings: Settings, key: str) -> tuple[int, dict[str, Any] | None, str]:
    url = f"s3://{settings.scoring_bucket}/{key}"
    done = await asyncio.to_thread(run_cli, settings, "ingest", "--no-progress", url, timeout=300)
    lines = done.stdout.strip().splitlines()
    return done.returncode, orjson.loads(lines[-1]) if lines else None, done.stderr


def summary_counts(summary: dict[str, Any] | None) -> tuple[Any, ...]:
    assert summary is not None
    return tuple(summary[name] for name in ("status", "in", "valid", "invalid", "produced"))


# -- SQS helpers -------------------------------------------------------------------------


async def make_queue(settings: Settings, **attributes: str) -> str:
    name = f"vf-faults-{uuid.uuid4().hex[:8]}"
    async with aws_client(settings, "sqs") as sqs:
        await sqs.create_queue(QueueName=name, Attributes=attributes)
    return name


async def delete_queue(settings: Settings, name: str) -> None:
    async with aws_client(settings, "sqs") as sqs:
        url = (await sqs.get_queue_url(QueueName=name))["QueueUrl"]
        await sqs.delete_queue(QueueUrl=url)


async def notify(settings: Settings, queue: str, key: str) -> None:
    body = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": settings.scoring_bucket}, "object": {"key": key}},
            }
        ]
    }
    async with aws_client(settings, "sqs") as sqs:
        url = (await sqs.get_queue_url(QueueName=queue))["QueueUrl"]
        await sqs.send_message(QueueUrl=url, MessageBody=orjson.dumps(body).decode())


async def messages_in(settings: Settings, queue: str) -> int:
    """Messages of the queue, visible or in flight (read from moto, not through the proxy)."""
    async with aws_client(settings, "sqs") as sqs:
        url = (await sqs.get_queue_url(QueueName=queue))["QueueUrl"]
        attrs = (
            await sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )
        )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


# -- 1. S3 resets mid-body -----------------------------------------------------------------


async def test_cli_ingest_resumes_where_s3_reset_the_read(
    isolated: Settings, proxy: TcpProxy, tmp_path: Path
) -> None:
    run = big_run(campaign_id())
    key = await upload_run(isolated, run, tmp_path, gzip=True)
    proxy.reset_after(RESET_AT)

    status, summary, stderr = await cli_ingest(behind(isolated, proxy), key)

    assert proxy.resets == 1
    assert status == 0, stderr
    assert summary_counts(summary) == (
        "ingested",
        run.expected_rows,
        run.expected_valid_rows,
        run.expected_invalid_rows,
        run.expected_valid_rows,
    )
    assert "resuming there" in stderr and "corrupt" not in stderr
    await assert_ingested_once(isolated, run, key)


async def test_cli_ingest_starts_the_file_again_while_s3_stays_away(
    isolated: Settings, proxy: TcpProxy, tmp_path: Path
) -> None:
    """S3 away longer than resuming waits: the transaction is aborted, and the file read
    again from its start once S3 answers; nothing of the aborted try is seen."""
    run = big_run(campaign_id())
    key = await upload_run(isolated, run, tmp_path, gzip=True)
    proxy.reset_after(RESET_AT, down_for=8)

    status, summary, stderr = await cli_ingest(behind(isolated, proxy, s3_resume_seconds=1), key)

    assert status == 0, stderr
    assert summary_counts(summary) == (
        "ingested",
        run.expected_rows,
        run.expected_valid_rows,
        run.expected_invalid_rows,
        run.expected_valid_rows,
    )
    assert "S3 unavailable while reading" in stderr and "starts again" in stderr
    await assert_ingested_once(isolated, run, key)


async def test_cli_ingest_says_s3_unavailable_after_the_retry_time_and_refuses_nothing(
    isolated: Settings, proxy: TcpProxy, tmp_path: Path
) -> None:
    run = big_run(campaign_id(), fans=4000)
    key = await upload_run(isolated, run, tmp_path, gzip=True)
    proxy.reset_after(RESET_AT, down_for=120)

    status, summary, stderr = await cli_ingest(
        behind(isolated, proxy, s3_resume_seconds=1, s3_retry_seconds=4), key
    )

    assert status == 4, stderr
    assert summary is None
    assert "S3 unavailable" in stderr and "corrupt" not in stderr
    assert await records_of(isolated, run.campaign_id) == 0
    assert await markers_of(isolated, key) == []
    assert await file_letters(isolated, key) == []


async def test_a_worker_ingests_a_file_s3_reset_mid_body_once_and_only_then_deletes_its_message(
    isolated: Settings, proxy: TcpProxy, tmp_path: Path
) -> None:
    # A production-like visibility timeout: a notification let go comes back only after 2
    # minutes (before, the reset failed the try and the file waited for that).
    queue = await make_queue(isolated, VisibilityTimeout="120")
    settings = behind(isolated, proxy, notification_queue=queue, listen_for_notifications=True)
    run = big_run(campaign_id())
    key = await upload_run(isolated, run, tmp_path, gzip=True)
    proxy.reset_after(RESET_AT)
    worker = WorkerProcess(settings, "s3-reset", tmp_path / "logs")
    worker.start()
    try:
        await worker.wait_ready()
        await notify(isolated, queue, key)
        truth = expected_counts([run])[run.campaign_id]
        await wait_for_counts(worker, run.campaign_id, truth, timeout=100)
        await eventually(lambda: messages_in(isolated, queue), lambda n: n == 0, timeout=15)
    finally:
        worker.stop()
        await delete_queue(isolated, queue)
    assert proxy.resets == 1
    await assert_ingested_once(isolated, run, key)
    log = worker.log_path.read_text()
    assert "resuming there" in log and "corrupt" not in log


# -- 2. DynamoDB throttling a fanlist's writes ----------------------------------------------

FANLIST_HEADER = "memberId,email,globalUserId,score"


async def fanlist_pks(settings: Settings, campaign: str) -> set[str]:
    """The PKs of the campaign's fanlist items (read from moto, not through the proxy)."""
    found: set[str] = set()
    async with aws_client(settings, "dynamodb") as dynamo:
        pages = dynamo.get_paginator("scan").paginate(
            TableName=settings.demand_table,
            FilterExpression="SK = :sk",
            ExpressionAttributeValues={":sk": {"S": f"fanlist:{campaign}"}},
            ProjectionExpression="PK",
        )
        async for page in pages:
            found |= {item["PK"]["S"] for item in page["Items"]}
    return found


@pytest.fixture
async def front(stack: Settings) -> AsyncIterator[AwsFront]:
    aws = AwsFront(str(stack.aws_endpoint_url))
    await aws.start()
    try:
        yield aws
    finally:
        await aws.close()


async def test_a_fanlist_dynamodb_throttles_is_stored_whole_and_its_message_deleted_only_then(
    isolated: Settings, front: AwsFront, tmp_path: Path
) -> None:
    """DynamoDB leaves every item of its calls unprocessed for a while (throttling), past the
    ingest's retry time: the run ends incomplete, the listener keeps the message and runs
    the file again in place; once DynamoDB takes writes, every item is stored, each stream
    record sent once (a later run streams only what an earlier one did not), and only then
    is the message deleted. Before, the first incomplete run deleted the message."""
    fans = 5000
    stream = unique_stream("vf-campaign-data")
    await create_stream(isolated, stream)
    queue = await make_queue(isolated, VisibilityTimeout="5")
    settings = isolated.model_copy(
        update={
            "aws_endpoint_url": front.url,
            "campaign_data_stream": stream,
            "notification_queue": queue,
            "listen_for_notifications": True,
            "fanlist_retry_seconds": 2,
        }
    )
    campaign = "fl" + uuid.uuid4().hex[:8]
    key = f"fanlist/scored/{campaign}/1792497600000.csv"
    lines = [FANLIST_HEADER, *(f"m{i},fan{i}@example.com,g{i},0.{i % 10}1" for i in range(fans))]
    async with aws_client(isolated, "s3") as s3:
        body = ("\n".join(lines) + "\n").encode()
        await s3.put_object(Bucket=isolated.scoring_bucket, Key=key, Body=body)
    front.throttle_after(40)  # 1,000 items stored, then DynamoDB throttles
    worker = WorkerProcess(settings, "fanlist-throttled", tmp_path / "logs")
    worker.start()
    try:
        await worker.wait_ready()
        await notify(isolated, queue, key)

        async def throttling() -> bool:
            return front.throttling

        await eventually(throttling, bool, timeout=120)
        await asyncio.sleep(12)  # several runs, each incomplete
        assert len(await fanlist_pks(isolated, campaign)) == 1000
        assert await messages_in(isolated, queue) == 1  # kept while items are missing
        front.stop_throttling()
        pks = await eventually(
            lambda: fanlist_pks(isolated, campaign),
            lambda found: len(found) == fans,
            timeout=180,
            interval=1,
        )
        assert pks == {f"fan:g{i}" for i in range(fans)}
        await eventually(lambda: messages_in(isolated, queue), lambda n: n == 0, timeout=60)
    finally:
        worker.stop()
        await delete_queue(isolated, queue)
    assert front.unprocessed > 0
    records = await read_stream(isolated, stream)
    keys = [partition_key for partition_key, _ in records]
    assert sorted(keys) == sorted(f"g{i}" for i in range(fans)), "each record streamed once"
    correlations = {orjson.loads(data)["__meta"]["correlation"] for _, data in records}
    assert len(correlations) == 1
    log = worker.log_path.read_text()
    assert "is not done yet" in log
    async with aws_client(isolated, "kinesis") as kinesis:
        await kinesis.delete_stream(StreamName=stream, EnforceConsumerDeletion=True)


# -- 4. Slower than the visibility timeout ---------------------------------------------------


async def test_a_file_slower_than_the_visibility_timeout_is_ingested_once_by_two_listeners(
    isolated: Settings, proxy: TcpProxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two listeners on a queue with a 5 s visibility timeout, a file that takes ~12 s to
    read: before, the second listener received the message after 5 s and fenced the first
    ingest, and so on, for ever; now the first keeps it invisible until it is done."""
    queue = await make_queue(isolated, VisibilityTimeout="5")
    settings = behind(isolated, proxy, notification_queue=queue)
    run = big_run(campaign_id(), fans=4000)  # 1.5 MB of CSV
    key = await upload_run(isolated, run, tmp_path)
    proxy.throttle(125_000)
    fenced_before = FENCED_INGESTS._value.get()
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="vfstream")
    listeners = [asyncio.create_task(listen_for_files(settings, stop.is_set)) for _ in range(2)]
    try:
        await notify(isolated, queue, key)
        await eventually(lambda: markers_of(isolated, key), bool, timeout=120, interval=1)
        await eventually(lambda: messages_in(isolated, queue), lambda n: n == 0, timeout=30)
        await asyncio.sleep(6)  # a second ingest, were one started, would show by now
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*listeners, return_exceptions=True), 60)
        await delete_queue(isolated, queue)
    assert FENCED_INGESTS._value.get() == fenced_before
    await assert_ingested_once(isolated, run, key)
    summaries = [r for r in caplog.records if r.getMessage().startswith("ingest summary")]
    assert len(summaries) == 1, [r.getMessage() for r in summaries]
    assert orjson.loads(summaries[0].getMessage().split(" ", 2)[2])["seconds"] > 8
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- The redrive policy ----------------------------------------------------------------------


async def test_the_dev_stack_gives_the_queue_a_redrive_policy_to_its_dead_letter_queue(
    stack: Settings,
) -> None:
    async with aws_client(stack, "sqs") as sqs:
        url = (await sqs.get_queue_url(QueueName=stack.notification_queue))["QueueUrl"]
        attrs = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
        policy = orjson.loads(attrs["Attributes"]["RedrivePolicy"])
        dlq = (await sqs.get_queue_url(QueueName=dead_letter_queue(stack.notification_queue)))[
            "QueueUrl"
        ]
        dlq_arn = (await sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
    assert policy["deadLetterTargetArn"] == dlq_arn
    assert int(policy["maxReceiveCount"]) == stack.notification_max_receive_count


async def provisioned_queue(settings: Settings, max_receives: int) -> Settings:
    """A queue of its own, provisioned as `vfstream dev up` does (dead-letter queue and
    redrive policy), with a 1 s visibility timeout so that a let-go message returns fast."""
    queue = f"vf-faults-{uuid.uuid4().hex[:8]}"
    settings = settings.model_copy(
        update={"notification_queue": queue, "notification_max_receive_count": max_receives}
    )
    async with aws_client(settings, "sqs") as sqs:
        await provision_queue(sqs, settings)
        url = (await sqs.get_queue_url(QueueName=queue))["QueueUrl"]
        await sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "1"})
    return settings


async def listen(settings: Settings, ingest: Any, until: Any, seconds: float = 30) -> None:
    """One listener (its renewals included) until ``until()`` holds or ``seconds`` pass."""
    async with aws_client(settings, "sqs") as sqs:
        listener = NotificationListener(settings, ingest, sqs)
        running = asyncio.create_task(listener.run(lambda: False))
        try:
            await eventually(until, bool, timeout=seconds, interval=0.5)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)


async def test_a_message_that_always_fails_for_an_unknown_reason_ends_in_the_dead_letter_queue(
    isolated: Settings,
) -> None:
    """A poison message (a bug fails it every time) is let go, returns, and after
    maxReceiveCount receives the queue's redrive policy moves it to <queue>-dlq."""
    settings = await provisioned_queue(isolated, max_receives=2)
    queue, dlq = settings.notification_queue, dead_letter_queue(settings.notification_queue)
    tries: list[str] = []

    async def buggy(bucket: str, key: str) -> Any:
        tries.append(key)
        raise TypeError("a bug")

    async def in_dead_letter_queue() -> bool:
        return await messages_in(isolated, dlq) == 1

    try:
        await notify(isolated, queue, "scrubbed/poison.csv")
        await listen(settings, buggy, in_dead_letter_queue)
        assert await messages_in(isolated, queue) == 0
        assert len(tries) == 2
    finally:
        await delete_queue(isolated, queue)
        await delete_queue(isolated, dlq)


async def test_a_transient_fault_is_retried_in_place_and_never_sends_the_message_away(
    isolated: Settings,
) -> None:
    """S3 (or the broker) away for longer than the visibility timeout, a redrive policy of
    two receives: the listener keeps the message invisible and tries the file again in
    place, so it is done once the service is back, never moved to the dead-letter queue.
    Before, each failure let the message return, and the second sent it away."""
    settings = await provisioned_queue(isolated, max_receives=2)
    queue, dlq = settings.notification_queue, dead_letter_queue(settings.notification_queue)
    tries: list[float] = []

    async def flaky(bucket: str, key: str) -> Any:
        tries.append(time.monotonic())
        if len(tries) < 4:
            raise S3Unavailable("S3 is away")
        return IngestSummary(bucket=bucket, key=key, status="ingested")

    async def done() -> bool:
        return len(tries) >= 4 and await messages_in(isolated, queue) == 0

    try:
        await notify(isolated, queue, "scrubbed/flaky.csv")
        await listen(settings, flaky, done, seconds=60)
        assert tries[-1] - tries[0] > 2  # well past the 1 s visibility timeout
        assert await messages_in(isolated, dlq) == 0
    finally:
        await delete_queue(isolated, queue)
        await delete_queue(isolated, dlq)
