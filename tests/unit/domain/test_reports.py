"""When a scoring run settles and what the verdict report says (pure domain)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfstream.domain.ledger import CampaignTotals, RunProgress
from vfstream.domain.reports import (
    REMEMBERED_RUNS,
    IntentKind,
    ReportBook,
    ReportIntent,
    RunAnnouncement,
    RunOutcome,
    decide_report,
    format_overdue_warning,
    format_verdict_report,
)
from vfstream.domain.state import Counts

KEY = "scrubbed/registrants.c1.Big Tour.20260101T000000Z.cleaned.prepared.merged.csv"


def marker(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "bucket": "b",
        "key": KEY,
        "campaignId": "c1",
        "status": "ingested",
        "valid": 10,
        "invalid": 2,
        "runId": "r1",
    }
    return {**base, **overrides}


def run(run_id: str = "r1", valid: int = 10) -> RunAnnouncement:
    announced = RunAnnouncement.from_marker(marker(runId=run_id, valid=valid))
    assert announced is not None
    return announced


def intent(counts: Counts, run_id: str = "r1", kind: IntentKind = IntentKind.SETTLED):
    return ReportIntent(kind=kind, run=run(run_id), counts=counts, applied=4)


def test_a_committed_marker_announces_its_run_with_the_campaign_name_from_the_key() -> None:
    announced = run()
    assert (announced.campaignName, announced.valid, announced.invalid) == ("Big Tour", 10, 2)


@pytest.mark.parametrize("bad", [{"status": "failed"}, {"status": "skipped"}, {"runId": None}])
def test_markers_of_failed_or_skipped_files_announce_nothing(bad: dict[str, object]) -> None:
    assert RunAnnouncement.from_marker(marker(**bad)) is None


def test_an_unparseable_key_keeps_the_run_but_without_a_name() -> None:
    announced = RunAnnouncement.from_marker(marker(key="other/file.csv"))
    assert announced is not None and announced.campaignName == ""


def progress(totals: CampaignTotals, run_id: str, partition: int, applied: int) -> None:
    totals.merge_run(
        RunProgress(runId=run_id, campaignId="c1", partition=partition, applied=applied)
    )


def test_a_run_settles_once_all_its_records_are_applied_across_partitions() -> None:
    totals = CampaignTotals(campaignId="c1")
    totals.announce(run(valid=10))
    progress(totals, "r1", 0, 6)
    assert totals.settle() == []
    progress(totals, "r1", 1, 4)
    assert [r.runId for r in totals.settle()] == ["r1"]
    assert totals.settle() == []


def test_progress_before_the_announcement_settles_on_arrival() -> None:
    totals = CampaignTotals(campaignId="c1")
    progress(totals, "r1", 0, 10)
    assert totals.settle() == []
    totals.announce(run(valid=10))
    assert [r.runId for r in totals.settle()] == ["r1"]


def test_a_redelivered_announcement_of_a_settled_run_does_not_settle_it_again() -> None:
    totals = CampaignTotals(campaignId="c1")
    totals.announce(run(valid=0))
    assert len(totals.settle()) == 1
    totals.announce(run(valid=0))
    assert totals.settle() == [] and totals.announced == {}


def test_settled_run_memory_is_bounded() -> None:
    totals = CampaignTotals(campaignId="c1")
    for number in range(REMEMBERED_RUNS + 20):
        totals.announce(run(f"r{number}", valid=0))
        totals.settle()
    assert (
        len(totals.settled) == REMEMBERED_RUNS and totals.settled[-1] == f"r{REMEMBERED_RUNS + 19}"
    )


def test_first_settled_run_is_reported_with_diffs_from_zero() -> None:
    decision = decide_report(ReportBook(campaignId="c1"), intent(Counts(verified=75000)))
    assert decision.post
    assert "75,000 verified (+75,000)" in decision.text
    assert "Big Tour (c1)" in decision.text and KEY in decision.text
    assert "2 invalid rows" in decision.text


def test_report_shows_the_change_since_the_last_posted_counts() -> None:
    book = ReportBook(campaignId="c1", last=Counts(verified=72000, rejected=900, selected=10))
    text = format_verdict_report(
        intent(Counts(verified=75000, rejected=850, selected=10)), book.last
    )
    assert "75,000 verified (+3,000)" in text
    assert "850 rejected (-50)" in text
    assert "10 selected (+0)" in text


def test_unchanged_counts_are_recorded_but_not_posted() -> None:
    book = ReportBook(campaignId="c1", last=Counts(verified=5))
    decision = decide_report(book, intent(Counts(verified=5), run_id="r2"))
    assert not decision.post and decision.outcome is RunOutcome.UNCHANGED


@pytest.mark.parametrize("done", [RunOutcome.POSTED, RunOutcome.UNCHANGED, RunOutcome.FAILED])
def test_a_redelivered_intent_of_a_handled_run_is_a_duplicate(done: RunOutcome) -> None:
    book = ReportBook(campaignId="c1", runs={"r1": done})
    decision = decide_report(book, intent(Counts(verified=99)))
    assert not decision.post and decision.outcome is None


def test_a_run_warned_as_overdue_still_reports_when_it_settles() -> None:
    book = ReportBook(campaignId="c1", runs={"r1": RunOutcome.WARNED})
    assert decide_report(book, intent(Counts(verified=3))).post


def test_an_overdue_warning_goes_out_once_and_never_after_the_run_was_handled() -> None:
    warning = intent(Counts(verified=3), kind=IntentKind.OVERDUE)
    first = decide_report(ReportBook(campaignId="c1"), warning)
    assert first.post and "not settled" in first.text and "4 of 10 records" in first.text
    for done in RunOutcome:
        assert not decide_report(ReportBook(campaignId="c1", runs={"r1": done}), warning).post


@given(st.lists(st.tuples(st.sampled_from(["r1", "r2", "r3"]), st.integers(0, 3)), max_size=30))
def test_the_same_counts_are_never_posted_twice_in_a_row(events: list[tuple[str, int]]) -> None:
    book = ReportBook(campaignId="c1")
    posted: list[Counts] = []
    for run_id, verified in events:
        decision = decide_report(book, intent(Counts(verified=verified), run_id=run_id))
        if decision.post:
            posted.append(Counts(verified=verified))
            book.last = Counts(verified=verified)
            book.record(run_id, RunOutcome.POSTED)
        elif decision.outcome is not None:
            book.record(run_id, decision.outcome)
    assert all(a != b for a, b in itertools.pairwise(posted))
    assert len(posted) <= len({run_id for run_id, _ in events})


def test_a_header_only_first_file_posts_no_zero_report() -> None:
    decision = decide_report(ReportBook(campaignId="c1"), intent(Counts()))
    assert not decision.post and decision.outcome is RunOutcome.UNCHANGED


def test_campaign_names_ids_and_keys_cannot_mention_a_channel_or_hide_a_link() -> None:
    hostile = "<!channel> <https:||evil.example|click> & more"
    announced = run().model_copy(
        update={"campaignName": hostile, "campaignId": "c<1>", "key": f"scrubbed/{hostile}"}
    )
    text = format_verdict_report(
        ReportIntent(kind=IntentKind.SETTLED, run=announced, counts=Counts(verified=1)), None
    )
    assert "<" not in text and ">" not in text
    assert "&lt;!channel&gt; &lt;https:||evil.example|click&gt; &amp; more" in text
    assert "(c&lt;1&gt;)" in text
    warning = format_overdue_warning(
        ReportIntent(kind=IntentKind.OVERDUE, run=announced, counts=Counts())
    )
    assert "<" not in warning and "&lt;!channel&gt;" in warning
