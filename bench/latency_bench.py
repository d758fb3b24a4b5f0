"""Latency from produce to counts updated, at steady rates (issue #7: p99 <= 250 ms at
2,000 records/s; ``VFSTREAM_BENCH_LATENCY_RATES``, default 2000,500).

Every record is a new fan of one campaign with ``isVerified`` true, so record ``i`` has been
counted once the campaign's ``verified`` reaches ``i + 1``. A poller reads the counts view
every 20 ms; a record's latency is the first poll that shows it minus the moment it was
produced (so the figures include up to one poll interval).
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import latency_figures, watch_counts
from vfstream import kafka
from vfstream.dev.workers import WorkerProcess
from vfstream.domain.batches import BatchBuilder
from vfstream.domain.keys import partition_for
from vfstream.domain.records import ScoreRecord
from vfstream.settings import Settings
from vfstream.topics import ensure_topics

# The target's rate first, then a lower one for comparison.
RATES = tuple(
    int(rate) for rate in os.environ.get("VFSTREAM_BENCH_LATENCY_RATES", "2000,500").split(",")
)
SECONDS = int(os.environ.get("VFSTREAM_BENCH_LATENCY_SECONDS", "30"))


def _record(campaign: str, number: int) -> ScoreRecord:
    gid = f"{number:010x}"
    return ScoreRecord(
        campaignId=campaign,
        globalUserId=gid,
        id=f"{gid}000",
        rank=0,
        eventId="ev10",
        score=0.5,
        isVerified=True,
        scoredAt=datetime(2026, 1, 1, tzinfo=UTC),
    )


async def _measure(settings: Settings, work: Path, rate: int, seconds: int) -> dict[str, object]:
    await ensure_topics(settings)
    campaign = f"clat{rate}"
    total = rate * seconds
    worker = WorkerProcess(settings, f"latency-{rate}", work / "logs")
    worker.start()
    produced_at: list[float] = []
    seen: list[tuple[float, int]] = []
    done = asyncio.Event()

    try:
        await worker.wait_ready()
        producer = kafka.producer(settings, linger_ms=0)
        await producer.start()
        poller = asyncio.create_task(watch_counts(worker, campaign, total, seen, done))
        try:
            tick = 0.01
            per_tick = max(1, round(rate * tick))
            started = time.monotonic()
            number = 0
            partitions = settings.topic_partitions
            while number < total:
                # Each tick's records as small score batches, one per table partition.
                batches = BatchBuilder()
                for _ in range(min(per_tick, total - number)):
                    record = _record(campaign, number)
                    batches.add(partition_for(record.key.encode(), partitions), record.to_json())
                    number += 1
                for partition, batch in batches.drain():
                    await producer.send(settings.score_records_topic, batch, partition=partition)
                produced_at.extend([time.monotonic()] * (number - len(produced_at)))
                next_tick = started + (number / per_tick) * tick
                await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            await producer.flush()
            await asyncio.wait_for(done.wait(), timeout=max(600, seconds * 20))
        finally:
            done.set()
            await poller
            await producer.stop()
    finally:
        worker.stop()
    return {
        **latency_figures(f"latency_{rate}_per_s", produced_at, seen),
        f"latency_{rate}_per_s_records": total,
    }


def latency_benchmark(settings: Settings, work: Path, rate: int) -> dict:
    return asyncio.run(_measure(settings, work / f"rate-{rate}", rate, SECONDS))
