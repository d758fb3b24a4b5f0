"""The verdict reporter: report intents in, Slack posts out, one memory per campaign.

The report agent hands each intent here. The campaign's ``ReportBook`` (the ``slack-reports``
table) is read, ``decide_report`` says whether to post, and the outcome is written to the
table's changelog and awaited before the intent is acked. A restart before that write
redelivers the intent and posts it then; after it, the book marks the run done.
"""

from __future__ import annotations

import logging
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


class VerdictReporter:
    def __init__(self, table: Any, notifier: SlackNotifier) -> None:
        self.table = table
        self.notifier = notifier

    def book(self, campaign_id: str) -> ReportBook:
        raw = self.table.get(campaign_id.encode())
        return ReportBook.from_bytes(raw) if raw else ReportBook(campaignId=campaign_id)

    async def handle(self, partition: int, value: bytes) -> RunOutcome | None:
        try:
            intent = ReportIntent.model_validate_json(value)
        except (ValidationError, ValueError) as exc:
            DEAD_LETTERS.labels("report-intent").inc()
            log.error("unreadable report intent skipped: %s (%r)", exc, value[:200])
            return None
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
