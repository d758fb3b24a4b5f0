"""Months without an operator, compressed (issue #21): thousands of campaigns' files arrive
while S3 resets connections, the AWS endpoint goes away, the entry service is down for five
minutes, the broker restarts and a worker is killed with ``kill -9``. Nobody intervenes.

``python -m bench.soak`` (or ``python -m bench.run_all soak``). The clock is accelerated: the
issue's 30 minutes of arrivals are ``VFSTREAM_SOAK_MINUTES`` (default 10) with the faults
placed at the same fractions of the run; campaigns ``VFSTREAM_SOAK_CAMPAIGNS`` (default
2,000), each one small file of 20-60 fans (1-3 preferences, about 1% invalid rows), a few
of them re-scored later. Reported:

- RSS of each worker sampled every 5 s, and its slope over the second half of the run;
- idle CPU of the workers (percent of one core) in a quiet minute before the load and after
  (each once the relays have delivered everything and the ledger's two-minute re-announce
  window has passed: what follows a load is not idle work);
- bytes written to the changelogs per minute in those two quiet minutes (before: a few
  campaigns; after: thousands): idle work must not grow with the number of campaigns;
- p50/p99 of ``/campaigns/{id}/counts`` and the console's ``/dashboard/console`` during load;
- every campaign's counts equal the generator's truth on every worker, ``reconcile`` clean,
  the DynamoDB mirror equal to the state (a count item and one item per fan for every
  campaign), every rank-0 fan delivered to the entry service, no dead letter of a transient
  kind (``entry-failed``, ``entry-no-markets``, ``scoring-file`` for a file S3 reset) and no
  command run by hand.

A plot of RSS and lag over the run goes to ``bench/soak.png``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.common import cli
from tests.support.services import Answer, ScriptedService, scripted_service
from tests.support.tcpproxy import TcpProxy
from vfstream.dev.generator import (
    GeneratorConfig,
    ScoringRun,
    expected_counts,
    generate_run,
    global_user_id,
    rescore,
)
from vfstream.dev.stack import LocalStack, free_port, private_stack_settings
from vfstream.dev.workers import WorkerProcess, run_cli
from vfstream.kafka.reads import read_committed
from vfstream.settings import Settings

MINUTES = float(os.environ.get("VFSTREAM_SOAK_MINUTES", "10"))
CAMPAIGNS = int(os.environ.get("VFSTREAM_SOAK_CAMPAIGNS", "2000"))
QUIET_SECONDS = float(os.environ.get("VFSTREAM_SOAK_QUIET_SECONDS", "60"))
WORKERS = 2
SAMPLE_SECONDS = 5.0
# Markets of the generator's default events: every rank-0 fan has an id to be sent with.
MARKETS = [
    {"id": "m-chi", "name": "chicago"},
    {"id": "m-det", "name": "detroit"},
    {"id": "m-ny", "name": "new-york"},
    {"id": "m-la", "name": "los-angeles"},
    {"id": "m-tor", "name": "toronto"},
]
TRANSIENT_KINDS = {"entry-failed", "entry-no-markets"}


@dataclass
class Samples:
    started: float = field(default_factory=time.monotonic)
    rss: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    lag: list[tuple[float, int]] = field(default_factory=list)
    latency: dict[str, list[float]] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.started

    def mark(self, what: str) -> None:
        self.events.append((self.now(), what))
        print(f"[soak {self.now():6.0f}s] {what}", flush=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def changelog_bytes(settings: Settings) -> int:
    """Bytes on the broker's disk of the app's changelog topics."""
    data = settings.dev.dev_state_dir / "kafka-data"
    total = 0
    for folder in data.glob(f"{settings.app_id}-*-changelog-*"):
        total += sum(f.stat().st_size for f in folder.glob("*.log"))
    return total


# A flush's snapshots are announced again for two minutes (the ledger's re-announce
# window): work that follows the load, not idle work. The quiet minute starts after it.
SETTLE_SECONDS = 135.0


async def relays_idle(workers: list[WorkerProcess], timeout: float = 900) -> bool:
    """Every relay of every worker has delivered all it read (``/statuses``)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while time.monotonic() < deadline:
            busy = False
            for worker in workers:
                try:
                    async with session.get(worker.base_url + "/statuses") as answer:
                        relays = (await answer.json()).get("relays", {})
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    busy = True
                    continue
                busy |= any(
                    r.get("held") or r.get("state") != "delivering" for r in relays.values()
                )
            if not busy:
                return True
            await asyncio.sleep(5)
    return False


