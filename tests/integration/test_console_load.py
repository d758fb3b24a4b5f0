"""The console under polling on a real worker (issue #20): hundreds of concurrent requests
of any query share one reader of the dead-letter topic and one summary of the tables, and
answer within seconds, without the worker's connections or memory growing with them."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import aiohttp
import orjson
import pytest

from tests.support.waiting import eventually
from vfstream import kafka
from vfstream.dev.workers import WorkerProcess
from vfstream.domain.keys import partition_for
from vfstream.domain.ledger import PartialCounts
from vfstream.domain.reports import RunAnnouncement
from vfstream.domain.tally import AnnounceMessage, PartialMessage
from vfstream.ops.reads import recent_dead_letters
from vfstream.settings import Settings

pytestmark = pytest.mark.integration

LETTERS = 4_000
CAMPAIGNS = [f"cload{n}" for n in range(8)]
KINDS = ["scoring-row", "score-record", "kinesis-record"]


async def produce_dead_letters(settings: Settings, count: int) -> None:
    producer = kafka.producer(settings)
    await producer.start()
    try:
        rng = random.Random(20)
        first_ms = int(time.time() * 1000) - count
        for n in range(count):
            letter = {
                "kind": rng.choice(KINDS),
                "campaignId": rng.choice(CAMPAIGNS),
                "bucket": "b",
                "key": f"file{n % 17}.csv",
                "line": n,
                "raw": "x" * rng.randrange(10, 900),
                "reasons": [f"reason {n}"],
            }
            await producer.send(
                settings.dead_letter_topic,
                orjson.dumps(letter),
                partition=n % settings.topic_partitions,
                timestamp_ms=first_ms + n,  # one a millisecond: "newest" is never a tie
            )
        await producer.flush()
    finally:
        await producer.stop()


async def burst(
    worker: WorkerProcess, paths: list[str], peak: list[int], timeout: float
) -> list[tuple[int, float, Any]]:
    """All ``paths`` at once, each on a connection of its own like separate pages; the
    worker's connections to the broker are sampled meanwhile into ``peak``."""
    port = worker.settings.kafka_port

    async def sample(done: asyncio.Event) -> None:
        while not done.is_set():
            peak.append(worker.connections_to(port))
            await asyncio.sleep(0.05)

    async def one(path: str) -> tuple[int, float, Any]:
        started = time.monotonic()
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(worker.base_url + path) as resp,
        ):
            body = await resp.read()
            return resp.status, time.monotonic() - started, body

    done = asyncio.Event()
    sampler = asyncio.create_task(sample(done))
    try:
        return await asyncio.gather(*(one(path) for path in paths))
    finally:
        done.set()
        await sampler


def said(figures: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.1f}" for name, value in figures.items())


def letter_queries(count: int) -> list[str]:
    rng = random.Random(5)
    paths = []
    for _ in range(count):
        query = []
        if rng.random() < 0.6:
            query.append(f"campaign={rng.choice([*CAMPAIGNS, 'unknown'])}")
        if rng.random() < 0.5:
            query.append(f"kind={rng.choice(KINDS)}")
        query.append(f"limit={rng.choice([1, 5, 20, 200])}")
        paths.append("/dashboard/dead-letters?" + "&".join(query))
    return paths


async def test_200_concurrent_dead_letter_queries_share_one_reader_and_answer_in_seconds(
    isolated: Settings, worker: WorkerProcess
) -> None:
    await produce_dead_letters(isolated, LETTERS)
    port = isolated.kafka_port
    await asyncio.sleep(1.0)
    connections_before = worker.connections_to(port)
    rss_before = worker.rss_mb()

    peak: list[int] = []
    started = time.monotonic()
    answers = await burst(worker, letter_queries(200), peak, timeout=30)
    elapsed = time.monotonic() - started
    figures = {
        "seconds": elapsed,
        "slowest": max(seconds for _, seconds, _ in answers),
        "broker_connections_before": connections_before,
        "broker_connections_peak": max(peak),
        "rss_growth_mb": worker.rss_mb() - rss_before,
    }
    statuses = [status for status, _, _ in answers]
    assert statuses == [200] * 200, (statuses, said(figures))
    assert elapsed < 5.0 and figures["slowest"] < 5.0, said(figures)
    # One reader (a consumer and its broker connection or two), not one per query.
    assert max(peak) - connections_before <= 3, said(figures)
    assert figures["rss_growth_mb"] < 60, said(figures)

    # A second burst is answered from what the first one read: no new reader at all.
    peak.clear()
    answers = await burst(worker, letter_queries(200), peak, timeout=30)
    assert [status for status, _, _ in answers] == [200] * 200
    assert max(seconds for _, seconds, _ in answers) < 2.0
    assert max(peak) - connections_before <= 3

    # The answers are those the CLI reads from Kafka directly.
    for query in ({"campaign": "cload3", "kind": "scoring-row", "limit": 5}, {"limit": 1}):
        _, body = await worker.get_json(
            "/dashboard/dead-letters?" + "&".join(f"{k}={v}" for k, v in query.items())
        )
        direct = await recent_dead_letters(isolated, **query)  # type: ignore[arg-type]
        assert body["deadLetters"] == direct[:200], query
        assert all(len(letter["raw"]) <= 501 for letter in body["deadLetters"])


