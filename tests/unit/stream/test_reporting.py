"""The report agent's handler with an in-memory table: unreadable intents, duplicates, and
what is recorded for each outcome; its lanes: campaigns concurrently, each in order, acks in
offset order, rebalances. (Against the real broker: tests/integration/test_reports.py.)"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from vfstream.domain.reports import IntentKind, ReportBook, ReportIntent, RunAnnouncement
from vfstream.domain.state import Counts
from vfstream.sinks.clients.slack import PostResult
from vfstream.stream.reporting import ReportLanes, VerdictReporter


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


# ReportLanes: the report agent's side, with fake events and a Slack held per campaign.


class GatedSlack:
    """Posts wait while their campaign's gate is closed; ``started`` lists texts as posts
    begin, ``texts`` as they end."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.started: list[str] = []
        self.texts: list[str] = []

    def hold(self, campaign: str) -> None:
        self.gates[campaign] = asyncio.Event()

    def release(self, campaign: str) -> None:
        self.gates[campaign].set()

    async def post(self, text: str) -> PostResult:
        self.started.append(text)
        for campaign, gate in self.gates.items():
            if f"({campaign})" in text:
                await gate.wait()
        self.texts.append(text)
        return PostResult(delivered=True, destination="slack")


class Acks:
    def __init__(self) -> None:
        self.acked: list[tuple[int, int]] = []

    async def __call__(self, event: Any) -> None:
        self.acked.append((event.message.partition, event.message.offset))


def event(partition: int, offset: int, value: bytes, generation: int = 1) -> Any:
    message = SimpleNamespace(partition=partition, offset=offset, generation_id=generation)
    return SimpleNamespace(message=message, value=value)


def report(campaign: str, run_id: str, verified: int) -> bytes:
    run = RunAnnouncement(runId=run_id, campaignId=campaign, campaignName="T", key="k", valid=3)
    return ReportIntent(
        kind=IntentKind.SETTLED, run=run, counts=Counts(verified=verified)
    ).to_bytes()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def lanes(slack: Any, **options: Any) -> tuple[ReportLanes, MemoryTable]:
    table = MemoryTable()
    return ReportLanes(VerdictReporter(table, slack), **options), table


async def test_a_slow_campaign_does_not_hold_up_another_and_acks_keep_offset_order() -> None:
    slack, acks = GatedSlack(), Acks()
    slack.hold("ca")
    reports, _ = lanes(slack)
    await reports.submit(event(0, 10, report("ca", "a1", 5)), acks)
    await reports.submit(event(0, 11, report("cb", "b1", 7)), acks)
    await reports.submit(event(1, 3, report("cc", "c1", 9)), acks)
    await settle()
    # B and C are posted while A's post hangs; B is done but acked only after A (same
    # partition, earlier offset); C, alone on its partition, is acked at once.
    assert [t for t in slack.texts if "(cb)" in t or "(cc)" in t] == slack.texts
    assert len(slack.texts) == 2 and len(slack.started) == 3
    assert acks.acked == [(1, 3)] and reports.unacked(0) == 2
    slack.release("ca")
    await settle()
    assert acks.acked == [(1, 3), (0, 10), (0, 11)] and reports.in_hand == 0


async def test_reports_of_one_campaign_stay_in_order_and_diff_against_the_one_before() -> None:
    slack, acks = GatedSlack(), Acks()
    slack.hold("ca")
    reports, table = lanes(slack)
    await reports.submit(event(0, 0, report("ca", "a1", 5)), acks)
    await reports.submit(event(0, 1, report("ca", "a2", 8)), acks)
    await settle()
    assert len(slack.started) == 1, "the second report waits for the first"
    slack.release("ca")
    await settle()
    assert "5 verified (+5)" in slack.texts[0] and "8 verified (+3)" in slack.texts[1]
    book = ReportBook.from_bytes(table.data[b"ca"])
    assert book.last == Counts(verified=8) and list(book.runs) == ["a1", "a2"]
    assert acks.acked == [(0, 0), (0, 1)]