async def quiet_minute(settings: Settings, workers: list[WorkerProcess]) -> dict[str, float]:
    """CPU of the workers and changelog growth over a quiet period, once what came before
    is done: the relays have delivered everything and the re-announce window has passed."""
    await relays_idle(workers)
    await asyncio.sleep(SETTLE_SECONDS)
    pids = [w.proc.pid for w in workers if w.proc is not None]
    cpu_before = sum(cpu_seconds(pid) for pid in pids)
    bytes_before = changelog_bytes(settings)
    await asyncio.sleep(QUIET_SECONDS)
    cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
    written = changelog_bytes(settings) - bytes_before
    return {
        "cpu_percent_of_a_core": round(100 * cpu / QUIET_SECONDS / len(pids), 2),
        "changelog_bytes_per_minute": round(written * 60 / QUIET_SECONDS),
    }


def campaign_runs(count: int) -> list[ScoringRun]:
    rng = random.Random(7)
    return [
        generate_run(
            GeneratorConfig(
                campaign_id=f"soak{n:05d}",
                campaign_name="soak-tour",
                fans=rng.randint(20, 60),
                seed=n,
            )
        )
        for n in range(count)
    ]


async def upload(settings: Settings, run: ScoringRun, work: Path) -> None:
    from vfstream.dev.scenario import upload_run

    await upload_run(settings, run, work)


