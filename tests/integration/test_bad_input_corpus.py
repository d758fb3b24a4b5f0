"""Bad-input corpus (issue #7): malformed CSV rows and files, fanlist rows and files, Kinesis
records and HTTP parameters, all fed to one running system.

Each case must be refused with its own clear error, and the valid data around it must come
through intact. The scenario ends with the fault harness's standard check: counts = the
generator's independent truth, the changelogs recount the same, DynamoDB = the state, and
exactly one Slack report for the one run that changed the counts.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from tests.support.aws import put_object
from tests.support.kinesis import create_stream, put_records, read_stream, unique_stream
from tests.support.rows import SCORING_HEADER, feed_document, scoring_row
from tests.support.services import Answer, scripted_service
from tests.support.standard_check import check_everything
from tests.support.waiting import eventually
from vfstream.dev.generator import GeneratorConfig, expected_counts, generate_run, rescore
from vfstream.dev.scenario import wait_for_counts
from vfstream.dev.workers import WorkerProcess
from vfstream.kafka.reads import read_committed
from vfstream.settings import Settings
from vfstream.sources.kinesis_bridge import KinesisBridge
from vfstream.sources.s3.fanlist_direct import FanlistIngestor
from vfstream.sources.s3.ingestor import ScoringFileIngestor

pytestmark = [pytest.mark.integration, pytest.mark.faults]

CAMPAIGN = "ccorpus"
FEED_CAMPAIGN = "ccorpusfeed"
FANLIST_CAMPAIGN = "fcorpus"
HOOK = "/services/T/B/corpus"


@dataclass(frozen=True)
class Refusal:
    """One corpus case: where the bad input went in and the error it must be refused with."""

    source: str
    case: str
    expected: str


class Corpus:
    """The cases run so far, each with the error the system actually gave."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], tuple[Refusal, str]] = {}

    def record(self, refusal: Refusal, error: str) -> None:
        assert (refusal.source, refusal.case) not in self.seen, refusal
        self.seen[(refusal.source, refusal.case)] = (refusal, error)

    def assert_each_refused_as_expected(self) -> None:
        wrong = {
            key: (refusal.expected, error)
            for key, (refusal, error) in self.seen.items()
            if refusal.expected not in error
        }
        assert not wrong, wrong


def scoring_key(campaign: str, stamp: str, *, gz: bool = False) -> str:
    suffix = ".gz" if gz else ""
    return f"scrubbed/registrants.{campaign}.corpus.{stamp}.cleaned.prepared.merged.csv{suffix}"


async def dead_letters(settings: Settings) -> list[dict[str, Any]]:
    return [
        orjson.loads(m.value) for m in await read_committed(settings, settings.dead_letter_topic)
    ]


@pytest.fixture
async def system(isolated: Settings, tmp_path: Path) -> AsyncIterator[tuple[Settings, Any]]:
    """One worker that mirrors to DynamoDB and reports to a local Slack, plus a Kinesis feed
    and a campaign-data stream of this test's own."""
    feed_stream = unique_stream("vf-corpus-feed")
    data_stream = unique_stream("vf-corpus-data")
    await create_stream(isolated, feed_stream)
    await create_stream(isolated, data_stream)
    async with scripted_service() as slack:
        slack.fallback = Answer(200, "ok")
        settings = isolated.model_copy(
            update={
                "mirror_to_dynamodb": True,
                "slack_webhook_url": SecretStr(slack.url + HOOK),
                "bridge_stream": feed_stream,
                "bridge_poll_seconds": 0.1,
                "campaign_data_stream": data_stream,
            }
        )
        worker = WorkerProcess(settings, "corpus", tmp_path / "logs")
        worker.start()
        try:
            await worker.wait_ready(timeout=180)
            yield settings, (worker, slack)
        finally:
            worker.stop()


