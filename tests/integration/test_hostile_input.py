"""Hostile input on the real broker (issue #12): what an attacker or a careless upstream could
send, each case one test. None may stop a worker, touch another campaign's data or run as
script; each ends with the counts exact and the worker still alive."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from tests.support.aws import put_object
from tests.support.browser import launch_chromium
from tests.support.rows import SCORING_HEADER, csv_file, scoring_key, scoring_row
from tests.support.services import Answer, ScriptedService, scripted_service
from tests.support.waiting import eventually
from vfstream import kafka
from vfstream.aws import aws_client
from vfstream.dev.generator import GeneratorConfig, expected_counts, generate_run, rescore
from vfstream.dev.scenario import upload_run, wait_for_counts
from vfstream.dev.stack import free_port
from vfstream.dev.workers import WorkerProcess, run_cli
from vfstream.domain.inflight import InflightIngest
from vfstream.domain.keys import fan_key, partition_for
from vfstream.domain.records import CSV_COLUMNS, ScoreRecord
from vfstream.kafka.reads import latest_values, read_committed
from vfstream.settings import Settings
from vfstream.sources.s3.ingestor import ScoringFileIngestor
from vfstream.topics import ensure_topics

pytestmark = pytest.mark.integration

HOOK = "/services/T/B/hostile"


@dataclass
class System:
    settings: Settings
    worker: WorkerProcess
    slack: ScriptedService

    async def ingest(self, key: str, body: bytes, **overrides: Any) -> Any:
        await put_object(self.settings, key, body)
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        return await ScoringFileIngestor(settings).ingest(settings.scoring_bucket, key)

    async def dead_letters(self) -> list[dict[str, Any]]:
        topic = self.settings.dead_letter_topic
        return [orjson.loads(m.value) for m in await read_committed(self.settings, topic)]

    def slack_texts(self) -> list[str]:
        return [body["text"] for body in self.slack.bodies(HOOK, succeeded=True)]


def system_settings(stack: Settings, base: Path, slack: ScriptedService) -> Settings:
    return stack.namespaced(uuid.uuid4().hex[:8]).model_copy(
        update={
            "data_dir": base / f"worker-{uuid.uuid4().hex[:6]}",
            "web_port": free_port(),
            "forward_to_entry_service": False,
            "forward_to_kinesis": False,
            "mirror_to_dynamodb": False,
            "listen_for_notifications": False,
            "slack_webhook_url": SecretStr(slack.url + HOOK),
        }
    )


@pytest.fixture(scope="module")
async def system(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[System]:
    """One worker (reporting to a local Slack) that every case of this module attacks."""
    base = tmp_path_factory.mktemp("hostile")
    async with scripted_service() as slack:
        slack.fallback = Answer(200, "ok")
        settings = system_settings(stack, base, slack)
        await ensure_topics(settings)
        worker = WorkerProcess(settings, "hostile", base / "logs")
        worker.start()
        try:
            await worker.wait_ready(timeout=180)
            yield System(settings, worker, slack)
        finally:
            worker.stop()


async def assert_alive(system: System) -> None:
    assert system.worker.alive(), f"the worker exited; log: {system.worker.log_path}"
    assert (await system.worker.get_json("/health"))[0] == 200


async def reconcile_clean(settings: Settings, campaign: str) -> None:
    done = await asyncio.to_thread(run_cli, settings, "reconcile", "--campaign", campaign)
    assert done.returncode == 0, done.stdout + done.stderr
    assert orjson.loads(done.stdout)["differences"] == 0


# --- 1. poison records ---------------------------------------------------------------------


def poison_record(campaign: str, fan: str, rank: int, event_id: str) -> ScoreRecord:
    return ScoreRecord.model_validate(
        {
            "campaignId": campaign,
            "globalUserId": fan,
            "id": f"{fan}{rank:03d}",
            "rank": rank,
            "eventId": event_id,
            "score": 0.5,
            "isVerified": True,
            "scoredAt": "2026-10-20T12:00:00Z",
        }
    )


async def produce_records(settings: Settings, records: list[ScoreRecord]) -> None:
    """Straight onto the score-record topic, one record a message, each in its fan's
    partition, as a producer outside vfstream could."""
    producer = kafka.producer(settings, acks="all")
    await producer.start()
    try:
        for record in records:
            key = record.key.encode()
            partition = partition_for(key, settings.topic_partitions)
            await producer.send_and_wait(
                settings.score_records_topic, record.to_json(), key=key, partition=partition
            )
    finally:
        await producer.stop()


async def test_a_poison_file_and_poison_records_never_stop_a_worker(
    stack: Settings, tmp_path: Path
) -> None:
    """The reported file: 25 rows for one fan (ranks 000-024), each with a 60,000-character
    event_id, built a 1.5 MB state; every worker crashed on it, on every restart."""
    async with scripted_service() as slack:
        slack.fallback = Answer(200, "ok")
        settings = system_settings(stack, tmp_path, slack)
        await ensure_topics(settings)
        big = "e" * 60_000
        # At the edge: each row is refused for its field, the valid fan comes through.
        rows = [scoring_row("cpoison", "victim", rank, event_id=big) for rank in range(25)]
        key = scoring_key("cpoison")
        await put_object(settings, key, csv_file(*rows, scoring_row("cpoison", "fine")))
        summary = await ScoringFileIngestor(settings).ingest(settings.scoring_bucket, key)
        assert (summary.status, summary.valid, summary.invalid) == ("ingested", 1, 25)
        # Past the edge: the same records produced straight to the topic.
        poison = [poison_record("cpoison2", "victim", rank, big) for rank in range(25)]
        await produce_records(settings, [*poison, poison_record("cpoison2", "fine", 0, "ok")])

        worker = WorkerProcess(settings, "poison", tmp_path / "logs")
        worker.start()
        try:
            await worker.wait_ready(timeout=180)
            await wait_for_counts(worker, "cpoison", {"verified": 1, "rejected": 0}, timeout=120)
            # The victim keeps its first (good) state; the rest are dead-lettered alone.
            await wait_for_counts(worker, "cpoison2", {"verified": 2, "rejected": 0}, timeout=120)
            status, victim = await worker.get_json("/campaigns/cpoison2/fans/victim")
            assert status == 200 and len(victim["events"]) == 1
            letters = [
                orjson.loads(m.value)
                for m in await read_committed(settings, settings.dead_letter_topic)
            ]
            refused = [letter for letter in letters if letter.get("kind") == "score-record"]
            assert len(refused) == 24
            assert all("over the limit of 65536" in letter["reasons"][0] for letter in refused)
            edge = [letter for letter in letters if letter.get("kind") == "scoring-row"]
            assert len(edge) == 25
            assert all(
                "event_id: 60000 bytes, over the limit of 1024" in e["reasons"] for e in edge
            )
            assert worker.alive()

            # Restarted and made to read every record again: it passes them again.
            worker.stop()
            replay = await asyncio.to_thread(run_cli, settings, "replay", "--to", "earliest")
            assert replay.returncode == 0, replay.stderr
            worker.start()
            await worker.wait_ready(timeout=180)
            await eventually(
                lambda: worker.get_json("/statuses"),
                lambda answer: answer[1]["recordsIn"] >= 27,
                timeout=120,
            )
            await asyncio.sleep(3)
            assert worker.alive()
            await wait_for_counts(worker, "cpoison2", {"verified": 2, "rejected": 0}, timeout=60)
            await reconcile_clean(settings, "cpoison2")
        finally:
            worker.stop()


# --- 2. campaigns whose ids hold the key separator -----------------------------------------


async def test_campaigns_whose_ids_hold_the_separator_keep_their_own_fans(system: System) -> None:
    # Campaign "p3col:a" fan "b" overwrote campaign "p3col" fan "a:b".
    first = await system.ingest(
        scoring_key("p3col"), csv_file(scoring_row("p3col", "a:b", isVerified="true"))
    )
    second = await system.ingest(
        scoring_key("p3col:a"),
        csv_file(scoring_row("p3col:a", "b", isVerified="false", verdict="true")),
    )
    assert first.status == second.status == "ingested"
    worker = system.worker
    await wait_for_counts(worker, "p3col", {"verified": 1, "rejected": 0, "selected": 0})
    await wait_for_counts(worker, "p3col:a", {"verified": 0, "rejected": 1, "selected": 1})
    status, fan = await worker.get_json(f"/campaigns/p3col/fans/{quote('a:b', safe='')}")
    assert status == 200 and fan["campaignId"] == "p3col" and fan["isVerified"] is True
    status, fan = await worker.get_json(f"/campaigns/{quote('p3col:a', safe='')}/fans/b")
    assert status == 200 and fan["campaignId"] == "p3col:a" and fan["isVerified"] is False
    assert fan_key("p3col", "a:b") != fan_key("p3col:a", "b")
    await reconcile_clean(system.settings, "p3col")
    await reconcile_clean(system.settings, "p3col:a")
    assert not any("-1 verified" in text for text in system.slack_texts())


# --- 3 and 7. script in a campaign id: not run in the dashboard, inert in Slack ---------------

# No "." in it: a campaign id in an S3 key cannot hold one (a global assignment instead).
XSS_CAMPAIGN = "<img src=x onerror=__pwned=1>"
MRKDWN_NAME = "<!channel> <https:||evil.example|click>"


async def test_a_campaign_named_with_script_runs_nothing_in_the_dashboard_or_slack(
    system: System, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    summary = await system.ingest(
        scoring_key(XSS_CAMPAIGN, name=MRKDWN_NAME),
        csv_file(scoring_row(XSS_CAMPAIGN, "u1"), scoring_row(XSS_CAMPAIGN, "u2")),
    )
    assert (summary.status, summary.valid) == ("ingested", 2), summary
    await wait_for_counts(system.worker, XSS_CAMPAIGN, {"verified": 2}, timeout=120)
    status, headers = await get_headers(system.worker, "/")
    assert status == 200
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    for path in ("/campaigns/nope/counts", "/static/dashboard.js", "/no/such/route"):
        assert (await get_headers(system.worker, path))[1]["X-Content-Type-Options"] == "nosniff"

    async with async_playwright() as pw:
        browser = await launch_chromium(pw)
        try:
            page = await browser.new_page()
            blocked: list[str] = []
            page.on("console", lambda message: blocked.append(message.text))
            await page.goto(system.worker.base_url + "/")
            # A locator, not wait_for_function: the page's policy refuses eval, and polling
            # a string expression evaluates it in the page.
            await page.locator('body[data-loaded="true"]').wait_for(timeout=15_000)
            await page.wait_for_timeout(500)
            shown = await page.locator("#counts a.campaign").all_inner_texts()
            pwned = await page.evaluate("window.__pwned")
            images = await page.locator("#counts img").count()
            await page.screenshot(path=str(tmp_path / "dashboard-xss.png"), full_page=True)
        finally:
            await browser.close()
    assert XSS_CAMPAIGN in shown  # shown as text
    assert pwned is None and images == 0

    texts = await eventually(
        lambda: asyncio.sleep(0, system.slack_texts()),
        lambda found: any("&lt;img src=x" in text for text in found),
        timeout=60,
    )
    report = next(text for text in texts if "&lt;img src=x" in text)
    assert "<!channel>" not in report and "<https:" not in report
    assert "&lt;!channel&gt; &lt;https:||evil.example|click&gt;" in report


async def get_headers(worker: WorkerProcess, path: str) -> tuple[int, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(worker.base_url + path) as resp:
        return resp.status, resp.headers


# --- 4. rows smuggled out of an overlong quoted field ---------------------------------------


async def test_a_190kb_quoted_field_smuggles_no_rows(system: System) -> None:
    # Short lines past the csv module's 128 KiB field limit, then lines that look like rows.
    inner = "".join(scoring_row("csmuggle", f"smuggled{n}") + "\n" for n in range(115))
    field = '"' + ("z" * 99 + "\n") * ((190_000 - len(inner)) // 100) + inner + '"'
    bad = scoring_row("csmuggle", "bad1", review_notes=field)
    rows = [scoring_row("csmuggle", f"u{n}") for n in range(4)]
    summary = await system.ingest(
        scoring_key("csmuggle"), csv_file(rows[0], rows[1], bad, rows[2], rows[3])
    )
    assert (summary.rows_in, summary.valid, summary.invalid) == (5, 4, 1)
    await wait_for_counts(system.worker, "csmuggle", {"verified": 4, "rejected": 0})
    await asyncio.sleep(2)
    _, counts = await system.worker.get_json("/campaigns/csmuggle/counts")
    assert counts["verified"] == 4


# --- 6. decompression bombs and row floods --------------------------------------------------


async def test_a_gzip_bomb_and_a_row_flood_fail_whole_and_ingest_nothing(system: System) -> None:
    import gzip

    row = scoring_row("cbomb", "u1") + "\n"
    bomb = gzip.compress((SCORING_HEADER + "\n" + row * 40_000).encode(), compresslevel=9)
    assert len(bomb) < 20_000  # about 4 MB of rows in a few kilobytes
    failed = await system.ingest(scoring_key("cbomb", gz=True), bomb, limit_file_bytes=1_000_000)
    assert failed.status == "failed" and failed.produced == 0
    assert "larger than 1,000,000 bytes" in (failed.error or "")

    flood = csv_file(*(scoring_row("cflood", f"u{n}") for n in range(120)))
    failed = await system.ingest(scoring_key("cflood"), flood, limit_file_rows=100)
    assert failed.status == "failed" and failed.produced == 0
    assert "more than 100 rows" in (failed.error or "")

    # Neither left a record a worker could apply.
    await asyncio.sleep(3)
    for campaign in ("cbomb", "cflood"):
        status, _ = await system.worker.get_json(f"/campaigns/{campaign}/counts")
        assert status == 404
    letters = await system.dead_letters()
    assert any(
        letter["kind"] == "scoring-file" and "larger than" in letter["reasons"][0]
        for letter in letters
    )


async def test_a_gzip_bomb_is_refused_by_its_ratio_long_before_the_byte_limit(
    system: System,
) -> None:
    """Issue #21 item 9: with only the 512 MiB byte limit, a 3 MB bomb wrote more than 650 MB
    into the broker (an aborted transaction) before it was stopped."""
    import gzip

    from aiokafka import TopicPartition

    row = scoring_row("cratio", "u1") + "\n"
    bomb = gzip.compress((SCORING_HEADER + "\n" + row * 400_000).encode(), compresslevel=9)
    assert len(bomb) < 1_000_000  # about 80 MB of rows in a few hundred kilobytes
    topic = system.settings.score_records_topic
    partitions = [TopicPartition(topic, p) for p in range(system.settings.topic_partitions)]
    reader = kafka.consumer(system.settings)
    await reader.start()
    try:
        before = sum((await reader.end_offsets(partitions)).values())
        failed = await system.ingest(scoring_key("cratio", gz=True), bomb)
        after = sum((await reader.end_offsets(partitions)).values())
    finally:
        await reader.stop()

    assert failed.status == "failed" and failed.produced == 0
    assert "times its compressed size" in (failed.error or "")
    # A message (a score batch) closes before 512 KiB: fewer than 128 messages are less than
    # 64 MiB in the broker, whatever they held. Before: about 650 MB.
    assert (after - before) * 512 * 1024 < 64 * 1024 * 1024, after - before


# --- 10. the smaller defects on the HTTP side -----------------------------------------------


async def test_http_errors_are_short_and_malformed_requests_log_one_line(system: System) -> None:
    worker = system.worker
    await system.ingest(scoring_key("chttp"), csv_file(scoring_row("chttp", "u1")))
    await wait_for_counts(worker, "chttp", {"verified": 1})
    status, body = await worker.get_json("/campaigns/nope-http/counts/windows")
    assert status == 404 and "unknown campaign" in body["error"]
    status, body = await worker.get_json("/campaigns/chttp/counts/windows?since=" + "9" * 5000)
    assert status == 400 and len(body["error"]) < 200
    # No campaign service runs at the configured URL: its address stays internal.
    status, body = await worker.get_json("/campaigns?eventId=ev1")
    assert status == 503
    assert "127.0.0.1" not in body["error"] and "8082" not in body["error"]
    status, body = await worker.get_json("/campaigns?eventId=" + "x" * 7000)
    assert status == 400

    for garbage in (
        b"GET /\x00\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: " + b"h" * 20_000 + b"\r\n\r\n",
    ):
        answer = await asyncio.to_thread(raw_request, worker.settings.web_port, garbage)
        assert answer.split(b" ", 2)[1].startswith(b"4"), answer[:80]
    await asyncio.sleep(1)
    log = worker.log_path.read_text(errors="replace")
    assert "refused a malformed HTTP request (400)" in log
    assert "Error handling request" not in log and "Traceback" not in log
    await assert_alive(system)


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(data)
        return conn.recv(200)


# --- 5. an ingest killed mid-file -----------------------------------------------------------


async def announcement(settings: Settings, object_url: str) -> InflightIngest | None:
    entries = await latest_values(settings, settings.ingest_inflight_topic)
    for key, (_, value) in entries.items():
        found = InflightIngest.from_entry(key, value)
        if found is not None and found.object_url == object_url:
            return found
    return None


def start_ingest(settings: Settings, url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "vfstream.cli.main", "ingest", url, "--no-progress"],
            env={**os.environ, **settings.to_env()},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def wait_until_mid_file(settings: Settings, url: str, ingest: subprocess.Popen) -> None:
    """The ingest has announced its transaction and produced a while, and is still at it."""
    await eventually(
        lambda: announcement(settings, url),
        lambda found: found is not None and found.state == "open",
        timeout=60,
        interval=0.2,
    )
    await asyncio.sleep(0.5)
    assert ingest.poll() is None, "the file was too small to be stopped mid-way"


async def test_a_killed_or_terminated_ingest_stalls_no_worker(
    stack: Settings, tmp_path: Path
) -> None:
    """kill -9 of an ingest left its transaction open, and read_committed workers waited
    behind it for up to ten minutes; SIGTERM (what a pod gets) did the same."""
    async with scripted_service() as slack:
        settings = system_settings(stack, tmp_path, slack).model_copy(
            update={
                # The listener of this worker fences dead ingests between polls of a queue
                # of its own (the stack's queue gets every test's uploads).
                "listen_for_notifications": True,
                "notification_queue": f"vf-hostile-{uuid.uuid4().hex[:8]}",
            }
        )
        async with aws_client(settings, "sqs") as sqs:
            await sqs.create_queue(QueueName=settings.notification_queue)
        await ensure_topics(settings)
        # Big enough to be stopped mid-way: about 330,000 rows take the ingest several seconds.
        big = generate_run(GeneratorConfig(campaign_id="ckilled", campaign_name="t", fans=150_000))
        small = generate_run(GeneratorConfig(campaign_id="cafter", campaign_name="t", fans=500))
        big_key = await upload_run(settings, big, tmp_path / "files")
        small_key = await upload_run(settings, small, tmp_path / "files")
        big_url = f"s3://{settings.scoring_bucket}/{big_key}"
        worker = WorkerProcess(settings, "fencer", tmp_path / "logs")
        worker.start()
        try:
            await worker.wait_ready(timeout=180)

            # kill -9 mid-file: the worker's listener fences the transaction at once ...
            ingest = start_ingest(settings, big_url, tmp_path / "killed.log")
            await wait_until_mid_file(settings, big_url, ingest)
            ingest.kill()
            ingest.wait()
            killed_at = time.monotonic()
            fenced = await eventually(
                lambda: announcement(settings, big_url),
                lambda found: found is not None and found.state == "closed",
                timeout=15,
                interval=0.2,
            )
            assert fenced.pid == ingest.pid
            assert "fenced the open transaction of a dead ingest" in worker.log_path.read_text()
            # ... so another campaign's file is counted within seconds, not minutes.
            summary = await ScoringFileIngestor(settings).ingest(settings.scoring_bucket, small_key)
            assert summary.status == "ingested"
            await wait_for_counts(worker, "cafter", expected_counts([small])["cafter"], timeout=30)
            assert time.monotonic() - killed_at < 30
            # The killed file left nothing: ingested again, it counts exactly once.
            summary = await ScoringFileIngestor(settings).ingest(settings.scoring_bucket, big_key)
            assert summary.status == "ingested", summary.error
            await wait_for_counts(worker, "ckilled", expected_counts([big])["ckilled"], timeout=300)

            # SIGTERM mid-file: the ingest aborts its own transaction and exits non-zero.
            term = rescore(big, flip_ratio=0.5, seed=3)
            term_key = await upload_run(settings, term, tmp_path / "files")
            term_url = f"s3://{settings.scoring_bucket}/{term_key}"
            ingest = start_ingest(settings, term_url, tmp_path / "terminated.log")
            await wait_until_mid_file(settings, term_url, ingest)
            ingest.terminate()
            assert ingest.wait(timeout=15) == 128 + signal.SIGTERM
            output = (tmp_path / "terminated.log").read_text()
            assert "stopped by SIGTERM" in output and "Traceback" not in output
            closed = await announcement(settings, term_url)
            assert closed is not None and closed.state == "closed" and closed.pid == ingest.pid
            again = rescore(small, flip_ratio=0.5, seed=4)
            again_key = await upload_run(settings, again, tmp_path / "files")
            stopped_at = time.monotonic()
            summary = await ScoringFileIngestor(settings).ingest(settings.scoring_bucket, again_key)
            assert summary.status == "ingested"
            truth = expected_counts([small, again])["cafter"]
            await wait_for_counts(worker, "cafter", truth, timeout=30)
            assert time.monotonic() - stopped_at < 30
            # Nothing of the terminated file was applied.
            _, counts = await worker.get_json("/campaigns/ckilled/counts")
            assert {k: counts[k] for k in truth} == expected_counts([big])["ckilled"]
        finally:
            worker.stop()


# --- the poison-pill property: hostile rows of every kind, one real worker ------------------

_TEXT = st.characters(exclude_categories=("Cs", "Cc"))
_ID = (
    st.text(_TEXT | st.sampled_from(':#%,"|/ '), min_size=1, max_size=24)
    .filter(lambda text: text == text.strip() and text.strip())
    .filter(lambda text: len(text.encode()) <= 200)
)
_CAMPAIGN = _ID.filter(lambda text: "." not in text and "/" not in text)
_FIELD = st.text(_TEXT | st.sampled_from(',"\n\r|:'), max_size=300)
_BOOL = st.sampled_from(["true", "false", "TRUE", "No", "1", "0", "yes"])


@dataclass
class HostileFile:
    campaign: str
    rows: list[list[str]]
    truth: dict[str, dict[str, bool | None]]  # valid fan -> its last valid row's verdicts
    invalid: int


def _row(campaign: str, user: str, rank: str, **values: str) -> list[str]:
    row = dict(zip(CSV_COLUMNS, scoring_row("c", "u").split(","), strict=True))
    row.update({"globalUserId": user, "id": user + rank, "campaign_id": campaign, **values})
    return [row[column] for column in CSV_COLUMNS]


@st.composite
def hostile_files(draw: st.DrawFn, campaign: str) -> HostileFile:
    fans = draw(st.lists(_ID, min_size=1, max_size=4, unique=True))
    rows: list[list[str]] = []
    truth: dict[str, dict[str, bool | None]] = {}
    for fan in fans:
        for rank in draw(st.lists(st.integers(0, 99), min_size=1, max_size=3, unique=True)):
            verified, verdict = draw(_BOOL), draw(st.sampled_from(["", "true", "false"]))
            rows.append(
                _row(
                    campaign,
                    fan,
                    f"{rank:03d}",
                    event_id=draw(_FIELD.filter(str.strip)),
                    hbase=draw(_FIELD),
                    firstName=draw(_FIELD),
                    review_notes=draw(_FIELD),
                    isVerified=verified,
                    verdict=verdict,
                )
            )
            truth[fan] = {
                "isVerified": verified.lower() in ("true", "1", "yes"),
                "verdict": {"": None, "true": True, "false": False}[verdict],
            }
    bad_fan = draw(_ID)
    invalid_rows = [
        _row(campaign, bad_fan, "000", event_id="x" * 1025),  # past the field limit
        _row(campaign, bad_fan, "150"),  # rank past the events limit
        _row(campaign, bad_fan, "\u0661\u0662\u0663"),  # Arabic-Indic digits
        _row(campaign, bad_fan + "\x07", "000"),  # a control character in an id
        _row(campaign, bad_fan, "000", score="7"),
        _row(campaign + "x", bad_fan, "000"),  # another campaign's row
        [*_row(campaign, bad_fan, "000"), "one field too many"],
    ]
    chosen = draw(st.lists(st.sampled_from(invalid_rows), min_size=1, max_size=5))
    for row in chosen:
        rows.insert(draw(st.integers(0, len(rows))), row)
    return HostileFile(campaign, rows, truth, invalid=len(chosen))


def as_csv(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # quotes fields holding \r or \n
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    return out.getvalue().encode()


def test_hostile_rows_never_stop_the_worker_and_every_valid_fan_is_counted(
    system: System,
) -> None:
    """Hypothesis writes files of hostile rows (separators, quotes and line breaks in ids and
    fields, odd unicode, up to 100 ranks, every kind of invalid row) that one real worker
    ingests: it never exits, every valid fan is counted as its last valid row says, and a
    recount of the state finds no difference."""
    seen: list[str] = []

    @settings(
        max_examples=8,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def one_file(data: st.DataObject) -> None:
        campaign = f"{data.draw(_CAMPAIGN)}{len(seen)}"
        seen.append(campaign)
        hostile = data.draw(hostile_files(campaign))
        fans = hostile.truth.values()
        truth = {
            "verified": sum(1 for fan in fans if fan["isVerified"]),
            "rejected": sum(1 for fan in fans if not fan["isVerified"]),
            "selected": sum(1 for fan in fans if fan["verdict"] is True),
        }

        async def check() -> None:
            summary = await system.ingest(scoring_key(campaign), as_csv(hostile.rows))
            assert summary.status == "ingested", summary.error
            assert summary.invalid == hostile.invalid, summary
            await wait_for_counts(system.worker, campaign, truth, timeout=60)
            fan = next(iter(hostile.truth))
            path = f"/campaigns/{quote(campaign, safe='')}/fans/{quote(fan, safe='')}"
            status, state = await system.worker.get_json(path)
            assert status == 200, (path, state)
            assert state["globalUserId"] == fan and state["campaignId"] == campaign
            await assert_alive(system)

        asyncio.run(check())

    one_file()
    assert system.worker.alive()
    done = run_cli(system.settings, "reconcile")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = orjson.loads(done.stdout)
    assert report["differences"] == 0
    assert set(seen) <= {item["campaignId"] for item in report["report"]}


# --- damaged messages on the internal partials topic ----------------------------------------


async def test_damaged_partials_messages_are_dead_lettered_and_the_tally_goes_on(
    isolated: Settings, worker: WorkerProcess
) -> None:
    from tests.integration.test_ingest import SAMPLE_PATH

    key = b"c1001"
    producer = kafka.producer(isolated)
    await producer.start()
    try:
        partition = partition_for(key, isolated.topic_partitions)
        for damaged in (b"not json", b"{}", b'{"partial": {"campaignId": "c1001"}}'):
            await producer.send_and_wait(
                isolated.partials_topic, damaged, key=key, partition=partition
            )
    finally:
        await producer.stop()
    sample_key = f"scrubbed/{SAMPLE_PATH.name}"
    await put_object(isolated, sample_key, SAMPLE_PATH.read_bytes())
    await ScoringFileIngestor(isolated).ingest(isolated.scoring_bucket, sample_key, force=True)

    await wait_for_counts(
        worker, "c1001", {"verified": 2, "rejected": 2, "selected": 1}, timeout=60
    )
    letters = [
        orjson.loads(m.value) for m in await read_committed(isolated, isolated.dead_letter_topic)
    ]
    refused = [letter for letter in letters if letter.get("kind") == "partials-message"]
    assert len(refused) == 3
    assert {letter["raw"] for letter in refused} >= {"not json", "{}"}
    assert worker.alive()
