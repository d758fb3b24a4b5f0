"""The partials topic's one message model and the tally's rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from pydantic import ValidationError

from vfstream.domain.ledger import (
    PENDING_RUNS,
    TRACKED_RUNS,
    CampaignTotals,
    PartialCounts,
    PartialTally,
    RunProgress,
    RunTally,
)
from vfstream.domain.reports import IntentKind, RunAnnouncement
from vfstream.domain.state import CountDelta
from vfstream.domain.tally import (
    AnnounceMessage,
    PartialMessage,
    PartialsMessage,
    RunMessage,
    add_to_window,
    announce_message,
    apply_message,
    correction_message,
    message_refusal,
    overdue_intents,
    partial_message,
    read_message,
    run_message,
)

T0 = datetime(2026, 11, 30, 12, tzinfo=UTC)


def partial(partition: int, verified: int, watermark: int) -> PartialCounts:
    return PartialCounts(
        campaignId="c1", partition=partition, verified=verified, rejected=1, watermark=watermark
    )


def test_the_ledgers_framing_is_the_models_encoding() -> None:
    tally = PartialTally("c1", 2, verified=3, rejected=1, selected=1, watermark=99)
    run = RunTally("r1", "c1", 2, applied=4, watermark=99)

    framed_partial = read_message(partial_message(tally.to_json()))
    framed_run = read_message(run_message(run.to_json()))

    assert framed_partial.partial == PartialCounts.model_validate_json(tally.to_json())
    assert framed_partial.replace is False
    assert orjson.loads(framed_partial.to_bytes()) == orjson.loads(partial_message(tally.to_json()))
    assert framed_run.run == RunProgress.model_validate_json(run.to_json())


def test_announcements_and_corrections_read_back() -> None:
    run = RunAnnouncement(runId="r1", campaignId="c1", valid=3, invalid=1)

    assert read_message(announce_message(run)).announce == run
    correction = read_message(correction_message(partial(0, 5, 10)))
    assert correction.replace is True and correction.partial == partial(0, 5, 10)


@pytest.mark.parametrize(
    "value",
    [
        b"{}",
        b"not json",
        b'{"partial": {"campaignId": "c1"}}',
        b'{"run": {"runId": "r", "campaignId": "c", "partition": 0}, '
        b'"announce": {"runId": "r", "campaignId": "c"}}',
        b'{"partial": {"campaignId": "c1", "partition": "zero"}}',
    ],
)
def test_a_message_that_is_not_exactly_one_thing_is_refused(value: bytes) -> None:
    with pytest.raises(ValidationError):
        read_message(value)


def test_an_older_partial_moves_nothing_and_a_correction_overrides_it() -> None:
    totals = CampaignTotals(campaignId="c1")
    first = apply_message(totals, PartialMessage(partial=partial(0, 5, 10)), T0)
    older = apply_message(totals, PartialMessage(partial=partial(0, 9, 4)), T0)
    fixed = apply_message(totals, PartialMessage(partial=partial(0, 2, 4), replace=True), T0)

    assert first.moved == CountDelta(verified=5, rejected=1)
    assert older.moved == CountDelta()
    assert fixed.moved == CountDelta(verified=-3)
    assert totals.counts.verified == 2


def progress(partition: int, applied: int) -> PartialsMessage:
    return PartialsMessage(
        run=RunProgress(runId="r1", campaignId="c1", partition=partition, applied=applied)
    )


def test_a_run_settles_once_when_its_records_are_applied_and_reports_its_counts() -> None:
    totals = CampaignTotals(campaignId="c1")
    announce = RunAnnouncement(runId="r1", campaignId="c1", valid=3)
    apply_message(totals, AnnounceMessage(announce=announce), T0)
    apply_message(totals, PartialMessage(partial=partial(0, 3, 7)), T0)
    half = apply_message(
        totals,
        RunMessage(run=RunProgress(runId="r1", campaignId="c1", partition=0, applied=2)),
        T0,
    )
    done = apply_message(
        totals,
        RunMessage(run=RunProgress(runId="r1", campaignId="c1", partition=1, applied=1)),
        T0,
    )
    again = apply_message(totals, AnnounceMessage(announce=announce), T0)

    assert half.intents == []
    (intent,) = done.intents
    assert intent.kind is IntentKind.SETTLED and intent.counts.verified == 3
    assert again.intents == [] and "r1" not in totals.announced


def test_a_run_is_overdue_once_past_the_limit_and_not_warned_twice() -> None:
    totals = CampaignTotals(campaignId="c1")
    apply_message(
        totals, AnnounceMessage(announce=RunAnnouncement(runId="r1", campaignId="c1", valid=5)), T0
    )
    limit = timedelta(minutes=10)

    assert overdue_intents(totals, T0 + timedelta(minutes=9), limit, set()) == []
    (late,) = overdue_intents(totals, T0 + timedelta(minutes=11), limit, set())
    assert late.kind is IntentKind.OVERDUE and late.run.runId == "r1"
    assert overdue_intents(totals, T0 + timedelta(minutes=11), limit, {"r1"}) == []


def test_a_window_adds_up_every_move() -> None:
    window = add_to_window(None, CountDelta(verified=2, rejected=1))
    window = add_to_window(window, CountDelta(verified=-1, selected=1))

    assert orjson.loads(window) == {"verified": 1, "rejected": 1, "selected": 1}


# ---- issue #20: any producer may write the partials topic -------------------------------


def announce(run_id: str, campaign: str = "c1", **changes: object) -> PartialsMessage:
    run = RunAnnouncement(runId=run_id, campaignId=campaign, valid=1)
    return AnnounceMessage(announce=run.model_copy(update=changes))


@pytest.mark.parametrize(
    ("key", "message", "reason"),
    [
        (b"c2", PartialMessage(partial=PartialCounts(campaignId="c1", partition=0)), "key"),
        (b"c1", PartialMessage(partial=PartialCounts(campaignId="c1", partition=6)), "partition"),
        (b"c1", PartialMessage(partial=PartialCounts(campaignId="c1", partition=-1)), "partition"),
        (
            b"c1",
            PartialMessage(partial=PartialCounts(campaignId="c1", partition=0, verified=-5)),
            "negative",
        ),
        (b"c1", announce("r" * 600), "runId: 600 bytes"),
        (b"c1", announce("r1", key="k" * 2000), "key: 2000 bytes"),
        (b"c1", announce("r1", valid=-1), "negative"),
        (
            b"c1",
            RunMessage(run=RunProgress(runId="r1", campaignId="c1", partition=0, applied=-1)),
            "negative",
        ),
        (("c" * 300).encode(), announce("r1", campaign="c" * 300), "campaignId: 300 bytes"),
    ],
)
def test_a_message_that_cannot_be_so_is_refused_with_its_reason(
    key: bytes, message: PartialsMessage, reason: str
) -> None:
    refused = message_refusal(key, message, partitions=6)

    assert refused is not None and reason in refused


def test_the_ledgers_own_messages_are_taken() -> None:
    partial = PartialCounts(campaignId="c1", partition=5, verified=3, watermark=9)
    assert message_refusal(b"c1", PartialMessage(partial=partial), partitions=6) is None
    assert message_refusal(b"c1", announce("0123456789abcdef"), partitions=6) is None


def test_a_campaigns_totals_stay_bounded_whatever_runs_arrive() -> None:
    totals = CampaignTotals(campaignId="c1")
    now = datetime(2026, 12, 2, tzinfo=UTC)
    for n in range(2_000):
        apply_message(totals, announce(f"pending-{n:05d}", valid=10), now)
        progress = RunProgress(runId=f"seen-{n:05d}", campaignId="c1", partition=0, applied=1)
        apply_message(totals, RunMessage(run=progress), now)

    assert len(totals.announced) == PENDING_RUNS
    assert list(totals.announced)[-1] == "pending-01999", "the newest are kept"
    assert len(totals.runs) == TRACKED_RUNS
    assert len(totals.to_bytes()) < 512 * 1024


def test_a_message_on_another_partition_than_its_campaigns_is_refused() -> None:
    from vfstream.domain.keys import partition_for

    home = partition_for(b"c1", 6)
    message = announce("r1")

    assert message_refusal(b"c1", message, partitions=6, arrived_on=home) is None
    refused = message_refusal(b"c1", message, partitions=6, arrived_on=(home + 1) % 6)
    assert refused is not None and f"belongs to partition {home}" in refused


def test_each_kind_of_partials_message_reads_as_its_own_type() -> None:
    """The partials protocol as a tagged union (issue #22): the kind is the message's type."""
    run = RunAnnouncement(runId="r1", campaignId="c1", valid=3)
    progress = RunProgress(runId="r1", campaignId="c1", partition=0, applied=2)

    counts = partial(0, 1, 2).model_dump_json().encode()
    assert isinstance(read_message(partial_message(counts)), PartialMessage)
    assert isinstance(read_message(run_message(progress.model_dump_json().encode())), RunMessage)
    assert isinstance(read_message(announce_message(run)), AnnounceMessage)
    # A null kind beside the one held is no second kind (as before the union).
    held = read_message(b'{"partial": null, "announce": ' + run.model_dump_json().encode() + b"}")
    assert held == AnnounceMessage(announce=run)
    with pytest.raises(ValidationError, match="exactly one of partial, run, announce"):
        read_message(b'{"replace": true}')
