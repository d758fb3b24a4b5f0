"""Shared set-up for benchmarks: the local stack on its own ports, isolated topics."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import time
import uuid
from pathlib import Path

from vfstream.dev.stack import free_port, private_stack_settings
from vfstream.dev.workers import WorkerProcess, run_cli
from vfstream.settings import Settings


def bench_stack(state_dir: Path) -> Settings:
    """Start a private local stack for the benchmark run (stopped by ``stop_stack``)."""
    settings = private_stack_settings(state_dir, kafka_heap="1g")
    cli(settings, "dev", "up")
    return settings


def stop_stack(settings: Settings) -> None:
    cli(settings, "dev", "down", check=False)


def isolated(settings: Settings, data_dir: Path) -> Settings:
    # The relays to the outside world run in consumer groups of their own; the benchmarks
    # measure the path from S3 to counts, so they are off (the mirror has its own figure).
    return settings.namespaced("bench" + uuid.uuid4().hex[:6]).model_copy(
        update={
            "data_dir": data_dir,
            "web_port": free_port(),
            "mirror_to_dynamodb": False,
            "forward_to_entry_service": False,
            "forward_to_kinesis": False,
            "listen_for_notifications": False,
        }
    )


def cli(settings: Settings, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = run_cli(settings, *args)
    if check and done.returncode != 0:
        raise RuntimeError(f"vfstream {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def machine() -> str:
    cpus = os.cpu_count()
    memory = ""
    try:
        total_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f", {total_kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    return f"{platform.machine()}, {cpus} cores{memory}, Python {platform.python_version()}"


# How often the latency benchmarks read a campaign's counts.
POLL_SECONDS = 0.02


async def watch_counts(
    worker: WorkerProcess,
    campaign: str,
    total: int,
    seen: list[tuple[float, int]],
    done: asyncio.Event,
) -> None:
    """Note (when, verified) of ``campaign`` until it reaches ``total``, then set ``done``."""
    while not done.is_set():
        status, body = await worker.get_json(f"/campaigns/{campaign}/counts")
        if status == 200:
            seen.append((time.monotonic(), body["verified"]))
            if body["verified"] >= total:
                done.set()
        await asyncio.sleep(POLL_SECONDS)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def latency_figures(
    name: str, sent_at: list[float], seen: list[tuple[float, int]]
) -> dict[str, int]:
    """p50 and p99 (ms) from each record's send time to the first count that includes it:
    record i (in send order) is counted once ``verified`` reaches i + 1."""
    latencies: list[float] = []
    cursor = 0
    for index, moment in enumerate(sent_at):
        while cursor < len(seen) and seen[cursor][1] < index + 1:
            cursor += 1
        if cursor < len(seen):
            latencies.append(seen[cursor][0] - moment)
    return {
        f"{name}_p50_ms": round(_percentile(latencies, 0.50) * 1000),
        f"{name}_p99_ms": round(_percentile(latencies, 0.99) * 1000),
    }
