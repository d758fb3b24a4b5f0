"""What TLS and SASL cost: the verify agent and ingestion on the plain stack and on the
secured one (SASL_SSL, SCRAM-SHA-512, ACLs), alternately in one run, reported as ratios.

Both stacks run at once on their own ports; the rounds alternate plain, secured, plain,
secured so that the shared machine's drift falls on both sides. The agent figure is the
worker's records/s between 10% and 90% of a topic (``agent_bench.agent_rate``); the ingest
figure is a ``vfstream ingest`` child process's rows/s.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
from pathlib import Path

import orjson

from bench.agent_bench import agent_rate
from bench.common import cli, isolated
from vfstream.dev.generator import GeneratorConfig, generate_run
from vfstream.dev.scenario import upload_run
from vfstream.dev.stack import private_stack_settings
from vfstream.settings import Settings
from vfstream.sources.s3.ingestor import ScoringFileIngestor
from vfstream.topics import ensure_topics

TLS_FANS = int(os.environ.get("VFSTREAM_BENCH_TLS_FANS", "200000"))  # ~440k rows
ROUNDS = 2


def secured_stack(state_dir: Path) -> Settings:
    settings = private_stack_settings(state_dir, secure=True, kafka_heap="1g")
    cli(settings, "dev", "up")
    return settings


def ingest_rate(settings: Settings, key: str) -> float:
    done = cli(settings, "ingest", "--no-progress", f"s3://{settings.scoring_bucket}/{key}")
    summary = orjson.loads(done.stdout.strip().splitlines()[-1])
    return float(summary["in"]) / float(summary["seconds"])


def one_round(stack: Settings, work: Path, fans: int) -> tuple[float, float]:
    """(ingest rows/s, agent records/s) on ``stack``, each on topics of its own."""
    settings = isolated(stack, work / "worker")
    asyncio.run(ensure_topics(settings))
    run = generate_run(GeneratorConfig(campaign_id="ctls", campaign_name="bench", fans=fans))
    key = asyncio.run(upload_run(settings, run, work / "files"))
    ingest = ingest_rate(settings, key)
    # The agent reads a topic filled by an in-process ingest of the same file.
    agent_settings = isolated(stack, work / "agent")
    asyncio.run(ensure_topics(agent_settings))

    async def load() -> int:
        summary = await ScoringFileIngestor(agent_settings).ingest(
            agent_settings.scoring_bucket, key
        )
        return summary.valid

    records = asyncio.run(load())
    agent, _ = asyncio.run(agent_rate(agent_settings, records, work / "logs"))
    return ingest, agent


def tls_benchmark(plain: Settings, work: Path, fans: int = TLS_FANS) -> dict:
    secured = secured_stack(work / "secured-stack")
    figures: dict[str, list[tuple[float, float]]] = {"plain": [], "secured": []}
    try:
        for number in range(ROUNDS):
            for name, stack in (("plain", plain), ("secured", secured)):
                place = work / f"tls-{name}-{number}"
                figures[name].append(one_round(stack, place, fans))
    finally:
        cli(secured, "dev", "down", check=False)

    def median(name: str, index: int) -> float:
        return statistics.median(pair[index] for pair in figures[name])

    ingest_plain, ingest_secured = median("plain", 0), median("secured", 0)
    agent_plain, agent_secured = median("plain", 1), median("secured", 1)
    return {
        "tls_rounds": ROUNDS,
        "tls_ingest_plain_rows_per_s": round(ingest_plain),
        "tls_ingest_sasl_ssl_rows_per_s": round(ingest_secured),
        "tls_ingest_sasl_ssl_to_plain_ratio": round(ingest_secured / ingest_plain, 3),
        "tls_agent_plain_records_per_s": round(agent_plain),
        "tls_agent_sasl_ssl_records_per_s": round(agent_secured),
        "tls_agent_sasl_ssl_to_plain_ratio": round(agent_secured / agent_plain, 3),
        "tls_each_round": {
            name: [[round(i), round(a)] for i, a in pairs] for name, pairs in figures.items()
        },
    }


if __name__ == "__main__":
    subprocess.run([sys.executable, "-m", "bench.run_all", "tls"], check=True)
