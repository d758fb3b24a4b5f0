"""The report agent's handler with an in-memory table: unreadable intents, duplicates, and
what is recorded for each outcome. (Against the real broker: tests/integration/test_reports.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

from vfstream.domain.reports import IntentKind, ReportBook, ReportIntent, RunAnnouncement
from vfstream.domain.state import Counts
from vfstream.sinks.clients.slack import PostResult
from vfstream.stream.reporting import VerdictReporter


class MemoryTable:
    """Just the two calls the reporter makes: get, and a changelog send it awaits."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.changelog: list[tuple[int, bytes, bytes]] = []

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def send_changelog(self, partition: int, key: bytes, value: bytes) -> Any:
        self.changelog.append((partition, key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class RecordingSlack:
    def __init__(self, delivered: bool = True) -> None:
        self.delivered = delivered
        self.texts: list[str] = []

    async def post(self, text: str) -> PostResult:
        self.texts.append(text)
        return PostResult(delivered=self.delivered, destination="slack")


def intent(run_id: str, verified: int, kind: IntentKind = IntentKind.SETTLED) -> bytes:
    run = RunAnnouncement(runId=run_id, campaignId="c1", campaignName="T", key="k", valid=3)
    return ReportIntent(kind=kind, run=run, counts=Counts(verified=verified)).to_bytes()


async def test_an_unreadable_intent_is_skipped_and_nothing_is_written() -> None:
    table, slack = MemoryTable(), RecordingSlack()
    reporter = VerdictReporter(table, slack)  # type: ignore[arg-type]
    for garbage in (b"not json", b"{}", b'{"kind": "settled"}', b"[1, 2]"):
        assert await reporter.handle(0, garbage) is None
    assert table.changelog == [] and slack.texts == []


async def test_a_posted_run_is_recorded_and_its_redelivery_posts_nothing() -> None:
    table, slack = MemoryTable(), RecordingSlack()
    reporter = VerdictReporter(table, slack)  # type: ignore[arg-type]
    assert (await reporter.handle(2, intent("r1", 5))).value == "posted"
    assert await reporter.handle(2, intent("r1", 5)) is None
    assert len(slack.texts) == 1
    book = ReportBook.from_bytes(table.data[b"c1"])
    assert book.last == Counts(verified=5) and book.runs == {"r1": "posted"}
    assert [(p, k) for p, k, _ in table.changelog] == [(2, b"c1")]


async def test_a_failed_post_keeps_the_last_posted_counts() -> None:
    table, slack = MemoryTable(), RecordingSlack(delivered=False)
    reporter = VerdictReporter(table, slack)  # type: ignore[arg-type]
    assert (await reporter.handle(0, intent("r1", 5))).value == "failed"
    book = ReportBook.from_bytes(table.data[b"c1"])
    assert book.last is None and book.runs == {"r1": "failed"}
