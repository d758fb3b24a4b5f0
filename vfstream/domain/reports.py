"""Verdict reports (SPEC 4, Slack): when a scoring run has settled, whether to report it, and
the text. No I/O.

A run is announced by its ingestion marker (how many valid records it produced) and settles
once the verification agents have applied that many of its records. The reporter keeps, per
campaign, the counts it last posted and what it did for every run, so a redelivered intent,
a forced re-ingestion or a replay never posts the same counts twice.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from vfstream.domain.records import ScoringFileError, parse_scoring_key
from vfstream.domain.state import Counts

# Per campaign, the reporter remembers this many runs; older ones cannot be redelivered
# anyway once their intents are committed.
REMEMBERED_RUNS = 500


class RunAnnouncement(BaseModel):
    """An ingested scoring file: what its run must reach to be settled."""

    runId: str
    campaignId: str
    campaignName: str = ""
    bucket: str = ""
    key: str = ""
    valid: int = 0
    invalid: int = 0
    announcedAt: datetime | None = None  # when the tally first saw it (overdue warnings)

    @classmethod
    def from_marker(cls, marker: dict[str, Any]) -> RunAnnouncement | None:
        """The ingestion marker of a committed file, or None for a marker that is not one."""
        if marker.get("status") != "ingested" or not marker.get("runId"):
            return None
        key = str(marker.get("key") or "")
        try:
            name = parse_scoring_key(key).campaign_name
        except ScoringFileError:
            name = ""
        return cls(
            runId=str(marker["runId"]),
            campaignId=str(marker.get("campaignId") or ""),
            campaignName=name,
            bucket=str(marker.get("bucket") or ""),
            key=key,
            valid=int(marker.get("valid") or 0),
            invalid=int(marker.get("invalid") or 0),
        )


class IntentKind(StrEnum):
    SETTLED = "settled"
    OVERDUE = "overdue"


class ReportIntent(BaseModel):
    """What the tally asks the reporter to consider, keyed by campaign on the reports topic."""

    kind: IntentKind
    run: RunAnnouncement
    counts: Counts
    applied: int = 0

    def to_bytes(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self)


class RunOutcome(StrEnum):
    POSTED = "posted"  # the report went out
    UNCHANGED = "unchanged"  # counts equal to the last report: nothing posted
    FAILED = "failed"  # gave up after retries; the next report diffs against the last posted
    WARNED = "warned"  # an overdue warning went out; a later settle still reports


class ReportBook(BaseModel):
    """The reporter's memory for one campaign (the ``slack-reports`` table's value)."""

    campaignId: str
    last: Counts | None = None  # the counts last posted (SPEC ``meta:slack:counts``)
    lastText: str | None = None
    runs: dict[str, RunOutcome] = Field(default_factory=dict)

    def record(self, run_id: str, outcome: RunOutcome) -> None:
        self.runs.pop(run_id, None)
        self.runs[run_id] = outcome
        while len(self.runs) > REMEMBERED_RUNS:
            del self.runs[next(iter(self.runs))]

    def to_bytes(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> ReportBook:
        return cls.model_validate_json(data)


class Decision(BaseModel):
    post: bool
    outcome: RunOutcome | None  # recorded when not posting; None = a duplicate, record nothing
    text: str = ""


def decide_report(book: ReportBook, intent: ReportIntent) -> Decision:
    """Whether this intent becomes a post; the text when it does."""
    done = book.runs.get(intent.run.runId)
    if intent.kind is IntentKind.OVERDUE:
        if done is not None:
            return Decision(post=False, outcome=None)
        return Decision(post=True, outcome=None, text=format_overdue_warning(intent))
    if done is not None and done is not RunOutcome.WARNED:
        return Decision(post=False, outcome=None)
    # Never reported counts are zeros: a header-only first file posted "+0" everywhere.
    if (book.last or Counts()) == intent.counts:
        return Decision(post=False, outcome=RunOutcome.UNCHANGED)
    return Decision(post=True, outcome=None, text=format_verdict_report(intent, book.last))


def _signed(value: int) -> str:
    return f"+{value:,}" if value >= 0 else f"-{-value:,}"


def slack_escape(text: str) -> str:
    """Text from outside (campaign names and ids, object keys) made inert in Slack's mrkdwn:
    ``&``, ``<`` and ``>`` escaped as Slack's formatting rules ask, so a name cannot mention
    ``<!channel>`` or hide a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _campaign_title(run: RunAnnouncement) -> str:
    campaign = slack_escape(run.campaignId)
    return f"{slack_escape(run.campaignName)} ({campaign})" if run.campaignName else campaign


def format_verdict_report(intent: ReportIntent, previous: Counts | None) -> str:
    counts, run = intent.counts, intent.run
    before = previous or Counts()
    lines = [
        f"*Verified Fan scoring settled* — {_campaign_title(run)}",
        f"{counts.verified:,} verified ({_signed(counts.verified - before.verified)})",
        f"{counts.rejected:,} rejected ({_signed(counts.rejected - before.rejected)})",
        f"{counts.selected:,} selected ({_signed(counts.selected - before.selected)})",
        f"file: {slack_escape(run.key)} — {run.invalid:,} invalid rows",
    ]
    return "\n".join(lines)


def format_overdue_warning(intent: ReportIntent) -> str:
    run = intent.run
    return "\n".join(
        [
            f":warning: *Scoring run not settled* — {_campaign_title(run)}",
            f"{intent.applied:,} of {run.valid:,} records applied so far",
            f"file: {slack_escape(run.key)} — {run.invalid:,} invalid rows",
        ]
    )
