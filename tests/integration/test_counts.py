"""Exact counts on the real broker (SPEC 3): re-scoring, stale files, kill -9, replay, reconcile."""

from __future__ import annotations

import asyncio
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from tests.support.aws import put_object
from tests.support.waiting import eventually
from vfstream import kafka
from vfstream.dev.generator import (
    GeneratorConfig,
    ScoringRun,
    expected_counts,
    generate_run,
    rescore,
)
from vfstream.dev.scenario import upload_run, wait_for_counts
from vfstream.dev.workers import WorkerProcess, run_cli
from vfstream.domain.keys import partition_for
from vfstream.settings import Settings
from vfstream.sources.s3.ingestor import ScoringFileIngestor

pytestmark = pytest.mark.integration

KILL_TEST_FANS = int(os.environ.get("VFSTREAM_KILL_TEST_FANS", "60000"))  # ~133k rows


async def ingest_run(settings: Settings, run: ScoringRun, work: Path, *, force: bool = False):
    key = await upload_run(settings, run, work)
    summary = await ScoringFileIngestor(settings).ingest(settings.scoring_bucket, key, force=force)
    assert summary.status == "ingested", summary.error
    return summary


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(settings, *args, timeout=300)


async def statuses(worker: WorkerProcess) -> dict[str, int]:
    _, body = await worker.get_json("/statuses")
    return body["writeStatuses"]


async def test_generated_file_rescoring_and_stale_file_keep_counts_exact(
    isolated: Settings, worker: WorkerProcess, tmp_path: Path
) -> None:
    first = generate_run(
        GeneratorConfig(campaign_id="cexact", campaign_name="tour", fans=4000, seed=11)
    )
    await ingest_run(isolated, first, tmp_path)
    truth = expected_counts([first])["cexact"]
    await wait_for_counts(worker, "cexact", truth, timeout=180)

    # The same file forced again: every record unchanged, counts as they were.
    before = await statuses(worker)
    await ingest_run(isolated, first, tmp_path, force=True)
    await eventually(
        lambda: statuses(worker),
        lambda now: (
            now.get("unchanged", 0) - before.get("unchanged", 0) >= first.expected_valid_rows
        ),
        timeout=180,
    )
    counts, _ = await wait_for_counts(worker, "cexact", truth, timeout=30)
    assert {k: counts[k] for k in truth} == truth

    # A re-scoring run flipping ~10% of fans and changing verdicts.
    second = rescore(first, flip_ratio=0.1, verdict_change_ratio=0.1, seed=12)
    assert second.flipped_verified > 300 and second.changed_verdicts > 300
    await ingest_run(isolated, second, tmp_path)
    truth = expected_counts([first, second])["cexact"]
    await wait_for_counts(worker, "cexact", truth, timeout=180)

    # A file older than the newest one arrives last: all its records are stale.
    older = rescore(first, flip_ratio=0.3, seed=13, scored_at=first.scored_at + timedelta(hours=1))
    assert older.scored_at < second.scored_at
    before = await statuses(worker)
    await ingest_run(isolated, older, tmp_path)
    await eventually(
        lambda: statuses(worker),
        lambda now: now.get("stale", 0) - before.get("stale", 0) >= older.expected_valid_rows,
        timeout=180,
    )
    assert expected_counts([first, second, older])["cexact"] == truth
    counts, _ = await wait_for_counts(worker, "cexact", truth, timeout=30)
    assert {k: counts[k] for k in truth} == truth


async def test_rows_of_an_aborted_file_never_reach_the_state(
    isolated: Settings, worker: WorkerProcess, tmp_path: Path
) -> None:
    # A truncated gzip fails after whole chunks of valid rows were produced inside the
    # file's transaction; the worker must read committed data only, so none of them count.
    broken = generate_run(GeneratorConfig(campaign_id="cabort", campaign_name="t", fans=15000))
    path = tmp_path / "broken.csv.gz"
    broken.write(path, gzip=True)
    data = path.read_bytes()
    await put_object(isolated, broken.gz_object_key, data[: int(len(data) * 0.8)])
    failed = await ScoringFileIngestor(isolated).ingest(
        isolated.scoring_bucket, broken.gz_object_key
    )
    assert failed.status == "failed" and failed.rows_in > 20_000, failed

    good = generate_run(GeneratorConfig(campaign_id="cafter", campaign_name="t", fans=2000))
    await ingest_run(isolated, good, tmp_path)
    await wait_for_counts(worker, "cafter", expected_counts([good])["cafter"], timeout=180)
    # The good file's fans hash to every partition, so every partition is past the aborted rows.
    status, body = await worker.get_json("/campaigns/cabort/counts")
    assert status == 404, body
    _, statuses_now = await worker.get_json("/statuses")
    assert statuses_now["recordsIn"] == good.expected_valid_rows


