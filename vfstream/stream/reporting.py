"""The verdict reporter: report intents in, Slack posts out, one memory per campaign.

``VerdictReporter.handle_intent`` does one intent: the campaign's ``ReportBook`` (the
``slack-reports`` table) is read, ``decide_report`` says whether to post, and the outcome is
written to the table's changelog and awaited. A restart before that write redelivers the
intent and posts it then; after it, the book marks the run done.

``ReportLanes`` is how the report agent uses it, so that a slow Slack delays only the
campaign it is slow for:

- **Lanes.** Intents of one campaign are delivered one after another, in the order they came
  (the book's "counts last posted" is what the next report's change is measured from); each
  intent's task waits for the campaign's previous one. Different campaigns are delivered
  concurrently, at most ``lanes`` at once (the others wait for a free lane, in order), and
  at most ``max_pending`` intents are in hand: past that the agent waits before it takes
  the next event. A campaign's intents all come on one partition (keyed by campaign).
- **Acks.** The agent reads the topic with ``stream.noack()``; an intent's event is acked
  only once its outcome is durable in the changelog, and each partition's events are acked
  in offset order: an intent done ahead of a slower one waits for it. Faust commits a
  partition's offsets from its acked offsets, and it commits past a single unacked offset
  (``tests/unit/stream/test_faust_commit_gap.py``), so acking out of order could commit
  past an undelivered intent; acking a done prefix cannot. A worker restarted with intents
  in hand gets them all again from the last commit: those already done are duplicates for
  the book, the rest are posted then.
- **Table writes.** The RocksDB store picks a write's partition from Faust's current event,
  a context variable: each intent's task is created while its event is the agent's current
  event, so the task's context carries it to ``durable_set``.
- **Rebalances.** Events of a revoked assignment are never acked (they come again from the
  last commit; an intent whose outcome was recorded is then a duplicate); deliveries of a
  partition the new assignment gives to another worker are cancelled, so that worker alone
  posts them; deliveries of a partition kept go on, and its redelivered intents queue
  behind them in their campaign's lane and find the outcome in the book.
- **Errors.** A delivery that raises (a changelog write refused) is logged and left unacked;
  the later intents of its campaign are held back unacked, so after the restart or
  rebalance that redelivers them they are handled in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from vfstream.domain.reports import (
    Decision,
    IntentKind,
    ReportBook,
    ReportIntent,
    RunOutcome,
    decide_report,
)
from vfstream.metrics import DEAD_LETTERS, REPORTS
from vfstream.sinks.clients.slack import SlackNotifier
from vfstream.stream.tables import durable_set

log = logging.getLogger(__name__)

# Campaigns whose reports are delivered at once, and intents in hand, per worker.
REPORT_LANES = 8
MAX_PENDING_INTENTS = 1_000


class VerdictReporter:
    def __init__(self, table: Any, notifier: SlackNotifier) -> None:
        self.table = table
        self.notifier = notifier

    def book(self, campaign_id: str) -> ReportBook:
        raw = self.table.get(campaign_id.encode())
        return ReportBook.from_bytes(raw) if raw else ReportBook(campaignId=campaign_id)

    def parse(self, value: bytes) -> ReportIntent | None:
        """The intent, or None (counted and logged) for one that cannot be read."""
        try:
            return ReportIntent.model_validate_json(value)
        except (ValidationError, ValueError) as exc:
            DEAD_LETTERS.labels("report-intent").inc()
            log.error("unreadable report intent skipped: %s (%r)", exc, value[:200])
            return None

    async def handle(self, partition: int, value: bytes) -> RunOutcome | None:
        intent = self.parse(value)
        return None if intent is None else await self.handle_intent(partition, intent)

    async def handle_intent(self, partition: int, intent: ReportIntent) -> RunOutcome | None:
        campaign = intent.run.campaignId
        book = self.book(campaign)
        decision = decide_report(book, intent)
        if not decision.post and decision.outcome is None:
            REPORTS.labels("duplicate").inc()
            log.info("report for run %s of %s already handled", intent.run.runId, campaign)
            return None
        outcome = await self._deliver(intent, decision, book)
        book.record(intent.run.runId, outcome)
        REPORTS.labels(outcome.value).inc()
        await durable_set(self.table, partition, campaign.encode(), book.to_bytes())
        return outcome

    async def _deliver(
        self, intent: ReportIntent, decision: Decision, book: ReportBook
    ) -> RunOutcome:
        if not decision.post:
            assert decision.outcome is not None
            log.info(
                "run %s of %s settled; counts as last reported, nothing posted",
                intent.run.runId,
                intent.run.campaignId,
            )
            return decision.outcome
        result = await self.notifier.post(decision.text)
        if intent.kind is IntentKind.OVERDUE:
            # Posted or not, warn once: a flood of warnings helps nobody.
            return RunOutcome.WARNED
        if not result.delivered:
            log.error(
                "verdict report for run %s of %s not delivered; recorded as failed",
                intent.run.runId,
                intent.run.campaignId,
            )
            return RunOutcome.FAILED
        book.last = intent.counts
        book.lastText = decision.text
        log.info(
            "verdict report for run %s of %s delivered to %s",
            intent.run.runId,
            intent.run.campaignId,
            result.destination,
        )
        return RunOutcome.POSTED


Ack = Callable[[Any], Awaitable[Any]]


@dataclass(eq=False)
class _Pending:
    event: Any
    acks: _PartitionAcks
    done: bool = False  # outcome durable: may be acked
    failed: bool = False  # raised, or held back behind one that did: never acked


@dataclass(eq=False)
class _PartitionAcks:
    """One partition's events of one assignment, in offset order; acks the done prefix."""

    ack: Ack
    generation: int | None
    queue: deque[_Pending] = field(default_factory=deque)
    open: bool = True  # False once the assignment is revoked: its events come again
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def add(self, event: Any) -> _Pending:
        pending = _Pending(event, self)
        self.queue.append(pending)
        return pending

    async def settle(self) -> None:
        async with self._lock:
            while self.open and self.queue and self.queue[0].done:
                await self.ack(self.queue.popleft().event)


