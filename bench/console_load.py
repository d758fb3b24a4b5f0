"""The console under polling (issue #20): one worker counts a ~1M-row file while 300 open
consoles poll it, against the same run without them, in one benchmark run.

A round is three runs, each on topics of its own with a fresh worker: no pollers; 300
consoles asking what the page asks (``dashboard.js``: one ``/dashboard/console`` request a
refresh); 300 consoles asking the five routes the page asked before (the campaigns, the
windows of the selected campaign, the runs, the dead letters, the workers). The file is
uploaded once and ingested by a ``vfstream ingest`` child process once the worker is ready
and the pollers have polled for ``WARM_SECONDS``.

The pollers are a child process of their own (their CPU is not the worker's): each console
has its own HTTP session (its own connections, as separate browsers have) and refreshes every
``EVERY_SECONDS`` like ``setInterval``, without waiting for the previous refresh to answer
(harsher than the page, which waits). A third of the consoles filter runs and dead letters by
the campaign, a third filter dead letters by kind; they start spread over the first 2 s.
Latencies count from ingest start until the file is settled; a request that fails, answers
5xx or takes longer than 30 s counts as failed (and as 30 s).

Figures: p50/p95/p99 per route; the worker's RSS growth (peak minus the value after it was
ready, before any poller), also less the growth of the run without pollers; the worker's
records/s between 10% and 90% of the file, and its ratio to the run without pollers.
``VFSTREAM_BENCH_CONSOLE_FANS`` (450,000 fans, about 1M rows),
``VFSTREAM_BENCH_CONSOLE_POLLERS`` (300) and ``VFSTREAM_BENCH_CONSOLE_ROUNDS`` (1) scale it.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import _percentile, cli, isolated
from vfstream.dev.generator import GeneratorConfig, expected_counts, generate_run
from vfstream.dev.scenario import upload_run, wait_for_counts
from vfstream.dev.workers import WorkerProcess
from vfstream.settings import Settings
from vfstream.topics import ensure_topics

CONSOLE_FANS = int(os.environ.get("VFSTREAM_BENCH_CONSOLE_FANS", "450000"))
POLLERS = int(os.environ.get("VFSTREAM_BENCH_CONSOLE_POLLERS", "300"))
ROUNDS = int(os.environ.get("VFSTREAM_BENCH_CONSOLE_ROUNDS", "1"))
EVERY_SECONDS = 2.0
WARM_SECONDS = 6.0
REQUEST_TIMEOUT = 30.0
CAMPAIGN = "cconsole"


# --- the pollers (a child process) ----------------------------------------------------


async def _poll(
    base_url: str, pollers: int, mode: str, stop: Path, out: Path, token: str | None
) -> None:
    records: list[tuple[float, str, float, int]] = []  # (sent at, route, ms, status or 0)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    pending: set[asyncio.Task[None]] = set()

    async def ask(session: aiohttp.ClientSession, route: str, path: str) -> Any:
        sent = time.time()
        started = time.monotonic()
        status, body = 0, None
        try:
            async with session.get(base_url + path, headers=headers) as resp:
                status = resp.status
                body = await resp.json(content_type=None) if status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            status = 0
        records.append((sent, route, (time.monotonic() - started) * 1000, status))
        return body

    async def page(session: aiohttp.ClientSession, number: int, chosen: list[str]) -> None:
        """What ``dashboard.js`` asks a refresh: one request."""
        campaign = CAMPAIGN if number % 3 == 0 else ""
        query = "campaigns=50&runs=100&letters=20"
        query += f"&campaign={chosen[0]}" if chosen else ""
        query += f"&runsCampaign={campaign}&lettersCampaign={campaign}" if campaign else ""
        query += "&kind=scoring-row" if number % 3 == 1 else ""
        body = await ask(session, "page", "/dashboard/console?" + query)
        if body and body.get("selected") and not chosen:
            chosen.append(body["selected"])

    async def routes(session: aiohttp.ClientSession, number: int, chosen: list[str]) -> None:
        """What the page asked a refresh before it asked once: five routes."""
        campaign = CAMPAIGN if number % 3 == 0 else ""
        kind = "scoring-row" if number % 3 == 1 else ""
        runs = f"/dashboard/runs?limit=100{'&campaign=' + campaign if campaign else ''}"
        letters = "/dashboard/dead-letters?limit=20"
        letters += f"&campaign={campaign}" if campaign else ""
        letters += f"&kind={kind}" if kind else ""

        async def counts() -> None:
            listing = await ask(session, "campaigns", "/dashboard/campaigns?limit=50")
            if listing and listing.get("campaigns") and not chosen:
                chosen.append(listing["campaigns"][0]["campaignId"])
            if chosen:
                await ask(session, "windows", f"/campaigns/{chosen[0]}/counts/windows")

        await asyncio.gather(
            counts(),
            ask(session, "runs", runs),
            ask(session, "dead_letters", letters),
            ask(session, "workers", "/dashboard/workers"),
        )

    refresh = page if mode == "page" else routes

    async def console(number: int) -> None:
        await asyncio.sleep(number * EVERY_SECONDS / pollers)
        chosen: list[str] = []
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        connector = aiohttp.TCPConnector(limit=6)  # a browser's connections to one host
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            next_at = time.monotonic()
            while not stop.exists():
                task = asyncio.create_task(refresh(session, number, chosen))
                pending.add(task)
                task.add_done_callback(pending.discard)
                next_at += EVERY_SECONDS
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if pending:
                await asyncio.wait(list(pending), timeout=REQUEST_TIMEOUT + 1)

    await asyncio.gather(*(console(n) for n in range(pollers)))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.write_text(json.dumps({"records": records, "cpu_seconds": usage.ru_utime + usage.ru_stime}))


def start_pollers(
    worker: WorkerProcess, pollers: int, mode: str, place: Path
) -> subprocess.Popen[bytes]:
    place.mkdir(parents=True, exist_ok=True)
    tokens = worker.settings.web_tokens
    args = [str(place / "stop"), str(place / "latencies.json"), tokens[0] if tokens else ""]
    return subprocess.Popen(
        [
            sys.executable,
            *("-m", "bench.console_load", "poll", worker.base_url, str(pollers), mode),
            *args,
        ],
        stdin=subprocess.DEVNULL,
    )


def stop_pollers(process: subprocess.Popen[bytes], place: Path) -> dict[str, Any]:
    (place / "stop").touch()
    process.wait(timeout=REQUEST_TIMEOUT + 30)
    return json.loads((place / "latencies.json").read_text())


# --- one run --------------------------------------------------------------------------


async def _watch(
    worker: WorkerProcess, expected: int, started: float
) -> tuple[dict[str, tuple[float, int]], float]:
    """The 10% and 90% marks of records applied, and the RSS peak, until all are applied."""
    marks: dict[str, tuple[float, int]] = {}
    peak = worker.rss_mb()
    while True:
        try:
            _, body = await worker.get_json("/statuses", timeout=10)
            seen = body["recordsIn"]
        except (aiohttp.ClientError, TimeoutError):
            seen = 0
        now = time.monotonic()
        peak = max(peak, worker.rss_mb())
        if seen >= expected * 0.1 and "low" not in marks:
            marks["low"] = (now, seen)
        if seen >= expected * 0.9 and "high" not in marks:
            marks["high"] = (now, seen)
        if seen >= expected:
            return marks, peak
        if now - started > 3_600:
            raise TimeoutError(f"{seen} of {expected} records after an hour")
        await asyncio.sleep(0.25)


async def _one_run(
    stack: Settings, place: Path, key: str, run: Any, mode: str | None, pollers: int
) -> dict[str, Any]:
    """One worker counting the file; ``mode`` "page" or "routes" polls it meanwhile."""
    settings = isolated(stack, place / "worker")
    await ensure_topics(settings)
    truth = expected_counts([run])[CAMPAIGN]
    worker = WorkerProcess(settings, f"console-{mode}", place / "logs")
    worker.start()
    polling = None
    try:
        await worker.wait_ready(timeout=300)
        await asyncio.sleep(2.0)
        rss_start = worker.rss_mb()
        if mode is not None:
            polling = start_pollers(worker, pollers, mode, place / "pollers")
        await asyncio.sleep(WARM_SECONDS)
        ingest_started = time.time()
        started = time.monotonic()
        ingest = asyncio.create_task(
            asyncio.to_thread(
                cli, settings, "ingest", "--no-progress", f"s3://{settings.scoring_bucket}/{key}"
            )
        )
        marks, rss_peak = await _watch(worker, run.expected_valid_rows, started)
        applied = time.monotonic()
        await ingest
        await wait_for_counts(worker, CAMPAIGN, truth, timeout=600, interval=0.5)
        settled_at = time.time()
        latencies = stop_pollers(polling, place / "pollers") if polling else None
        polling = None
    finally:
        if polling is not None:
            (place / "pollers" / "stop").touch()
            polling.wait(timeout=REQUEST_TIMEOUT + 30)
        worker.stop()
    (t1, n1), (t2, n2) = marks["low"], marks["high"]
    return {
        "records_per_s": (n2 - n1) / max(t2 - t1, 1e-6),
        "applied_seconds": applied - started,
        "rss_start_mb": rss_start,
        "rss_growth_mb": rss_peak - rss_start,
        "latencies": latencies,
        "window": (ingest_started, settled_at),
    }


def _latency_figures(prefix: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """p50/p95/p99 per route of the requests sent while the file was counted."""
    figures: dict[str, Any] = {}
    by_route: dict[str, list[float]] = {}
    failed = total = 0
    cpu = 0.0
    for result in runs:
        start, end = result["window"]
        cpu += result["latencies"]["cpu_seconds"]
        for sent, route, ms, status in result["latencies"]["records"]:
            if not start <= sent <= end:
                continue
            total += 1
            if status == 0 or status >= 500 or ms > REQUEST_TIMEOUT * 1000:
                failed += 1
                ms = REQUEST_TIMEOUT * 1000
            by_route.setdefault(route, []).append(ms)
    worst = 0.0
    for route, values in by_route.items():
        for name, share in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
            figures[f"{prefix}_{route}_{name}_ms"] = round(_percentile(values, share), 1)
        worst = max(worst, _percentile(values, 0.95))
    figures[f"{prefix}_requests"] = total
    figures[f"{prefix}_failed_requests"] = failed
    figures[f"{prefix}_worst_route_p95_ms"] = round(worst, 1)
    figures[f"{prefix}_pollers_cpu_seconds"] = round(cpu, 1)
    return figures


MODES = {"page": "console", "routes": "console_routes"}


def console_load_benchmark(
    stack: Settings, work: Path, fans: int = CONSOLE_FANS, pollers: int = POLLERS
) -> dict[str, Any]:
    """Rounds of three runs: no pollers, ``pollers`` consoles as the page asks (one request
    a refresh), ``pollers`` consoles asking the five routes a refresh (the page before)."""
    run = generate_run(GeneratorConfig(campaign_id=CAMPAIGN, campaign_name="bench", fans=fans))
    key = asyncio.run(upload_run(isolated(stack, work / "upload"), run, work / "files"))
    runs: dict[str | None, list[dict[str, Any]]] = {None: [], "page": [], "routes": []}
    for number in range(ROUNDS):
        for mode in runs:
            place = work / f"{mode or 'quiet'}-{number}"
            runs[mode].append(asyncio.run(_one_run(stack, place, key, run, mode, pollers)))

    def median(mode: str | None, name: str) -> float:
        return statistics.median(result[name] for result in runs[mode])

    quiet_rate = median(None, "records_per_s")
    quiet_growth = max(result["rss_growth_mb"] for result in runs[None])
    figures: dict[str, Any] = {
        "console_rows": run.expected_rows,
        "console_pollers": pollers,
        "console_rounds": ROUNDS,
        "console_no_pollers_records_per_s": round(quiet_rate),
        "console_no_pollers_applied_seconds": round(median(None, "applied_seconds"), 1),
        "console_no_pollers_rss_growth_mb": round(quiet_growth),
    }
    for mode, prefix in MODES.items():
        rate = median(mode, "records_per_s")
        growth = max(result["rss_growth_mb"] for result in runs[mode])
        figures |= {
            f"{prefix}_records_per_s": round(rate),
            f"{prefix}_throughput_ratio": round(rate / quiet_rate, 3),
            f"{prefix}_applied_seconds": round(median(mode, "applied_seconds"), 1),
            f"{prefix}_rss_growth_mb": round(growth),
            # What the pollers add to the growth of counting the file alone.
            f"{prefix}_rss_growth_over_no_pollers_mb": round(growth - quiet_growth),
            **_latency_figures(prefix, runs[mode]),
        }
    figures["console_each_round"] = [
        [round(runs[mode][number]["records_per_s"]) for mode in runs] for number in range(ROUNDS)
    ]
    return figures


if __name__ == "__main__":
    if sys.argv[1:2] == ["poll"]:
        base_url, count, mode, stop, out, token = sys.argv[2:8]
        asyncio.run(_poll(base_url, int(count), mode, Path(stop), Path(out), token or None))
    else:
        subprocess.run([sys.executable, "-m", "bench.run_all", "console"], check=True)
