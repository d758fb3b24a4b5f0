"""Verification agent throughput beside the Python ceiling: a plain aiokafka consumer
reading and JSON-decoding the same topic in the same run."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from aiokafka import TopicPartition

from bench.plain_bench import plain_benchmark
from vfstream import kafka
from vfstream.dev.generator import GeneratorConfig, expected_counts, generate_run
from vfstream.dev.scenario import upload_run
from vfstream.dev.workers import WorkerProcess
from vfstream.domain.batches import decode_batch
from vfstream.settings import Settings
from vfstream.sources.s3.ingestor import ScoringFileIngestor
from vfstream.topics import ensure_topics, partition_count


async def plain_consumer_rate(settings: Settings, topic: str, expected: int) -> float:
    count = await partition_count(settings, topic)
    partitions = [TopicPartition(topic, p) for p in range(count)]
    consumer = kafka.consumer(
        settings,
        isolation_level="read_committed",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 << 20,
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen = 0
        started = time.monotonic()
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for messages in batches.values():
                for message in messages:
                    seen += len(decode_batch(message.value))
        return seen / (time.monotonic() - started)
    finally:
        await consumer.stop()


async def agent_rate(settings: Settings, expected: int, logs: Path) -> tuple[float, float]:
    """Records/s between 10% and 90% of the run, and seconds to settle all of it."""
    worker = WorkerProcess(settings, "bench-agent", logs)
    worker.start()
    try:
        await worker.wait_ready()
        started = time.monotonic()
        marks: dict[str, tuple[float, int]] = {}
        while True:
            _, body = await worker.get_json("/statuses")
            seen, now = body["recordsIn"], time.monotonic()
            if seen >= expected * 0.1 and "low" not in marks:
                marks["low"] = (now, seen)
            if seen >= expected * 0.9 and "high" not in marks:
                marks["high"] = (now, seen)
            if seen >= expected:
                break
            await asyncio.sleep(0.25)
        (t1, n1), (t2, n2) = marks["low"], marks["high"]
        return (n2 - n1) / max(t2 - t1, 1e-6), time.monotonic() - started
    finally:
        worker.stop()


AGENT_FANS = int(os.environ.get("VFSTREAM_BENCH_AGENT_FANS", "100000"))


def agent_benchmark(settings: Settings, work: Path, fans: int = AGENT_FANS) -> dict:
    """The verify agent, a plain consume+decode loop and a plain verify+tally loop (no
    framework, ``plain_bench``) over the same topic, one after another in one run."""
    asyncio.run(ensure_topics(settings))
    run = generate_run(GeneratorConfig(campaign_id="cagent", campaign_name="bench", fans=fans))
    truth = expected_counts([run])["cagent"]

    async def load() -> int:
        key = await upload_run(settings, run, work)
        summary = await ScoringFileIngestor(settings).ingest(settings.scoring_bucket, key)
        return summary.valid

    records = asyncio.run(load())
    plain = asyncio.run(plain_consumer_rate(settings, settings.score_records_topic, records))
    agent, settle = asyncio.run(agent_rate(settings, records, work / "logs"))
    verify, counts = plain_benchmark(settings, records, work)
    reached = dict(zip(("verified", "rejected", "selected"), counts["cagent"], strict=True))
    assert reached == truth, (reached, truth)
    return {
        "agent_records": records,
        "agent_records_per_s": round(agent),
        "plain_consumer_records_per_s": round(plain),
        "agent_to_plain_ratio": round(agent / plain, 3),
        "plain_verify_records_per_s": round(verify),
        "agent_to_plain_verify_ratio": round(agent / verify, 3),
        "agent_settle_seconds": round(settle, 1),
    }
