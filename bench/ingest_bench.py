"""Ingestion throughput: a generated 1M-row file from the local S3 to committed records.

Ingestion runs in a child process (`vfstream ingest`) so its peak RSS is its own.
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
import time
from pathlib import Path

import orjson

from bench.common import cli
from vfstream.dev.generator import GeneratorConfig, generate_run
from vfstream.dev.scenario import upload_run
from vfstream.settings import Settings
from vfstream.topics import ensure_topics

# 1-3 preferences a fan (2.2 on average) plus 1% invalid rows: ~1.0M rows.
FANS_FOR_1M_ROWS = 450_000


def ingest_benchmark(settings: Settings, work: Path, fans: int = FANS_FOR_1M_ROWS) -> dict:
    asyncio.run(ensure_topics(settings))
    run = generate_run(GeneratorConfig(campaign_id="cbench", campaign_name="bench", fans=fans))
    key = asyncio.run(upload_run(settings, run, work))
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.monotonic()
    done = cli(settings, "ingest", "--no-progress", f"s3://{settings.scoring_bucket}/{key}")
    wall = time.monotonic() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    summary = orjson.loads(done.stdout.strip().splitlines()[-1])
    return {
        "ingest_rows": summary["in"],
        "ingest_valid_rows": summary["valid"],
        "ingest_seconds": round(summary["seconds"], 2),
        "ingest_rows_per_s": round(summary["in"] / summary["seconds"]),
        "ingest_process_wall_seconds": round(wall, 2),
        "ingest_peak_rss_mb": round(max(peak_kb, before) / 1024),
    }


if __name__ == "__main__":
    subprocess.run([sys.executable, "-m", "bench.run_all", "ingest"], check=True)
