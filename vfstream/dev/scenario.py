"""Steps shared by the demo, the integration tests and the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from vfstream.aws import aws_client
from vfstream.dev.generator import ScoringRun
from vfstream.dev.workers import WorkerProcess
from vfstream.settings import Settings


async def upload_run(
    settings: Settings, run: ScoringRun, work_dir: Path, *, gzip: bool = False
) -> str:
    """Write a generated run to disk (never whole in memory) and put it in the scoring bucket."""
    key = run.gz_object_key if gzip else run.object_key
    path = work_dir / key.rsplit("/", 1)[-1]
    work_dir.mkdir(parents=True, exist_ok=True)
    run.write(path, gzip=gzip)
    async with aws_client(settings, "s3") as s3:
        await s3.upload_file(str(path), settings.scoring_bucket, key)
    path.unlink()
    return key


async def wait_for_counts(
    worker: WorkerProcess,
    campaign_id: str,
    expected: dict[str, int],
    timeout: float = 300.0,
    interval: float = 0.5,
) -> tuple[dict[str, Any], float]:
    """Poll the counts view until it shows ``expected``; returns the answer and seconds taken."""
    import asyncio

    started = time.monotonic()
    last: Any = None
    while time.monotonic() - started < timeout:
        try:
            path = f"/campaigns/{quote(campaign_id, safe='')}/counts"
            status, body = await worker.get_json(path)
        except Exception as exc:  # the worker may be restarting
            status, body = 0, repr(exc)
        last = body
        if status == 200 and all(body.get(name) == value for name, value in expected.items()):
            return body, time.monotonic() - started
        await asyncio.sleep(interval)
    raise TimeoutError(
        f"counts of {campaign_id} did not reach {expected} in {timeout:.0f}s; last: {last}"
    )


async def wait_for_json(
    worker: WorkerProcess,
    path: str,
    accept: Callable[[Any], bool],
    timeout: float = 120.0,
    interval: float = 0.5,
) -> Any:
    """Poll a worker view until its JSON answer is accepted; returns that answer."""
    import asyncio

    started = time.monotonic()
    last: Any = None
    while time.monotonic() - started < timeout:
        try:
            status, body = await worker.get_json(path)
        except Exception as exc:  # the worker may be restarting
            status, body = 0, repr(exc)
        last = body
        if status == 200 and accept(body):
            return body
        await asyncio.sleep(interval)
    raise TimeoutError(f"{path} did not become ready in {timeout:.0f}s; last: {last}")


async def demand_item(settings: Settings, pk: str, sk: str) -> dict[str, Any] | None:
    """One item of the DynamoDB demand table as plain values, or None."""
    from boto3.dynamodb.types import TypeDeserializer

    async with aws_client(settings, "dynamodb") as dynamo:
        answer = await dynamo.get_item(
            TableName=settings.demand_table, Key={"PK": {"S": pk}, "SK": {"S": sk}}
        )
    item = answer.get("Item")
    if not item:
        return None
    plain = TypeDeserializer()
    return {name: plain.deserialize(value) for name, value in item.items()}
