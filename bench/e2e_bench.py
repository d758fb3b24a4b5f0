"""End to end: one scoring file from S3 upload to settled counts, with 1 and with 3 workers.

Issue #7's target is 1M rows settled in <= 60 s; ``VFSTREAM_BENCH_E2E_FANS`` scales it
(450,000 fans are about 1M rows).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from vfstream.dev.generator import GeneratorConfig, expected_counts, generate_run
from vfstream.dev.scenario import upload_run, wait_for_counts
from vfstream.dev.stack import free_port
from vfstream.dev.workers import WorkerProcess
from vfstream.settings import Settings
from vfstream.sources.s3.ingestor import ScoringFileIngestor
from vfstream.topics import ensure_topics

E2E_FANS = int(os.environ.get("VFSTREAM_BENCH_E2E_FANS", "450000"))


async def _settle(settings: Settings, work: Path, workers: int, fans: int) -> dict[str, object]:
    await ensure_topics(settings)
    campaign = f"ce2e{workers}"
    run = generate_run(GeneratorConfig(campaign_id=campaign, campaign_name="bench", fans=fans))
    truth = expected_counts([run])[campaign]
    fleet = [
        WorkerProcess(
            settings.model_copy(update={"data_dir": work / f"worker-{n}", "web_port": free_port()}),
            f"e2e-{workers}-{n}",
            work / "logs",
        )
        for n in range(workers)
    ]
    for worker in fleet:
        worker.start()
    try:
        for worker in fleet:
            await worker.wait_ready(timeout=300)
        started = time.monotonic()
        key = await upload_run(settings, run, work / "files")
        uploaded = time.monotonic()
        summary = await ScoringFileIngestor(settings).ingest(settings.scoring_bucket, key)
        ingested = time.monotonic()
        await wait_for_counts(fleet[0], campaign, truth, timeout=7_200, interval=1.0)
        settled = time.monotonic()
    finally:
        for worker in fleet:
            worker.stop()
    prefix = f"e2e_{workers}w"
    return {
        f"{prefix}_rows": summary.rows_in,
        f"{prefix}_upload_seconds": round(uploaded - started, 1),
        f"{prefix}_ingest_seconds": round(ingested - uploaded, 1),
        f"{prefix}_settled_seconds": round(settled - started, 1),
        # The measure: from the start of ingestion (the object already in S3).
        f"{prefix}_settled_after_ingest_start_seconds": round(settled - uploaded, 1),
    }


def e2e_benchmark(settings: Settings, work: Path, workers: int, fans: int = E2E_FANS) -> dict:
    return asyncio.run(_settle(settings, work, workers, fans))
