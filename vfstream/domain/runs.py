"""The operator's view of scoring runs: one row per ingested file of a campaign, from the
tally's memory (announced and settled runs) and the reporter's (what Slack got). No I/O."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from vfstream.domain.ledger import CampaignTotals
from vfstream.domain.reports import ReportBook, RunAnnouncement, RunOutcome

REPORT_STATES = {
    RunOutcome.POSTED: "posted",
    RunOutcome.UNCHANGED: "not needed",
    RunOutcome.FAILED: "given up",
    RunOutcome.WARNED: "pending",
}


def _row(
    run: RunAnnouncement,
    applied: int,
    settled_at: datetime | None,
    book: ReportBook | None,
) -> dict[str, Any]:
    outcome = book.runs.get(run.runId) if book is not None else None
    return {
        "runId": run.runId,
        "campaignId": run.campaignId,
        "campaignName": run.campaignName,
        "bucket": run.bucket,
        "key": run.key,
        "rowsIn": run.valid + run.invalid,
        "valid": run.valid,
        "invalid": run.invalid,
        "applied": applied,
        "expected": run.valid,
        "announcedAt": run.announcedAt.isoformat() if run.announcedAt else None,
        "settled": settled_at is not None,
        "settledAt": settled_at.isoformat() if settled_at else None,
        "report": REPORT_STATES[outcome] if outcome is not None else "pending",
    }


def run_rows(totals: CampaignTotals, book: ReportBook | None) -> list[dict[str, Any]]:
    """The campaign's runs, newest first: those still settling, then the settled ones."""
    open_runs = [
        _row(run, totals.run_applied(run.runId), None, book) for run in totals.announced.values()
    ]
    settled = [_row(s.run, s.applied, s.settledAt, book) for s in totals.history]
    return newest_first(open_runs + settled)


def newest_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of any campaigns in one list, the most recently announced first."""
    return sorted(rows, key=lambda row: row["announcedAt"] or row["settledAt"] or "", reverse=True)