async def test_bad_input_corpus_each_refused_clearly_and_the_valid_data_exact(
    system: tuple[Settings, Any], tmp_path: Path
) -> None:
    settings, (worker, slack) = system
    corpus = Corpus()

    # ---- CSV rows: the generator's seven kinds inside a real run, three more appended ----
    run = generate_run(
        GeneratorConfig(campaign_id=CAMPAIGN, campaign_name="corpus", fans=1500, invalid_ratio=0.03)
    )
    truth = expected_counts([run])[CAMPAIGN]
    path = tmp_path / "corpus.csv"
    run.write(path)
    appended = {
        "invalid-utf8": (
            scoring_row(CAMPAIGN, "zbad1", firstName="\udcff\udcfe").encode(
                "utf-8", "surrogateescape"
            ),
            "UTF-8",
        ),
        "longer-than-64k": (
            scoring_row(CAMPAIGN, "zbad2", review_notes="x" * 70_000).encode(),
            "64 KiB",
        ),
        "id-of-another-fan": (scoring_row(CAMPAIGN, "zbad3", id="other000").encode(), "id"),
    }
    body = path.read_bytes()
    assert body.endswith(b"\n")
    first_appended_line = run.expected_rows + 2
    body += b"".join(line + b"\n" for line, _ in appended.values())
    key = scoring_key(CAMPAIGN, "20261020T120000Z")
    await put_object(settings, key, body)
    summary = await ScoringFileIngestor(settings).ingest(settings.scoring_bucket, key)
    assert summary.status == "ingested", summary.error
    assert (summary.valid, summary.invalid) == (
        run.expected_valid_rows,
        run.expected_invalid_rows + len(appended),
    )

    row_letters = {
        letter["line"]: letter
        for letter in await dead_letters(settings)
        if letter.get("key") == key and letter["kind"] == "scoring-row"
    }
    assert len(row_letters) == run.expected_invalid_rows + len(appended)
    kind_reason = {
        "id_without_rank": "id:",
        "score_out_of_range": "score:",
        "score_not_numeric": "score:",
        "bad_bool": ":",  # isVerified or verdict, whichever the generator spoiled
        "empty_required": "required value is missing",
        "wrong_campaign": "campaign_id:",
        "too_many_fields": "fields but the header has",
    }
    first_of_kind = {}
    for invalid in run.invalid_rows():
        first_of_kind.setdefault(invalid.kind, invalid)
    assert set(first_of_kind) == set(kind_reason), "every generator kind must occur"
    for kind, invalid in first_of_kind.items():
        letter = row_letters[invalid.line]
        assert letter["raw"].startswith(invalid.global_user_id) or kind == "empty_required"
        corpus.record(Refusal("csv-row", kind, kind_reason[kind]), "; ".join(letter["reasons"]))
    for offset, (case, (_, expected)) in enumerate(appended.items()):
        letter = row_letters[first_appended_line + offset]
        corpus.record(Refusal("csv-row", case, expected), "; ".join(letter["reasons"]))

    # ---- CSV files: each refused whole; the truncated one would have changed the counts ----
    changed = rescore(run, flip_ratio=0.3, verdict_change_ratio=0.2, seed=5)
    changed_path = tmp_path / "changed.csv.gz"
    changed.write(changed_path, gzip=True)
    whole_gzip = changed_path.read_bytes()
    missing_column = b"globalUserId,id,campaign_id,event_id,score\nu1,u1000,ccorpus,e,0.5\n"
    repeated_column = f"{SCORING_HEADER},score\n".encode()
    file_faults: dict[str, tuple[str, bytes, str]] = {
        "key-not-a-scoring-key": ("scrubbed/registrants.missing-parts.csv", b"x", "does not match"),
        "empty-file": (scoring_key(CAMPAIGN, "20261021T000001Z"), b"", "no header row"),
        "blank-header": (scoring_key(CAMPAIGN, "20261021T000002Z"), b"\n\n", "no header row"),
        "missing-required-column": (
            scoring_key(CAMPAIGN, "20261021T000003Z"),
            missing_column,
            "isVerified",
        ),
        "header-repeats-a-column": (
            scoring_key(CAMPAIGN, "20261021T000004Z"),
            repeated_column,
            "repeats columns",
        ),
        "corrupt-gzip": (
            scoring_key(CAMPAIGN, "20261021T000005Z", gz=True),
            b"\x1f\x8b\x08\x00garbage-not-deflate" * 10,
            "gzip",
        ),
        "not-gzip-at-all": (
            scoring_key(CAMPAIGN, "20261021T000006Z", gz=True),
            b"plain text, not gzip\n",
            "gzip",
        ),
        "truncated-gzip-after-valid-rows": (
            scoring_key(CAMPAIGN, "20261021T000007Z", gz=True),
            whole_gzip[: len(whole_gzip) * 3 // 4],
            "gzip",
        ),
    }
    for case, (fault_key, fault_body, expected) in file_faults.items():
        await put_object(settings, fault_key, fault_body)
        failed = await ScoringFileIngestor(settings).ingest(settings.scoring_bucket, fault_key)
        assert failed.status == "failed", (case, failed)
        assert failed.produced == 0, case
        corpus.record(Refusal("csv-file", case, expected), failed.error or "")
    # A fault after thousands of valid rows: the file's transaction is aborted, not half-kept.
    assert gzip.decompress(whole_gzip).count(b"\n") > 3000

    # ---- fanlist rows and files -----------------------------------------------------------
    fanlist_key = f"fanlist/scored/{FANLIST_CAMPAIGN}/1792497600000.csv"
    fanlist_rows = {
        "email-malformed-and-no-member": (",bob@@example.com,,0.70", "not an email address"),
        "no-identifier-at-all": (",,g9,0.60", "one must identify the fan"),
        "no-score": ("m3,,,", "score: required value is missing"),
        "score-not-a-number": ("m4,,,abc", "score: Input should be a valid number"),
    }
    lines = ["memberId,email,globalUserId,score", "m1,m1@example.com,g1,0.90", "m2,,,0.50"]
    lines += [line for line, _ in fanlist_rows.values()]
    await put_object(settings, fanlist_key, ("\n".join(lines) + "\n").encode())
    stored = await FanlistIngestor(settings).ingest(settings.scoring_bucket, fanlist_key)
    assert stored.status == "stored", stored.error
    assert stored.as_dict()["input"] == {"in": 6, "invalid": 4, "duplicate": 0, "valid": 2}
    assert stored.as_dict()["dynamo"]["out"] == 2 and stored.as_dict()["stream"]["out"] == 2
    fanlist_letters = {
        letter["line"]: letter
        for letter in await dead_letters(settings)
        if letter.get("key") == fanlist_key
    }
    for line, (case, (_, expected)) in enumerate(fanlist_rows.items(), start=4):
        reasons = "; ".join(fanlist_letters[line]["reasons"])
        corpus.record(Refusal("fanlist-row", case, expected), reasons)
    streamed = await read_stream(settings, settings.campaign_data_stream)
    assert sorted(partition_key for partition_key, _ in streamed) == ["g1", "m2"]

    fanlist_file_faults = {
        "key-without-timestamp": (
            f"fanlist/scored/{FANLIST_CAMPAIGN}/not-a-time.csv",
            "memberId,email,globalUserId,score\nm7,,,0.5\n",
            "invalid timestamp",
        ),
        "header-without-score": (
            f"fanlist/scored/{FANLIST_CAMPAIGN}/1792497600001.csv",
            "memberId,email\nm8,a@b.c\n",
            "lacks required columns: score",
        ),
    }
    for case, (fault_key, text, expected) in fanlist_file_faults.items():
        await put_object(settings, fault_key, text.encode())
        failed = await FanlistIngestor(settings).ingest(settings.scoring_bucket, fault_key)
        assert failed.status == "failed", (case, failed)
        corpus.record(Refusal("fanlist-file", case, expected), failed.error or "")
    assert len(await read_stream(settings, settings.campaign_data_stream)) == 2

    # ---- Kinesis records, copied by the bridge beside valid ones ----------------------------
    valid_feed = [
        feed_document(
            fan,
            campaign=FEED_CAMPAIGN,
            isVerified="true" if fan % 3 else "false",
            verdict="true" if fan % 4 == 0 else "",
        )
        for fan in range(40)
    ]
    feed_truth = {
        "verified": sum(1 for d in valid_feed if d["isVerified"] == "true"),
        "rejected": sum(1 for d in valid_feed if d["isVerified"] == "false"),
        "selected": sum(1 for d in valid_feed if d["verdict"] == "true"),
    }
    no_campaign = feed_document(90, campaign=FEED_CAMPAIGN)
    del no_campaign["campaignId"]
    bad_feed: dict[str, tuple[Any, str]] = {
        "not-json": (b"{not json", "not valid JSON"),
        "json-array": (orjson.dumps([valid_feed[0]]), "expected a JSON object"),
        "no-campaignId": (no_campaign, "campaignId: required value is missing"),
        "score-out-of-range": (
            feed_document(91, campaign=FEED_CAMPAIGN, score=7),
            "score:",
        ),
        "campaign-mismatch": (
            {**feed_document(92, campaign=FEED_CAMPAIGN), "campaignId": "other"},
            "differs from the file's campaign",
        ),
    }
    documents = [*valid_feed[:20], *(doc for doc, _ in bad_feed.values()), *valid_feed[20:]]
    put = await put_records(settings, settings.bridge_stream, documents)
    copied = await KinesisBridge(settings, stream=settings.bridge_stream).drain()
    assert (copied.records, copied.valid, copied.invalid) == (45, 40, 5)
    kinesis_letters = {
        (letter["shardId"], letter["sequenceNumber"]): letter
        for letter in await dead_letters(settings)
        if letter["kind"] == "kinesis-record" and letter["stream"] == settings.bridge_stream
    }
    for index, (case, (_, expected)) in enumerate(bad_feed.items(), start=20):
        where = (put[index].shard_id, put[index].sequence_number)
        letter = kinesis_letters[where]
        assert letter["raw"] == put[index].data.decode()
        corpus.record(Refusal("kinesis-record", case, expected), "; ".join(letter["reasons"]))

    # ---- HTTP parameters of the web views ---------------------------------------------------
    await wait_for_counts(worker, CAMPAIGN, truth, timeout=300)
    http_cases = {
        "unknown-campaign-counts": (f"/campaigns/nope{CAMPAIGN}/counts", 404, "unknown campaign"),
        "unknown-campaign-progress": (
            f"/campaigns/nope{CAMPAIGN}/progress",
            404,
            "unknown campaign",
        ),
        "unknown-campaign-reports": (f"/campaigns/nope{CAMPAIGN}/reports", 404, "no reports"),
        "unknown-fan": (f"/campaigns/{CAMPAIGN}/fans/nobody", 404, "no state for fan"),
        "since-not-a-time": (
            f"/campaigns/{CAMPAIGN}/counts/windows?since=yesterday",
            400,
            "since: not an ISO time",
        ),
        "until-not-finite": (f"/campaigns/{CAMPAIGN}/counts/windows?until=nan", 400, "finite"),
        "since-after-until": (
            f"/campaigns/{CAMPAIGN}/counts/windows?since=2026-10-21T00:00:00Z"
            "&until=2026-10-20T00:00:00Z",
            400,
            "after until",
        ),
        "campaigns-without-eventId": ("/campaigns", 400, "eventId"),
    }
    for case, (path_qs, status, expected) in http_cases.items():
        answer_status, answer = await worker.get_json(path_qs)
        assert answer_status == status, (case, answer_status, answer)
        corpus.record(Refusal("http", case, expected), answer["error"])

    # ---- every case refused as expected ---------------------------------------------------
    corpus.assert_each_refused_as_expected()
    sources = {source for source, _ in corpus.seen}
    assert sources == {
        "csv-row",
        "csv-file",
        "fanlist-row",
        "fanlist-file",
        "kinesis-record",
        "http",
    }
    assert len(corpus.seen) >= 30, len(corpus.seen)
    # Each refused row or record has one dead letter, and nothing valid became one.
    assert len(fanlist_letters) == len(fanlist_rows)
    assert len(kinesis_letters) == len(bad_feed)

    # ---- the standard check: valid data intact, mirror equal, one report --------------------
    await check_everything(settings, [worker], CAMPAIGN, truth)
    await check_everything(settings, [worker], FEED_CAMPAIGN, feed_truth)
    status, window = await worker.get_json(f"/campaigns/{CAMPAIGN}/counts/windows")
    assert status == 200
    assert sum(w["verified"] for w in window["windows"]) == truth["verified"]

    def posted() -> list[str]:
        return [body["text"] for body in slack.bodies(HOOK, succeeded=True)]

    reports = await eventually(lambda: asyncio.sleep(0, posted()), lambda p: len(p) >= 1, 120)
    await asyncio.sleep(10)
    assert len(posted()) == 1, posted()
    report = reports[0]
    assert CAMPAIGN in report and f"{truth['verified']:,} verified" in report
    assert f"{run.expected_invalid_rows + len(appended):,} invalid rows" in report