async def test_at_most_so_many_campaigns_are_delivered_at_once() -> None:
    slack, acks = GatedSlack(), Acks()
    for campaign in ("ca", "cb", "cc"):
        slack.hold(campaign)
    reports, _ = lanes(slack, lanes=2)
    for offset, campaign in enumerate(("ca", "cb", "cc")):
        await reports.submit(event(offset, 0, report(campaign, "r", 1)), acks)
    await settle()
    assert len(slack.started) == 2
    slack.release("cb")
    await settle()
    assert len(slack.started) == 3 and acks.acked == [(1, 0)]


async def test_the_agent_waits_when_too_many_intents_are_in_hand() -> None:
    slack, acks = GatedSlack(), Acks()
    slack.hold("ca")
    reports, _ = lanes(slack, max_pending=1)
    await reports.submit(event(0, 0, report("ca", "a1", 1)), acks)
    second = asyncio.create_task(reports.submit(event(1, 0, report("cb", "b1", 1)), acks))
    await settle()
    assert not second.done()
    slack.release("ca")
    await asyncio.wait_for(second, 1)
    await settle()
    assert sorted(acks.acked) == [(0, 0), (1, 0)]


async def test_an_unreadable_intent_is_acked_in_its_turn() -> None:
    slack, acks = GatedSlack(), Acks()
    slack.hold("ca")
    reports, _ = lanes(slack)
    await reports.submit(event(0, 0, report("ca", "a1", 1)), acks)
    await reports.submit(event(0, 1, b"garbage"), acks)
    await settle()
    assert acks.acked == []
    slack.release("ca")
    await settle()
    assert acks.acked == [(0, 0), (0, 1)]


async def test_events_of_a_revoked_assignment_are_not_acked_and_moved_ones_are_cancelled() -> None:
    slack, acks = GatedSlack(), Acks()
    slack.hold("ca")
    slack.hold("cb")
    generation = 1
    reports, table = lanes(slack, current_generation=lambda: generation)
    await reports.submit(event(0, 0, report("ca", "a1", 1)), acks)
    await reports.submit(event(1, 0, report("cb", "b1", 1)), acks)
    await settle()
    reports.revoked({0, 1}, 1)
    # An event of the revoked assignment still in the agent's hands is left alone.
    await reports.submit(event(0, 1, report("ca", "a2", 2)), acks)
    generation = 2
    reports.assigned({0})  # partition 1 went to another worker: its delivery stops
    await settle()
    assert reports.in_hand == 1
    slack.release("ca")
    await settle()
    # A's report went out and its outcome is in the book, but its event is of the revoked
    # assignment: not acked; it comes again and is then a duplicate.
    assert acks.acked == [] and b"ca" in table.data and b"cb" not in table.data
    await reports.submit(event(0, 0, report("ca", "a1", 1), generation=2), acks)
    await settle()
    assert acks.acked == [(0, 0)] and len(slack.texts) == 1


async def test_a_delivery_that_raises_holds_back_its_campaign_and_partition() -> None:
    class BrokenTable(MemoryTable):
        def send_changelog(self, partition: int, key: bytes, value: bytes) -> Any:
            if key == b"ca":
                raise RuntimeError("changelog write refused")
            return super().send_changelog(partition, key, value)

    slack, acks = GatedSlack(), Acks()
    reports = ReportLanes(VerdictReporter(BrokenTable(), slack))
    await reports.submit(event(0, 0, report("ca", "a1", 1)), acks)
    await reports.submit(event(0, 1, report("cb", "b1", 1)), acks)
    await reports.submit(event(0, 2, report("ca", "a2", 2)), acks)
    await reports.submit(event(1, 0, report("cc", "c1", 1)), acks)
    await settle()
    assert acks.acked == [(1, 0)] and reports.in_hand == 0
    assert len(slack.texts) == 3, "a2 was held back, not posted"


async def test_stop_cancels_what_is_in_hand_unacked() -> None:
    slack, acks = GatedSlack(), Acks()
    slack.hold("ca")
    reports, _ = lanes(slack)
    await reports.submit(event(0, 0, report("ca", "a1", 1)), acks)
    await settle()
    await reports.stop()
    assert reports.in_hand == 0 and acks.acked == []
