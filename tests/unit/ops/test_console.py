"""The console's reading of committed table values, damaged ones included."""

from __future__ import annotations

from vfstream.domain.ledger import CampaignTotals
from vfstream.domain.reports import ReportBook, RunAnnouncement, RunOutcome
from vfstream.ops.console import campaign_runs


def totals_with_a_settled_run() -> bytes:
    totals = CampaignTotals(campaignId="c1")
    totals.announce(RunAnnouncement(runId="r1", campaignId="c1", valid=0))
    totals.settle()
    return totals.to_bytes()


def test_a_campaigns_runs_carry_the_report_state_of_its_book() -> None:
    book = ReportBook(campaignId="c1")
    book.record("r1", RunOutcome.POSTED)

    (run,) = campaign_runs(b"c1", totals_with_a_settled_run(), book.to_bytes())

    assert (run["runId"], run["settled"], run["report"]) == ("r1", True, "posted")


def test_damaged_values_are_left_out_not_fatal() -> None:
    assert campaign_runs(b"c1", b"not json", None) == []
    assert campaign_runs(b"c1", b'{"campaignId": 5}', None) == []
    (run,) = campaign_runs(b"c1", totals_with_a_settled_run(), b"\xff garbage")
    assert run["report"] == "pending"
