"""Scoring-file ingestion against the real broker and moto: SPEC 2.1, every bad input."""

from __future__ import annotations

import asyncio
import gzip
import subprocess
import uuid
from pathlib import Path

import orjson
import pytest

from tests.support.aws import put_object
from tests.support.kafka import read_committed, score_records
from tests.support.rows import SCORING_HEADER, scoring_row
from tests.support.waiting import eventually
from vfstream import kafka
from vfstream.dev.workers import WorkerProcess, run_cli
from vfstream.settings import Settings
from vfstream.sources.s3.ingestor import ScoringFileIngestor

pytestmark = pytest.mark.integration

# A copy of ../shared/samples: the SPEC's sample file, whose counts its README gives.
SAMPLE_NAME = "registrants.c1001.summer-tour.20261020T120000Z.cleaned.prepared.merged.csv"
SAMPLE_PATH = Path(__file__).parents[1] / "data" / SAMPLE_NAME
HEADER = SCORING_HEADER
row = scoring_row


def sample_bytes() -> bytes:
    return SAMPLE_PATH.read_bytes()


def scoring_key(campaign: str, stamp: str = "20261020T120000Z", gz: bool = False) -> str:
    return f"scrubbed/registrants.{campaign}.test-run.{stamp}.cleaned.prepared.merged.csv" + (
        ".gz" if gz else ""
    )


def campaign_id() -> str:
    return "c" + uuid.uuid4().hex[:8]


async def committed_keys(settings: Settings, topic: str, prefix: str) -> list[str]:
    """The fan keys of the committed score records whose keys start with ``prefix``."""
    assert topic == settings.score_records_topic
    return [c.key for c in await score_records(settings) if c.key.startswith(prefix)]


async def dead_letters(settings: Settings, object_key: str) -> list[dict]:
    letters = [
        orjson.loads(m.value) for m in await read_committed(settings, settings.dead_letter_topic)
    ]
    return [letter for letter in letters if letter.get("key") == object_key]


async def ingest(settings: Settings, key: str, body: bytes, *, force: bool = False):
    await put_object(settings, key, body)
    return await ScoringFileIngestor(settings).ingest(settings.scoring_bucket, key, force=force)


async def test_sample_file_gives_the_spec_counts(isolated: Settings, worker: WorkerProcess) -> None:
    key = f"scrubbed/{SAMPLE_NAME}"
    summary = await ingest(isolated, key, sample_bytes(), force=True)
    assert summary.status == "ingested"
    assert (summary.rows_in, summary.valid, summary.invalid, summary.produced) == (7, 5, 2, 5)

    counts = await eventually(
        lambda: worker.get_json("/campaigns/c1001/counts"),
        lambda answer: answer[0] == 200 and answer[1]["verified"] + answer[1]["rejected"] == 4,
    )
    assert counts[1] == {"campaignId": "c1001", "verified": 2, "rejected": 2, "selected": 1}

    status, fan = await worker.get_json("/campaigns/c1001/fans/u1001")
    assert status == 200
    assert fan["email"] == "ana.ruiz@example.com"
    assert fan["rank0"] is True
    assert [e["eventId"] for e in fan["events"]] == ["ev10", "ev11"]
    status, fan = await worker.get_json("/campaigns/c1001/fans/u1002")
    assert fan["rank0"] is False and fan["lastName"] == "Lee, Jr." and fan["verdict"] is None
    status, _ = await worker.get_json("/campaigns/c1001/fans/u1005")
    assert status == 404

    letters = await dead_letters(isolated, key)
    by_line = {letter["line"]: letter for letter in letters}
    assert set(by_line) == {7, 8}
    assert any("id" in reason for reason in by_line[7]["reasons"])
    assert any(reason.startswith("score") for reason in by_line[8]["reasons"])
    assert by_line[8]["raw"].startswith("u1006,u1006000,c1001")


async def test_same_object_twice_is_skipped_unless_forced(isolated: Settings) -> None:
    campaign = campaign_id()
    key = scoring_key(campaign)
    body = "\n".join([HEADER, row(campaign, "u1"), row(campaign, "u2")]).encode()
    first = await ingest(isolated, key, body)
    again = await ScoringFileIngestor(isolated).ingest(isolated.scoring_bucket, key)
    forced = await ScoringFileIngestor(isolated).ingest(isolated.scoring_bucket, key, force=True)
    assert (first.status, again.status, forced.status) == ("ingested", "skipped", "ingested")
    assert again.produced == 0
    keys = await committed_keys(isolated, isolated.score_records_topic, campaign)
    assert sorted(keys) == sorted([f"{campaign}:u1", f"{campaign}:u2"] * 2)


async def test_new_etag_of_same_key_is_ingested(isolated: Settings) -> None:
    campaign = campaign_id()
    key = scoring_key(campaign)
    await ingest(isolated, key, "\n".join([HEADER, row(campaign, "u1")]).encode())
    second = await ingest(isolated, key, "\n".join([HEADER, row(campaign, "u2")]).encode())
    assert second.status == "ingested" and second.produced == 1


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data)


