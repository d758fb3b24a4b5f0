"""Fault harness (issue #7): three workers on one machine, standby replicas on, 6 partitions.

Each scenario ends with the same check (``tests.support.standard_check``): counts = the
generator's independent truth, the changelogs recount to the same numbers, DynamoDB = the
state, and one Slack report per changed settled run.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.support.services import Answer, scripted_service
from tests.support.standard_check import check_everything, counts_reach
from tests.support.tcpproxy import TcpProxy
from tests.support.waiting import eventually
from vfstream.dev.generator import (
    GeneratorConfig,
    ScoringRun,
    expected_counts,
    generate_run,
    rescore,
)
from vfstream.dev.scenario import upload_run, wait_for_counts
from vfstream.dev.stack import free_port
from vfstream.dev.workers import WorkerProcess, run_cli
from vfstream.settings import Settings
from vfstream.sources.s3.ingestor import ScoringFileIngestor

pytestmark = [pytest.mark.integration, pytest.mark.faults]

FAULT_FANS = int(os.environ.get("VFSTREAM_FAULT_TEST_FANS", "20000"))


def fleet(settings: Settings, logs: Path, count: int = 3) -> list[WorkerProcess]:
    workers = []
    for number in range(count):
        own = settings.model_copy(
            update={
                "data_dir": settings.data_dir.parent / f"worker-{number}",
                "web_port": free_port(),
                "standby_replicas": 1,
                "mirror_to_dynamodb": True,
            }
        )
        workers.append(WorkerProcess(own, f"worker-{number}", logs))
    return workers


async def ingest(settings: Settings, run: ScoringRun, work: Path) -> None:
    key = await upload_run(settings, run, work)
    summary = await ScoringFileIngestor(settings).ingest(settings.scoring_bucket, key)
    assert summary.status == "ingested", summary.error


async def write_statuses(workers: list[WorkerProcess]) -> Counter[str]:
    """How the workers applied records since they started, summed."""
    total: Counter[str] = Counter()
    for worker in workers:
        _, body = await worker.get_json("/statuses")
        total.update(body["writeStatuses"])
    return total


async def test_kill_9_one_of_three_workers_mid_run_counts_and_mirror_stay_exact(
    isolated: Settings, tmp_path: Path
) -> None:
    run = generate_run(GeneratorConfig(campaign_id="cfleet", campaign_name="T", fans=FAULT_FANS))
    truth = expected_counts([run])["cfleet"]
    workers = fleet(isolated, tmp_path / "logs")
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            await worker.wait_ready(timeout=180)
        await ingest(isolated, run, tmp_path)

        async def processed() -> int:
            total = 0
            for worker in workers:
                _, body = await worker.get_json("/statuses")
                total += body["recordsIn"]
            return total

        await eventually(processed, lambda n: n > run.expected_valid_rows // 3, 600, 0.2)
        victim, survivors = workers[1], [workers[0], workers[2]]
        victim.kill()
        await check_everything(isolated, survivors, "cfleet", truth)
    finally:
        for worker in workers:
            worker.stop()


async def test_aws_down_and_slack_failing_for_30s_lose_and_duplicate_nothing(
    isolated: Settings, tmp_path: Path
) -> None:
    proxy = TcpProxy(isolated.aws_port)
    await proxy.start()
    async with scripted_service() as slack:
        slack.fallback = Answer(200, "ok")
        hook = "/services/T/B/fault"
        settings = isolated.model_copy(
            update={
                "aws_endpoint_url": proxy.url,
                "listen_for_notifications": False,
                "slack_webhook_url": SecretStr(slack.url + hook),
                "slack_give_up_seconds": 600,
            }
        )
        first = generate_run(GeneratorConfig(campaign_id="cdown", campaign_name="T", fans=4000))
        second = rescore(first, flip_ratio=0.2, verdict_change_ratio=0.1, seed=3)
        workers = fleet(settings, tmp_path / "logs")
        for worker in workers:
            worker.start()
        try:
            for worker in workers:
                await worker.wait_ready(timeout=180)
            await ingest(isolated, first, tmp_path)
            await proxy.cut()
            slack.fallback = Answer(500, "down")
            await ingest(isolated, second, tmp_path)  # straight to moto and Kafka
            await asyncio.sleep(30)
            await proxy.restore()
            slack.fallback = Answer(200, "ok")
            truth = expected_counts([first, second])["cdown"]
            await check_everything(isolated, workers, "cdown", truth)
            posts = await eventually(
                lambda: asyncio.sleep(0, slack.bodies(hook, succeeded=True)),
                lambda bodies: len(bodies) == 2,
                timeout=180,
            )
            await asyncio.sleep(10)
            assert len(slack.bodies(hook, succeeded=True)) == 2
            texts = [body["text"] for body in posts]
            assert f"{truth['verified']:,} verified" in texts[-1]
        finally:
            for worker in workers:
                worker.stop()
            await proxy.cut()


async def test_replay_to_earliest_twice_then_a_new_file_counts_exact_one_report_each(
    isolated: Settings, tmp_path: Path
) -> None:
    async with scripted_service() as slack:
        slack.fallback = Answer(200, "ok")
        hook = "/services/T/B/replay"
        settings = isolated.model_copy(
            update={"slack_webhook_url": SecretStr(slack.url + hook), "standby_replicas": 1}
        )
        first = generate_run(GeneratorConfig(campaign_id="ctwice", campaign_name="T", fans=3000))
        second = rescore(first, flip_ratio=0.2, verdict_change_ratio=0.1, seed=9)
        workers = fleet(settings, tmp_path / "logs")

        async def start_all() -> None:
            for worker in workers:
                worker.start()
            for worker in workers:
                await worker.wait_ready(timeout=180)

        def posted() -> list[str]:
            return [body["text"] for body in slack.bodies(hook, succeeded=True)]

        try:
            await start_all()
            await ingest(settings, first, tmp_path)
            truth = expected_counts([first])["ctwice"]
            await wait_for_counts(workers[0], "ctwice", truth, timeout=300)
            await eventually(lambda: asyncio.sleep(0, posted()), lambda p: len(p) == 1, 120)
            for _ in range(2):
                await asyncio.sleep(3)  # let the last offsets commit
                for worker in workers:
                    worker.stop()
                await eventually(
                    lambda: asyncio.to_thread(run_cli, settings, "replay", "--to", "earliest"),
                    lambda done: done.returncode == 0,
                    timeout=60,
                    interval=3,
                )
                await start_all()
                # Every replayed record comes again (at least once: a rebalance while the
                # three start may hand a partition over before its offsets are committed) and
                # changes nothing, as the state already holds it.
                statuses = await eventually(
                    lambda: write_statuses(workers),
                    lambda n: n["unchanged"] + n["stale"] >= first.expected_valid_rows,
                    timeout=300,
                )
                assert statuses["created"] == statuses["updated"] == 0, statuses
                for worker in workers:
                    await counts_reach(settings, worker, "ctwice", truth, timeout=120)
            await ingest(settings, second, tmp_path)
            truth = expected_counts([first, second])["ctwice"]
            await check_everything(settings, workers, "ctwice", truth)
            await eventually(lambda: asyncio.sleep(0, posted()), lambda p: len(p) == 2, 120)
            await asyncio.sleep(10)
            assert len(posted()) == 2
            assert f"{truth['verified']:,} verified" in posted()[1]
        finally:
            for worker in workers:
                worker.stop()