async def test_kill_9_mid_run_then_restart_counts_exact(isolated: Settings, tmp_path: Path) -> None:
    run = generate_run(
        GeneratorConfig(campaign_id="ckill", campaign_name="tour", fans=KILL_TEST_FANS, seed=21)
    )
    truth = expected_counts([run])["ckill"]
    summary = await ingest_run(isolated, run, tmp_path)
    worker = WorkerProcess(isolated, "victim", tmp_path / "logs")
    worker.start()
    try:
        await worker.wait_ready()
        # Let it get well into the run, then crash it without any chance to clean up.
        await eventually(
            lambda: worker.get_json("/statuses"),
            lambda answer: answer[1]["recordsIn"] > summary.valid // 3,
            timeout=600,
            interval=0.2,
        )
        worker.kill()
        assert not worker.alive()
        worker.start()
        await worker.wait_ready()
        counts, _ = await wait_for_counts(worker, "ckill", truth, timeout=900)
        assert {k: counts[k] for k in truth} == truth
        # Nothing lost or double-counted in the durable state either: the changelogs, which
        # any other worker would recover from, recount to the same numbers. (Counts may run
        # a flush ahead of the changelog, so allow the last flush to land.)
        await eventually(
            lambda: asyncio.to_thread(cli, isolated, "reconcile", "--campaign", "ckill"),
            lambda done: done.returncode == 0 and orjson.loads(done.stdout)["differences"] == 0,
            timeout=60,
            interval=2,
        )
    finally:
        worker.stop()


async def test_replay_to_earliest_keeps_counts_and_rebuild_gives_the_same(
    isolated: Settings, tmp_path: Path
) -> None:
    run = generate_run(
        GeneratorConfig(campaign_id="creplay", campaign_name="t", fans=3000, seed=31)
    )
    truth = expected_counts([run])["creplay"]
    await ingest_run(isolated, run, tmp_path)
    worker = WorkerProcess(isolated, "replayer", tmp_path / "logs")
    worker.start()
    try:
        await worker.wait_ready()
        await wait_for_counts(worker, "creplay", truth, timeout=180)
        await asyncio.sleep(3)  # let the last offsets commit
        worker.stop()

        refused = WorkerProcess(isolated, "holder", tmp_path / "logs")
        refused.start()
        await refused.wait_ready()
        busy = cli(isolated, "replay", "--to", "earliest")
        assert busy.returncode == 2 and "stop every worker" in busy.stderr
        refused.stop()

        # A stopped worker leaves the group at once; a hung shutdown only when its session
        # expires, so allow for that before calling it a failure.
        moved = await eventually(
            lambda: asyncio.to_thread(cli, isolated, "replay", "--to", "earliest"),
            lambda done: done.returncode == 0,
            timeout=45,
            interval=3,
        )
        assert all(p["to"] == 0 for p in orjson.loads(moved.stdout)["partitions"])

        worker.start()
        await worker.wait_ready()
        await eventually(
            lambda: statuses(worker),
            lambda now: now.get("unchanged", 0) >= run.expected_valid_rows,
            timeout=180,
        )
        counts, _ = await wait_for_counts(worker, "creplay", truth, timeout=30)
        assert {k: counts[k] for k in truth} == truth
        worker.stop()

        rebuilt = await eventually(
            lambda: asyncio.to_thread(cli, isolated, "replay", "--rebuild"),
            lambda done: done.returncode == 0,
            timeout=45,
            interval=3,
        )
        assert f"{isolated.app_id}-fan-state-changelog" in orjson.loads(rebuilt.stdout)["deleted"]
        worker.start()
        await worker.wait_ready()
        counts, _ = await wait_for_counts(worker, "creplay", truth, timeout=180)
        assert {k: counts[k] for k in truth} == truth
        now = await statuses(worker)
        assert now.get("created", 0) == run.fans
    finally:
        worker.stop()