FILE_FAULTS = {
    "bad-key": ("scrubbed/registrants.missing-parts.csv", b"x", "does not match"),
    "empty-file": (None, b"", "no header row"),
    "blank-header": (None, b"\n\n", "no header row"),
    "missing-required-column": (
        None,
        b"globalUserId,id,campaign_id,event_id,score\nu1,u1000,c,e,0.5\n",
        "isVerified",
    ),
    "corrupt-gzip": ("gz", b"\x1f\x8b\x08\x00garbage-not-deflate" * 10, "gzip"),
    "not-gzip-at-all": ("gz", b"plain text, not gzip\n", "gzip"),
}


@pytest.mark.parametrize("fault", sorted(FILE_FAULTS))
async def test_file_level_fault_fails_the_file_and_ingests_nothing(
    isolated: Settings, fault: str
) -> None:
    campaign = campaign_id()
    key_hint, body, message = FILE_FAULTS[fault]
    if key_hint is None:
        key = scoring_key(campaign)
    elif key_hint == "gz":
        key = scoring_key(campaign, gz=True)
    else:
        key = key_hint
    summary = await ingest(isolated, key, body)
    assert summary.status == "failed"
    assert message in (summary.error or "")
    assert summary.produced == 0
    assert await committed_keys(isolated, isolated.score_records_topic, campaign) == []