async def sample(settings: Settings, workers: list[WorkerProcess], samples: Samples) -> None:
    """Every SAMPLE_SECONDS: RSS of each worker, the group's lag (from one console, which
    merges every worker's), and timed calls of the views on every worker."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            at = samples.now()
            lag: int | None = None
            for worker in workers:
                if not worker.alive():
                    continue
                samples.rss.setdefault(worker.name, []).append((at, worker.rss_mb()))
                counts = f"/campaigns/soak{random.randrange(CAMPAIGNS):05d}/counts"
                for name, path in (("counts", counts), ("console", "/dashboard/console")):
                    started = time.monotonic()
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                        async with session.get(worker.base_url + path) as answer:
                            body = await answer.read()
                            elapsed = (time.monotonic() - started) * 1000
                            samples.latency.setdefault(name, []).append(elapsed)
                            if name == "console" and answer.status == 200 and lag is None:
                                lag = console_lag(orjson.loads(body))
            samples.lag.append((at, lag or 0))
            await asyncio.sleep(SAMPLE_SECONDS)


def console_lag(console: dict[str, Any]) -> int:
    """Messages behind, summed over every partition, from the console's workers part."""
    part = console.get("workers") or {}
    total = 0
    for worker in part.get("workers", []):
        for point in worker.get("lag", [])[-1:]:
            total += sum(point.get("partitions", {}).values())
    return total


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def slope_mb_per_minute(points: list[tuple[float, float]]) -> float:
    half = points[len(points) // 2 :]
    if len(half) < 2:
        return 0.0
    xs, ys = [p[0] for p in half], [p[1] for p in half]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    variance = sum((x - mean_x) ** 2 for x in xs) or 1.0
    return round(covariance / variance * 60, 3)


async def exact_everywhere(
    workers: list[WorkerProcess], truth: dict[str, dict[str, int]], timeout: float
) -> int:
    """Campaigns whose counts on every worker equal the truth, waiting up to ``timeout``."""
    deadline = time.monotonic() + timeout
    pending = set(truth)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while pending and time.monotonic() < deadline:
            for campaign in sorted(pending):
                ok = True
                for worker in workers:
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        async with session.get(
                            f"{worker.base_url}/campaigns/{campaign}/counts"
                        ) as answer:
                            body = await answer.json() if answer.status == 200 else {}
                            ok &= all(body.get(k) == v for k, v in truth[campaign].items())
                            continue
                    ok = False
                if ok:
                    pending.discard(campaign)
            if pending:
                await asyncio.sleep(5)
    return len(truth) - len(pending)


async def mirror_matches(settings: Settings, truth: dict[str, dict[str, int]]) -> int:
    """Campaigns whose DynamoDB count item and fan items match the truth."""
    from vfstream.aws import aws_client

    counts: dict[str, dict[str, Any]] = {}
    fans: dict[str, int] = {}
    async with aws_client(settings, "dynamodb") as dynamo:
        paginator = dynamo.get_paginator("scan")
        async for page in paginator.paginate(TableName=settings.demand_table):
            for item in page["Items"]:
                pk, sk = item["PK"]["S"], item["SK"]["S"]
                if pk.startswith("campaign:") and sk == "meta:counts":
                    counts[pk[9:]] = {k: int(item[k]["N"]) for k in ("verified", "rejected")}
                elif pk.startswith("fan:") and sk.startswith("campaign:"):
                    fans[sk[9:]] = fans.get(sk[9:], 0) + 1
    return sum(
        1
        for campaign, want in truth.items()
        if counts.get(campaign, {}).get("verified") == want["verified"]
        and counts.get(campaign, {}).get("rejected") == want["rejected"]
        and fans.get(campaign) == want["verified"] + want["rejected"]
    )


def rank0_missing(entry: ScriptedService, runs: list[ScoringRun]) -> int:
    delivered: dict[str, set[str]] = {}
    for request in entry.requests:
        if 200 <= request.status < 300 and request.path.endswith("/scoring"):
            campaign = request.path.split("/")[2]
            delivered.setdefault(campaign, set()).update(
                record["globalUserId"] for record in request.json()["records"]
            )
    missing = 0
    for run in runs:
        rank0 = {global_user_id(n) for n in range(run.fans) if run.masks[n] & 1}
        missing += len(rank0 - delivered.get(run.campaign_id, set()))
    return missing


def plot(samples: Samples, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (memory, lag) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for name, points in samples.rss.items():
        memory.plot([p[0] / 60 for p in points], [p[1] for p in points], label=name)
    memory.set_ylabel("RSS (MB)")
    memory.legend(loc="upper left")
    lag.plot([p[0] / 60 for p in samples.lag], [p[1] for p in samples.lag], color="tab:red")
    lag.set_ylabel("score-record lag (messages)")
    lag.set_xlabel("minutes")
    for at, what in samples.events:
        for axis in (memory, lag):
            axis.axvline(at / 60, color="grey", linestyle=":", linewidth=0.8)
        memory.annotate(what, (at / 60, memory.get_ylim()[1]), rotation=90, fontsize=6,
                        va="top", ha="right")  # fmt: skip
    figure.suptitle("soak: RSS of each worker and the group's lag; dotted lines: faults")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


async def soak(work: Path) -> dict[str, Any]:
    samples = Samples()
    stack_settings = private_stack_settings(work / "stack", kafka_heap="1g")
    cli(stack_settings, "dev", "up")
    stack = LocalStack(stack_settings)
    aws_port = stack_settings.aws_port
    proxy = TcpProxy(aws_port)
    await proxy.start()
    runs = campaign_runs(CAMPAIGNS)
    rescored = [rescore(run, flip_ratio=0.2, seed=99) for run in runs[:: max(CAMPAIGNS // 50, 1)]]
    truth = expected_counts([*runs, *rescored])
    async with scripted_service() as entry, scripted_service() as campaigns:
        entry.fallback = Answer.json(200, {"inserted": 1, "updated": 0})
        campaigns.fallback = Answer.json(200, MARKETS)
        settings = stack_settings.model_copy(
            update={
                "aws_endpoint_url": proxy.url,
                "entry_service_url": entry.url,
                "campaign_service_url": campaigns.url,
                "forward_to_kinesis": False,
                "listen_for_notifications": True,
                "report_overdue_seconds": 3600,
            }
        )
        workers = [
            WorkerProcess(
                settings.model_copy(update={"data_dir": work / f"w{n}", "web_port": free_port()}),
                f"soak-worker-{n}",
                work / "logs",
            )
            for n in range(WORKERS)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            await worker.wait_ready(timeout=180)
        samples.mark("workers ready")
        files = work / "files"
        for run in runs[:5]:
            await upload(stack_settings, run, files)
        await exact_everywhere(workers, expected_counts(runs[:5]), 300)
        before = await quiet_minute(settings, workers)
        samples.mark(f"quiet before: {before}")
        sampler = asyncio.create_task(sample(settings, workers, samples))
        duration = MINUTES * 60
        faults = [
            (0.10, "S3 resets 5 GETs mid-body", lambda: proxy.reset_after(2_000, times=5)),
            (0.20, "AWS endpoint down 20 s", lambda: proxy_outage(proxy, 20)),
            (0.30, "entry service down 5 min", lambda: entry_outage(entry, 300)),
            (0.45, "broker restart", lambda: broker_restart(stack)),
            (0.60, "kill -9 worker 1", lambda: kill_and_restart(workers[1])),
        ]
        arrivals = [*runs[5:], *rescored]
        started = time.monotonic()
        pending_faults = list(faults)
        background: list[asyncio.Task[Any]] = []
        for index, run in enumerate(arrivals):
            due = started + duration * index / len(arrivals)
            while pending_faults and time.monotonic() - started >= pending_faults[0][0] * duration:
                _, what, act = pending_faults.pop(0)
                samples.mark(what)
                outcome = act()
                if asyncio.iscoroutine(outcome):
                    background.append(asyncio.create_task(outcome))
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            # Straight to moto: the outages are between vfstream and AWS, not upstream's.
            await upload(stack_settings, run, files)
        samples.mark("all files uploaded")
        await asyncio.gather(*background)
        exact = await exact_everywhere(workers, truth, timeout=1800)
        samples.mark(f"{exact} of {len(truth)} campaigns exact on every worker")
        sampler.cancel()
        after = await quiet_minute(settings, workers)
        samples.mark(f"quiet after: {after}")
        reconcile = run_cli(settings, "reconcile", timeout=1800)
        differences = orjson.loads(reconcile.stdout)["differences"] if reconcile.stdout else -1
        mirrored = await mirror_matches(settings, truth)
        missing_rank0 = rank0_missing(entry, [*runs, *rescored])
        letters = [
            orjson.loads(m.value)
            for m in await read_committed(settings, settings.dead_letter_topic)
        ]
        transient = sum(1 for letter in letters if letter.get("kind") in TRANSIENT_KINDS)
        failed_files = sum(1 for letter in letters if letter.get("kind") == "scoring-file")
        for worker in workers:
            worker.stop()
    await proxy.close()
    cli(stack_settings, "dev", "down", check=False)
    plot(samples, Path("bench/soak.png"))
    rss_peak = {name: round(max(p[1] for p in points)) for name, points in samples.rss.items()}
    return {
        "soak_minutes": MINUTES,
        "soak_campaigns": len(truth),
        "soak_files": len(runs) + len(rescored),
        "soak_exact_campaigns": exact,
        "soak_reconcile_differences": differences,
        "soak_mirror_matching_campaigns": mirrored,
        "soak_rank0_fans_missing": missing_rank0,
        "soak_transient_dead_letters": transient,
        "soak_failed_files": failed_files,
        "soak_rss_peak_mb": rss_peak,
        "soak_rss_slope_mb_per_min_second_half": {
            name: slope_mb_per_minute(points) for name, points in samples.rss.items()
        },
        "soak_idle_cpu_percent_before_after": [
            before["cpu_percent_of_a_core"],
            after["cpu_percent_of_a_core"],
        ],
        "soak_idle_changelog_bytes_per_min_before_after": [
            before["changelog_bytes_per_minute"],
            after["changelog_bytes_per_minute"],
        ],
        "soak_view_latency_ms_p50_p99": {
            name: [round(percentile(v, 0.5), 1), round(percentile(v, 0.99), 1)]
            for name, v in samples.latency.items()
        },
        "soak_operator_actions": 0,
    }


async def proxy_outage(proxy: TcpProxy, seconds: float) -> None:
    await proxy.cut()
    await asyncio.sleep(seconds)
    await proxy.restore()


async def entry_outage(entry: ScriptedService, seconds: float) -> None:
    up = entry.fallback
    entry.fallback = Answer(503, "down for maintenance")
    await asyncio.sleep(seconds)
    entry.fallback = up


async def broker_restart(stack: LocalStack) -> None:
    await asyncio.to_thread(stack.kafka.stop)
    await asyncio.sleep(10)
    await asyncio.to_thread(stack.kafka.start)
    await stack.kafka.wait_ready()


async def kill_and_restart(worker: WorkerProcess) -> None:
    worker.kill()
    await asyncio.sleep(10)
    worker.start()
    await worker.wait_ready(timeout=300)


def soak_benchmark(work: Path) -> dict[str, Any]:
    return asyncio.run(soak(work))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="vfstream-soak-") as tmp:
        results = soak_benchmark(Path(tmp))
    print(json.dumps(results, indent=2))
    from bench.run_all import write_report

    write_report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
