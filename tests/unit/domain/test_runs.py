from datetime import UTC, datetime, timedelta

from vfstream.domain.ledger import HISTORY_RUNS, CampaignTotals, RunProgress
from vfstream.domain.reports import ReportBook, RunAnnouncement, RunOutcome
from vfstream.domain.runs import run_rows

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _run(run_id: str, valid: int, invalid: int = 0, minutes: int = 0) -> RunAnnouncement:
    return RunAnnouncement(
        runId=run_id,
        campaignId="c1",
        campaignName="Tour",
        bucket="b",
        key=f"scrubbed/{run_id}.csv",
        valid=valid,
        invalid=invalid,
        announcedAt=T0 + timedelta(minutes=minutes),
    )


def _progress(totals: CampaignTotals, run_id: str, partition: int, applied: int) -> None:
    totals.merge_run(
        RunProgress(runId=run_id, campaignId="c1", partition=partition, applied=applied)
    )


def test_open_run_shows_applied_against_expected_and_pending_report() -> None:
    totals = CampaignTotals(campaignId="c1")
    totals.announce(_run("r1", valid=10, invalid=3))
    _progress(totals, "r1", 0, 4)
    _progress(totals, "r1", 1, 2)

    (row,) = run_rows(totals, None)

    assert row["rowsIn"] == 13
    assert (row["valid"], row["invalid"]) == (10, 3)
    assert (row["applied"], row["expected"]) == (6, 10)
    assert row["settled"] is False and row["settledAt"] is None
    assert row["report"] == "pending"


def test_settled_run_keeps_when_and_what_it_reached() -> None:
    totals = CampaignTotals(campaignId="c1")
    totals.announce(_run("r1", valid=5))
    _progress(totals, "r1", 0, 5)
    totals.settle(T0 + timedelta(minutes=3))

    (row,) = run_rows(totals, None)

    assert row["settled"] is True
    assert row["settledAt"] == (T0 + timedelta(minutes=3)).isoformat()
    assert row["applied"] == 5


def test_report_state_follows_the_reporters_book() -> None:
    totals = CampaignTotals(campaignId="c1")
    for i in range(len(RunOutcome)):
        totals.announce(_run(f"r{i}", valid=0, minutes=i))
    totals.settle(T0)
    book = ReportBook(campaignId="c1")
    for i, outcome in enumerate(RunOutcome):
        book.record(f"r{i}", outcome)

    states = {row["runId"]: row["report"] for row in run_rows(totals, book)}

    assert states == {"r0": "posted", "r1": "not needed", "r2": "given up", "r3": "pending"}


def test_rows_come_newest_first_open_and_settled_mixed() -> None:
    totals = CampaignTotals(campaignId="c1")
    totals.announce(_run("old", valid=0, minutes=0))
    totals.settle(T0)
    totals.announce(_run("new", valid=2, minutes=10))
    totals.announce(_run("mid", valid=0, minutes=5))
    totals.settle(T0 + timedelta(minutes=6))

    assert [row["runId"] for row in run_rows(totals, None)] == ["new", "mid", "old"]


def test_history_keeps_only_the_newest_settled_runs() -> None:
    totals = CampaignTotals(campaignId="c1")
    for i in range(HISTORY_RUNS + 5):
        totals.announce(_run(f"r{i}", valid=0, minutes=i))
        totals.settle(T0)

    rows = run_rows(totals, None)

    assert len(rows) == HISTORY_RUNS
    assert rows[0]["runId"] == f"r{HISTORY_RUNS + 4}"
    assert "r0" not in {row["runId"] for row in rows}


def test_history_survives_the_table_encoding() -> None:
    totals = CampaignTotals(campaignId="c1")
    totals.announce(_run("r1", valid=0))
    totals.settle(T0)

    again = CampaignTotals.from_bytes(totals.to_bytes())

    assert run_rows(again, None) == run_rows(totals, None)
