"""The Kinesis forwarder against moto's Kinesis over HTTP: everything put arrives."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from tests.support.kinesis import create_stream, read_stream, unique_stream
from vfstream.aws import aws_client
from vfstream.dev.generator import GeneratorConfig, expected_counts, generate_run
from vfstream.dev.scenario import upload_run, wait_for_counts
from vfstream.dev.workers import WorkerProcess
from vfstream.settings import Settings
from vfstream.sinks.clients.kinesis import KinesisForwarder, KinesisRecord
from vfstream.sources.s3.ingestor import ScoringFileIngestor

pytestmark = pytest.mark.integration


async def test_every_record_put_in_batches_arrives_with_its_partition_key(stack: Settings) -> None:
    stream = unique_stream("vf-scores")
    await create_stream(stack, stream)
    async with aws_client(stack, "kinesis") as kinesis:
        records = [KinesisRecord(f"u{i}", f'{{"n": {i}}}'.encode()) for i in range(1200)]
        result = await KinesisForwarder(kinesis, stream).forward(records)
        assert result.sent == 1200 and not result.failed
    stored = await read_stream(stack, stream)
    assert sorted(stored) == sorted((r.partition_key, r.data) for r in records)


async def test_a_worker_forwards_every_accepted_score_record_to_the_scores_stream(
    isolated: Settings, tmp_path: Path
) -> None:
    stream = unique_stream("vf-scores")
    settings = isolated.model_copy(update={"scores_stream": stream, "forward_to_kinesis": True})
    await create_stream(settings, stream)
    run = generate_run(GeneratorConfig(campaign_id="ckin", campaign_name="T", fans=500))
    worker = WorkerProcess(settings, "kinesis", tmp_path / "logs")
    worker.start()
    try:
        await worker.wait_ready()
        key = await upload_run(settings, run, tmp_path)
        summary = await ScoringFileIngestor(settings).ingest(settings.scoring_bucket, key)
        await wait_for_counts(worker, "ckin", expected_counts([run])["ckin"], timeout=180)

        async def arrived() -> list[tuple[str, bytes]]:
            return await read_stream(settings, stream)

        deadline = asyncio.get_running_loop().time() + 120
        records = await arrived()
        while len(records) < summary.valid and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(1)
            records = await arrived()
    finally:
        worker.stop()
    # At least once: every valid row of the file, keyed by its fan.
    ids = {orjson.loads(data)["id"] for _, data in records}
    assert len(ids) == summary.valid
    assert all(orjson.loads(data)["globalUserId"] == pk for pk, data in records)