@pytest.mark.parametrize(
    ("commit_at", "streamed"),
    [
        # Mid-partition: the first event streamed reveals the gap before it.
        ("2", "rest"),
        # At each partition's end: nothing is streamed; the quiet partitions' tails are read.
        ("999999999", "none"),
    ],
)
async def test_records_committed_past_before_they_were_applied_are_read_and_counted(
    isolated: Settings, tmp_path: Path, commit_at: str, streamed: str
) -> None:
    run = generate_run(GeneratorConfig(campaign_id="cgap", campaign_name="t", fans=2000, seed=41))
    truth = expected_counts([run])["cgap"]
    # Batches of 50 records: each partition holds a dozen or more messages.
    isolated = isolated.model_copy(update={"score_batch_records": 50})
    await ingest_run(isolated, run, tmp_path)
    # Offsets committed past records no worker ever applied, as Faust's bookkeeping can.
    moved = cli(isolated, "replay", "--to", commit_at)
    assert moved.returncode == 0, moved.stderr
    targets = [p["to"] for p in orjson.loads(moved.stdout)["partitions"]]
    # Every partition holds more than 2 batches (and the target is capped at the end).
    assert all(t == 2 for t in targets) if streamed == "rest" else min(targets) > 2
    worker = WorkerProcess(isolated, "gapped", tmp_path / "logs")
    worker.start()
    try:
        await worker.wait_ready()
        counts, _ = await wait_for_counts(worker, "cgap", truth, timeout=180)
        assert {k: counts[k] for k in truth} == truth
        _, body = await worker.get_json("/statuses")
        if streamed == "rest":
            # Batches 0 and 1 (50 records each) of the 6 partitions, read directly; the rest
            # streamed.
            assert body["filledRecords"] == 6 * 2 * 50
            assert body["recordsIn"] == run.expected_valid_rows - 6 * 2 * 50
        else:
            assert body["filledRecords"] == run.expected_valid_rows
            assert body["recordsIn"] == 0
    finally:
        worker.stop()


async def test_replay_refuses_a_bad_target(isolated: Settings) -> None:
    done = cli(isolated, "replay", "--to", "yesterday-ish")
    assert done.returncode == 2 and "--to takes earliest" in done.stderr


async def test_reconcile_reports_nothing_when_healthy_and_fixes_a_corrupted_count(
    isolated: Settings, worker: WorkerProcess, tmp_path: Path
) -> None:
    run = generate_run(GeneratorConfig(campaign_id="crecon", campaign_name="t", fans=2000, seed=41))
    truth = expected_counts([run])["crecon"]
    await ingest_run(isolated, run, tmp_path)
    await wait_for_counts(worker, "crecon", truth, timeout=180)
    await asyncio.sleep(2)  # the counts changelog is written right after the view changes

    healthy = cli(isolated, "reconcile")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert orjson.loads(healthy.stdout)["differences"] == 0

    # Corrupt one partition's contribution with a snapshot that claims to be newer than
    # anything the worker will send, so its own re-announcements cannot heal it.
    _, progress = await worker.get_json("/campaigns/crecon/counts")
    producer = kafka.producer(isolated)
    await producer.start()
    try:
        reported = orjson.loads(cli(isolated, "reconcile", "--campaign", "crecon").stdout)
        assert reported["differences"] == 0
        bogus = {
            "partial": {
                "campaignId": "crecon",
                "partition": 0,
                "verified": 10_000,
                "rejected": 0,
                "selected": 0,
                "watermark": 10**18,
            }
        }
        await producer.send_and_wait(
            isolated.partials_topic,
            key=b"crecon",
            value=orjson.dumps(bogus),
            partition=partition_for(b"crecon", isolated.topic_partitions),
        )
    finally:
        await producer.stop()
    await eventually(
        lambda: worker.get_json("/campaigns/crecon/counts"),
        lambda answer: answer[1]["verified"] != truth["verified"],
    )
    await asyncio.sleep(2)
    found = cli(isolated, "reconcile", "--campaign", "crecon")
    assert found.returncode == 3
    report = orjson.loads(found.stdout)
    assert report["differences"] == 1
    assert report["report"][0]["recounted"]["verified"] == truth["verified"]

    fixed = cli(isolated, "reconcile", "--campaign", "crecon", "--fix")
    assert fixed.returncode == 0 and orjson.loads(fixed.stdout)["fixed"] == 1
    await wait_for_counts(worker, "crecon", truth, timeout=60)
    assert progress["verified"] == truth["verified"]
    await asyncio.sleep(6)  # a re-announcement cycle later, the repair still holds
    again = orjson.loads(cli(isolated, "reconcile", "--campaign", "crecon").stdout)
    assert again["differences"] == 0
