"""An idle worker writes nothing (issue #21 item 5): once a file has settled, re-announced
snapshots that change nothing neither rewrite the campaign counts nor reach the mirror."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from tests.support.aws import put_object
from tests.support.rows import csv_file, scoring_key, scoring_row
from vfstream import kafka
from vfstream.dev.scenario import wait_for_counts
from vfstream.dev.workers import WorkerProcess
from vfstream.settings import Settings
from vfstream.sources.s3.ingestor import ScoringFileIngestor
from vfstream.stream.layout import changelog_topic

pytestmark = pytest.mark.integration


async def changelog_end(settings: Settings, table: str) -> int:
    topic = changelog_topic(settings, table)
    reader = kafka.consumer(settings)
    await reader.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        return sum((await reader.end_offsets(partitions)).values())
    finally:
        await reader.stop()


async def test_a_settled_campaign_is_not_rewritten_while_the_worker_idles(
    isolated: Settings, worker: WorkerProcess
) -> None:
    campaigns = [f"cidle{n}" for n in range(20)]
    for name in campaigns:
        body = csv_file(scoring_row(name, "u1"), scoring_row(name, "u2", isVerified="no"))
        await put_object(isolated, scoring_key(name), body)
        summary = await ScoringFileIngestor(isolated).ingest(
            isolated.scoring_bucket, scoring_key(name)
        )
        assert summary.status == "ingested"
    for name in campaigns:
        await wait_for_counts(worker, name, {"verified": 1, "rejected": 1}, timeout=90)
    await asyncio.sleep(6)  # the run progress and the last flushes

    before = await changelog_end(isolated, "campaign-counts")
    await asyncio.sleep(16)  # three re-announcement periods (5 s each)
    after = await changelog_end(isolated, "campaign-counts")

    assert after == before, f"{after - before} campaign-counts rewrites while idle"