class ReportLanes:
    """The report agent's intents: one lane per campaign, a few lanes at once, acks in
    offset order once durable (see the module docstring)."""

    def __init__(
        self,
        reporter: VerdictReporter,
        *,
        lanes: int = REPORT_LANES,
        max_pending: int = MAX_PENDING_INTENTS,
        current_generation: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.reporter = reporter
        self._lanes = asyncio.Semaphore(lanes)
        self._room = asyncio.Semaphore(max_pending)
        self._current_generation = current_generation
        self._acks: dict[int, _PartitionAcks] = {}
        self._revoked: dict[int, int | None] = {}  # partition -> generation revoked
        self._tails: dict[str, tuple[asyncio.Task[None], _Pending]] = {}
        self._tasks: dict[asyncio.Task[None], int] = {}  # -> partition

    @property
    def in_hand(self) -> int:
        return len(self._tasks)

    def unacked(self, partition: int) -> int:
        acks = self._acks.get(partition)
        return len(acks.queue) if acks else 0

    async def submit(self, event: Any, ack: Ack) -> None:
        """Take one event of the reports topic; returns once it is in a lane (or done)."""
        await self._room.acquire()
        message = event.message
        partition, generation = message.partition, message.generation_id
        current = self._current_generation()
        if (current is not None and generation != current) or (
            partition in self._revoked and self._revoked[partition] == generation
        ):
            # From an assignment since revoked: not ours to ack; it comes again.
            self._room.release()
            return
        acks = self._acks.get(partition)
        if acks is None or acks.generation != generation:
            if acks is not None:
                acks.open = False
            acks = self._acks[partition] = _PartitionAcks(ack, generation)
        pending = acks.add(event)
        intent = self.reporter.parse(event.value)
        if intent is None:
            self._room.release()
            pending.done = True
            await acks.settle()
            return
        campaign = intent.run.campaignId
        tail = self._tails.get(campaign)
        # Created while ``event`` is Faust's current event: the task's context keeps it.
        task = asyncio.create_task(self._deliver(tail, partition, intent, pending))
        self._tails[campaign] = (task, pending)
        self._tasks[task] = partition
        task.add_done_callback(lambda done: self._finished(campaign, done))

    def _finished(self, campaign: str, task: asyncio.Task[None]) -> None:
        self._room.release()
        self._tasks.pop(task, None)
        tail = self._tails.get(campaign)
        if tail is not None and tail[0] is task:
            del self._tails[campaign]

    async def _deliver(
        self,
        tail: tuple[asyncio.Task[None], _Pending] | None,
        partition: int,
        intent: ReportIntent,
        pending: _Pending,
    ) -> None:
        run, campaign = intent.run.runId, intent.run.campaignId
        if tail is not None:
            previous, before = tail
            await asyncio.wait([previous])
            if before.failed and before.acks is pending.acks:
                pending.failed = True
                log.error(
                    "report for run %s of %s held back behind one that failed; "
                    "it comes again after a restart or rebalance",
                    run,
                    campaign,
                )
                return
        try:
            async with self._lanes:
                await self.reporter.handle_intent(partition, intent)
        except Exception:
            pending.failed = True
            log.exception(
                "report for run %s of %s failed; left unacked, it comes again after a "
                "restart or rebalance",
                run,
                campaign,
            )
            return
        pending.done = True
        await pending.acks.settle()

    def revoked(self, partitions: set[int], generation: int | None) -> None:
        """The events of these partitions' assignment are not acked any more."""
        for partition in partitions:
            self._revoked[partition] = generation
            acks = self._acks.pop(partition, None)
            if acks is not None:
                acks.open = False

    def assigned(self, partitions: set[int]) -> None:
        """Deliveries of partitions now another worker's stop: it delivers them."""
        for task, partition in list(self._tasks.items()):
            if partition not in partitions:
                task.cancel()

    async def stop(self) -> None:
        """Cancel what is in hand (unacked: it comes again after the restart)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for acks in self._acks.values():
            acks.open = False
        self._acks.clear()