async def produce_campaigns(settings: Settings, count: int) -> None:
    """``count`` campaigns in the tally, each with counts and a run announced (not settled),
    as the ledger and the ingestor would send them."""
    producer = kafka.producer(settings)
    await producer.start()
    try:
        for n in range(count):
            campaign = f"cmany{n:05d}"
            key = campaign.encode()
            partition = partition_for(key, settings.topic_partitions)
            announce = RunAnnouncement(
                runId=f"run-{n}", campaignId=campaign, key=f"f{n}.csv", valid=10, invalid=1
            )
            partial = PartialCounts(campaignId=campaign, partition=0, verified=n, watermark=0)
            for message in (AnnounceMessage(announce=announce), PartialMessage(partial=partial)):
                await producer.send(
                    settings.partials_topic, message.to_bytes(), key=key, partition=partition
                )
        await producer.flush()
    finally:
        await producer.stop()


async def test_every_console_route_answers_hundreds_of_pollers_from_one_summary(
    isolated: Settings, worker: WorkerProcess
) -> None:
    campaigns = 3_000
    await produce_dead_letters(isolated, 500)
    await produce_campaigns(isolated, campaigns)

    def listed(answer: tuple[int, Any]) -> int:
        body = answer[1]
        return answer[0] == 200 and body.get("total", len(body["campaigns"])) >= campaigns

    await eventually(
        lambda: worker.get_json("/dashboard/campaigns?limit=500", timeout=60), listed, timeout=120
    )
    paths = [
        "/dashboard/campaigns?limit=50",
        "/dashboard/runs?limit=100",
        "/dashboard/runs?campaign=cmany00007&limit=100",
        "/dashboard/workers",
        "/dashboard/dead-letters?limit=20",
        "/campaigns/cmany00007/counts/windows",
        "/campaigns/cmany00007/counts",
        "/worker/activity",
        "/dashboard/console?campaign=cmany00007&runsCampaign=cmany00007&lettersCampaign=cload1",
        "/dashboard/console",
    ] * 40
    peak: list[int] = []
    rss_before = worker.rss_mb()
    started = time.monotonic()
    answers = await burst(worker, paths, peak, timeout=30)
    figures = {
        "seconds": time.monotonic() - started,
        "slowest": max(seconds for _, seconds, _ in answers),
        "rss_growth_mb": worker.rss_mb() - rss_before,
    }
    assert [status for status, _, _ in answers] == [200] * len(paths)
    assert figures["slowest"] < 5.0, said(figures)
    assert figures["rss_growth_mb"] < 60, said(figures)

    # The page's campaigns: the newest 50 and how many there are, not all 3,000.
    listing = orjson.loads(answers[0][2])
    assert len(answers[0][2]) < 10_000 and listing["total"] == campaigns
    _, local = await worker.get_json("/campaigns/local?limit=50")
    newest = [c["lastRunAt"] for c in local["campaigns"]]
    assert newest == sorted(newest, reverse=True) and None not in newest
    assert [c["campaignId"] for c in listing["campaigns"]] == [
        c["campaignId"] for c in local["campaigns"]
    ]
    runs = orjson.loads(answers[1][2])["runs"]
    announced = [run["announcedAt"] for run in runs]
    assert len(runs) == 100 and announced == sorted(announced, reverse=True)
    assert announced[0] == newest[0]
    assert [r["runId"] for r in orjson.loads(answers[2][2])["runs"]] == ["run-7"]
    assert orjson.loads(answers[6][2])["verified"] == 7

    # The page's one request a refresh holds what the routes answer.
    page = orjson.loads(answers[9][2])
    assert page["selected"] == listing["campaigns"][0]["campaignId"]
    assert page["campaigns"] == listing and page["runs"] == orjson.loads(answers[1][2])
    assert page["deadLetters"] == orjson.loads(answers[4][2])
    chosen = orjson.loads(answers[8][2])
    assert chosen["selected"] == "cmany00007"
    assert chosen["windows"] == orjson.loads(answers[5][2])
    assert chosen["runs"] == orjson.loads(answers[2][2])