async def test_truncated_gzip_ingests_none_of_the_rows_before_the_fault(
    isolated: Settings,
) -> None:
    campaign = campaign_id()
    rows = [row(campaign, f"u{i}") for i in range(5000)]
    whole = _gzip("\n".join([HEADER, *rows]).encode())
    key = scoring_key(campaign, gz=True)
    summary = await ingest(isolated, key, whole[: len(whole) * 3 // 4])
    assert summary.status == "failed"
    assert "gzip" in (summary.error or "")
    assert summary.rows_in > 0, "the fault must come after some rows were read"
    assert await committed_keys(isolated, isolated.score_records_topic, campaign) == []
    letters = await dead_letters(isolated, key)
    assert [letter["kind"] for letter in letters] == ["scoring-file"]


async def test_whole_gzip_file_is_ingested(isolated: Settings) -> None:
    campaign = campaign_id()
    rows = [row(campaign, f"u{i}") for i in range(300)]
    summary = await ingest(
        isolated, scoring_key(campaign, gz=True), _gzip("\n".join([HEADER, *rows]).encode())
    )
    assert (summary.status, summary.valid, summary.produced) == ("ingested", 300, 300)


def _bad_rows(campaign: str) -> dict[str, tuple[str, str]]:
    return {
        "missing-required": (row(campaign, "bad", globalUserId="", id="bad000"), "globalUserId"),
        "score-out-of-range": (row(campaign, "bad", score="1.7"), "score"),
        "score-not-a-number": (row(campaign, "bad", score="high"), "score"),
        "bad-bool": (row(campaign, "bad", isVerified="maybe"), "isVerified"),
        "id-without-rank": (row(campaign, "bad", id="bad"), "id"),
        "id-of-another-fan": (row(campaign, "bad", id="other000"), "id"),
        "campaign-mismatch": (row(campaign, "bad", campaign_id="elsewhere"), "campaign_id"),
        "too-many-fields": (row(campaign, "bad") + ",extra", "fields"),
        "longer-than-64k": (row(campaign, "bad", review_notes="x" * 70_000), "64 KiB"),
        "invalid-utf8": (row(campaign, "bad", firstName="\udcff\udcfe"), "UTF-8"),
    }


BAD_ROW_KINDS = sorted(_bad_rows("c").keys())


@pytest.mark.parametrize("kind", BAD_ROW_KINDS)
async def test_bad_row_is_dead_lettered_and_valid_rows_are_kept(
    isolated: Settings, kind: str
) -> None:
    campaign = campaign_id()
    bad, reason_word = _bad_rows(campaign)[kind]
    text = "\n".join([HEADER, row(campaign, "good1"), bad, row(campaign, "good2")]) + "\n"
    body = text.encode("utf-8", "surrogateescape")
    key = scoring_key(campaign)
    summary = await ingest(isolated, key, body)
    assert (summary.status, summary.valid, summary.invalid) == ("ingested", 2, 1)
    keys = await committed_keys(isolated, isolated.score_records_topic, campaign)
    assert sorted(keys) == [f"{campaign}:good1", f"{campaign}:good2"]
    letters = await dead_letters(isolated, key)
    assert len(letters) == 1
    letter = letters[0]
    assert letter["line"] == 3
    assert letter["campaignId"] == campaign
    assert any(reason_word in reason for reason in letter["reasons"]), letter["reasons"]
    assert (
        letter["raw"][:20]
        == bad.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")[:20]
    )


async def test_bom_crlf_and_quoted_newlines_are_accepted(isolated: Settings) -> None:
    campaign = campaign_id()
    lines = [
        HEADER,
        row(campaign, "u1", lastName='"Lee, Jr."'),
        row(campaign, "u2", review_notes='"line one\r\nline two"'),
        row(campaign, "u3", firstName='"O""Neil"'),
    ]
    body = b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n"
    summary = await ingest(isolated, scoring_key(campaign), body)
    assert (summary.status, summary.valid, summary.invalid) == ("ingested", 3, 0)
    records = [c.record for c in await score_records(isolated) if c.key.startswith(campaign)]
    by_user = {r["globalUserId"]: r for r in records}
    assert by_user["u1"]["lastName"] == "Lee, Jr."
    assert by_user["u3"]["firstName"] == 'O"Neil'
    assert by_user["u3"]["source"]["line"] == 5  # the quoted newline moved it down a line


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(settings, *args, timeout=120)


async def test_cli_ingest_prints_a_json_summary(isolated: Settings) -> None:
    campaign = campaign_id()
    key = scoring_key(campaign)
    await put_object(isolated, key, "\n".join([HEADER, row(campaign, "u1")]).encode())
    done = _cli(isolated, "ingest", "--no-progress", f"s3://{isolated.scoring_bucket}/{key}")
    assert done.returncode == 0, done.stderr
    summary = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert {k: summary[k] for k in ("status", "in", "valid", "invalid", "produced")} == {
        "status": "ingested",
        "in": 1,
        "valid": 1,
        "invalid": 0,
        "produced": 1,
    }
    assert summary["seconds"] >= 0


async def test_cli_ingest_refuses_a_bad_url_and_a_missing_object(isolated: Settings) -> None:
    bad_url = _cli(isolated, "ingest", "http://not-s3/x")
    assert bad_url.returncode == 2 and "s3://" in bad_url.stderr
    missing = _cli(
        isolated, "ingest", "--no-progress", f"s3://{isolated.scoring_bucket}/{scoring_key('nope')}"
    )
    assert missing.returncode == 1 and "does not exist" in missing.stderr


async def test_s3_notification_starts_ingestion_in_the_worker(
    isolated: Settings, tmp_path: Path
) -> None:
    from vfstream.aws import aws_client

    async with aws_client(isolated, "sqs") as sqs:
        url = (await sqs.get_queue_url(QueueName=isolated.notification_queue))["QueueUrl"]
        await sqs.purge_queue(QueueUrl=url)
    listening = isolated.model_copy(update={"listen_for_notifications": True})
    proc = WorkerProcess(listening, "listener", tmp_path / "logs")
    proc.start()
    try:
        await proc.wait_ready()
        campaign = campaign_id()
        body = "\n".join([HEADER, row(campaign, "u1"), row(campaign, "u2", isVerified="no")])
        await put_object(isolated, scoring_key(campaign), body.encode())
        # The run is announced before its records are applied: wait for the counts.
        expected = {"campaignId": campaign, "verified": 1, "rejected": 1, "selected": 0}
        await eventually(
            lambda: proc.get_json(f"/campaigns/{campaign}/counts"),
            lambda answer: answer == (200, expected),
        )
    finally:
        proc.stop()


async def test_a_plain_consumer_outside_vfstream_reads_every_record_of_the_batches(
    isolated: Settings,
) -> None:
    """The score-record topic's format (README "Score batches") read with nothing of
    vfstream: aiokafka and the standard library's json."""
    import json
    import zlib

    from aiokafka import TopicPartition

    campaign = campaign_id()
    fans = [f"u{n}" for n in range(300)]
    settings = isolated.model_copy(update={"score_batch_records": 20})
    body = "\n".join([HEADER, *(row(campaign, fan) for fan in fans)]).encode()
    summary = await ingest(settings, scoring_key(campaign), body)
    assert summary.valid == 300
    consumer = kafka.consumer(isolated, isolation_level="read_committed")
    await consumer.start()
    try:
        parts = [TopicPartition(isolated.score_records_topic, p) for p in range(6)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        found: dict[str, int] = {}
        batches = 0
        deadline = asyncio.get_running_loop().time() + 60
        # The commit markers land a moment after the commit: read until every record came.
        while len(found) < len(fans) and asyncio.get_running_loop().time() < deadline:
            for tp, messages in (await consumer.getmany(timeout_ms=1000)).items():
                for message in messages:
                    batch = json.loads(message.value)
                    assert batch["v"] == 1 and 1 <= len(batch["records"]) <= 20
                    batches += 1
                    for record in batch["records"]:
                        key = f"{record['campaignId']}:{record['globalUserId']}".encode()
                        assert zlib.crc32(key) % 6 == tp.partition  # the documented hash
                        found[record["globalUserId"]] = record["rank"]
    finally:
        await consumer.stop()
    assert found == dict.fromkeys(fans, 0)
    assert batches >= 300 // 20
