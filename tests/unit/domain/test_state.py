"""Behaviour of the verification-state rules and the count deltas they produce (SPEC 3)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from vfstream.domain.records import EventPreference, RecordSource, ScoreRecord
from vfstream.domain.state import (
    CountDelta,
    Counts,
    Nudetect,
    Transition,
    VerificationState,
    WriteStatus,
    apply_score_record,
    count_delta,
    recount,
    sum_deltas,
)

T1 = datetime(2026, 10, 20, 12, 0, tzinfo=UTC)
T2 = T1 + timedelta(hours=1)
T3 = T1 + timedelta(hours=2)
NOW = datetime(2026, 10, 21, 9, 30, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)


def source(line: int = 2, etag: str = "etag-1", at: datetime = T1) -> RecordSource:
    key = f"scrubbed/registrants.c1.Tour.{at:%Y%m%dT%H%M%SZ}.cleaned.prepared.merged.csv"
    return RecordSource(bucket="bucket", key=key, etag=etag, line=line)


def rec(**overrides: Any) -> ScoreRecord:
    """A valid record for fan u1 of campaign c1 at rank 0 of the T1 file, unless overridden."""
    values: dict[str, Any] = {
        "campaignId": "c1",
        "campaignName": "Tour",
        "globalUserId": "u1",
        "rank": 0,
        "eventId": "ev0",
        "market": "London",
        "score": 0.8,
        "isVerified": True,
        "verdict": None,
        "scoredAt": T1,
    }
    values.update(overrides)
    values.setdefault("id", f"{values['globalUserId']}{values['rank']:03d}")
    values.setdefault("source", source(line=values["rank"] + 2, at=values["scoredAt"]))
    return ScoreRecord(**values)


def create(**overrides: Any) -> VerificationState:
    transition = apply_score_record(None, rec(**overrides), NOW)
    assert transition.status is WriteStatus.CREATED
    return transition.state


def ev(event_id: str, market: str | None = "London") -> EventPreference:
    return EventPreference(eventId=event_id, market=market)


# --- WriteStatus, CountDelta, Counts -------------------------------------------------------


def test_write_statuses_serialise_as_their_spec_names() -> None:
    assert [str(status) for status in WriteStatus] == [
        "created",
        "updated",
        "unchanged",
        "stale",
        "invalid",
        "failed",
    ]
    assert WriteStatus("stale") is WriteStatus.STALE


def test_count_deltas_add_fieldwise() -> None:
    total = CountDelta(verified=1, rejected=-1) + CountDelta(verified=2, selected=1)
    assert total == CountDelta(verified=3, rejected=-1, selected=1)


def test_adding_a_non_delta_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        CountDelta() + 1  # type: ignore[operator]


def test_zero_delta_is_zero_and_any_nonzero_field_is_not() -> None:
    assert CountDelta.zero().is_zero
    assert CountDelta.zero() == CountDelta()
    assert not CountDelta(selected=-1).is_zero
    assert not CountDelta(verified=1, rejected=-1).is_zero


def test_negated_delta_cancels_the_original() -> None:
    delta = CountDelta(verified=2, rejected=-1, selected=3)
    assert delta.negate() == CountDelta(verified=-2, rejected=1, selected=-3)
    assert (delta + delta.negate()).is_zero


def test_count_delta_is_immutable() -> None:
    with pytest.raises(ValidationError):
        CountDelta().verified = 1  # type: ignore[misc]


def test_counts_apply_returns_new_counts_and_keeps_the_old() -> None:
    before = Counts(verified=5, rejected=2, selected=1)
    after = before.apply(CountDelta(verified=1, rejected=-1, selected=1))
    assert after == Counts(verified=6, rejected=1, selected=2)
    assert before == Counts(verified=5, rejected=2, selected=1)


def test_counts_difference_is_the_delta_that_repairs_them() -> None:
    stored = Counts(verified=5, rejected=2, selected=1)
    true = Counts(verified=4, rejected=3, selected=1)
    assert stored.apply(true.difference(stored)) == true


def test_healthy_counts_have_no_violations() -> None:
    assert Counts().violations() == []
    assert Counts(verified=3, rejected=0, selected=3).violations() == []


def test_negative_counts_are_reported_per_field() -> None:
    broken = Counts().apply(CountDelta(verified=-1, selected=-2))
    assert broken.violations() == ["verified is negative (-1)", "selected is negative (-2)"]


# --- creation ----------------------------------------------------------------------------


def test_first_verified_record_creates_state_and_counts_one_verified() -> None:
    transition = apply_score_record(None, rec(isVerified=True), NOW)
    assert transition.status is WriteStatus.CREATED
    assert transition.delta == CountDelta(verified=1)


def test_first_rejected_record_counts_one_rejected() -> None:
    transition = apply_score_record(None, rec(isVerified=False), NOW)
    assert transition.delta == CountDelta(rejected=1)


def test_first_record_with_verdict_true_also_counts_selected() -> None:
    transition = apply_score_record(None, rec(isVerified=True, verdict=True), NOW)
    assert transition.delta == CountDelta(verified=1, selected=1)


@pytest.mark.parametrize("verdict", [False, None])
def test_first_record_without_verdict_true_selects_nobody(verdict: bool | None) -> None:
    transition = apply_score_record(None, rec(isVerified=False, verdict=verdict), NOW)
    assert transition.delta == CountDelta(rejected=1)


def test_created_state_carries_every_field_of_the_record() -> None:
    record = rec(
        memberId="m1",
        email="  Fan@Example.COM ",
        firstName="Ada",
        lastName="Lovelace",
        phone="+4400000",
        phoneType="mobile",
        phoneConfirmedDate="2026-01-02",
        locale="en-gb",
        localFanscore=0.1,
        accountFanscore=0.2,
        bandScore=0.3,
        verdict=False,
        nudetectScore=0.9,
        nudetectScoreBand="High",
        tags="vip|early",
        codes=["A1", "B2"],
    )
    state = apply_score_record(None, record, NOW).state
    assert state.key == "c1:u1"
    assert (state.campaignId, state.campaignName, state.globalUserId) == ("c1", "Tour", "u1")
    assert state.memberId == "m1"
    assert state.email == "fan@example.com"
    assert (state.firstName, state.lastName, state.locale) == ("Ada", "Lovelace", "en-gb")
    assert (state.phone, state.phoneType, state.phoneConfirmedDate) == (
        "+4400000",
        "mobile",
        "2026-01-02",
    )
    assert (state.score, state.localFanscore, state.accountFanscore, state.bandScore) == (
        0.8,
        0.1,
        0.2,
        0.3,
    )
    assert state.isVerified is True
    assert state.verdict is False
    assert state.nudetect == Nudetect(score=0.9, scoreBand="high")
    assert state.tags == ["vip", "early"]
    assert state.codes == ["A1", "B2"]
    assert state.events == [ev("ev0")]
    assert state.scoredAt == T1
    assert state.updated == NOW
    assert state.source == record.source


def test_created_state_starts_at_version_one() -> None:
    assert create().version == 1


def test_rank0_flag_is_set_when_the_top_choice_is_present() -> None:
    assert create(rank=0).rank0 is True


def test_first_record_at_higher_rank_leaves_holes_and_no_rank0() -> None:
    state = create(rank=2, eventId="ev2")
    assert state.events == [None, None, ev("ev2")]
    assert state.rank0 is False


def test_record_without_market_stores_event_with_null_market() -> None:
    assert create(market=None).events == [EventPreference(eventId="ev0", market=None)]


# --- unchanged ---------------------------------------------------------------------------


def test_same_record_twice_is_unchanged() -> None:
    state = create()
    transition = apply_score_record(state, rec(), LATER)
    assert transition.status is WriteStatus.UNCHANGED
    assert transition.state is state
    assert transition.delta.is_zero


def test_unchanged_write_keeps_version_updated_time_and_source() -> None:
    state = create()
    again = apply_score_record(state, rec(source=source(etag="other-etag", line=99)), LATER)
    assert again.status is WriteStatus.UNCHANGED
    assert again.state.version == 1
    assert again.state.updated == NOW
    assert again.state.source == source()


def test_record_repeating_an_already_set_rank_of_the_same_run_is_unchanged() -> None:
    state = create(rank=0)
    state = apply_score_record(state, rec(rank=1, eventId="ev1"), NOW).state
    transition = apply_score_record(state, rec(rank=0), LATER)
    assert transition.status is WriteStatus.UNCHANGED
    assert transition.state.events == [ev("ev0"), ev("ev1")]


# --- stale -------------------------------------------------------------------------------


def test_older_file_is_stale_and_changes_nothing() -> None:
    state = create(scoredAt=T2, isVerified=True, verdict=True)
    transition = apply_score_record(
        state, rec(scoredAt=T1, isVerified=False, verdict=False, eventId="old"), LATER
    )
    assert transition.status is WriteStatus.STALE
    assert transition.state is state
    assert transition.delta.is_zero


def test_stale_is_judged_by_scored_at_not_arrival_order() -> None:
    state = create(scoredAt=T3)
    for scored_at in (T1, T2):
        assert apply_score_record(state, rec(scoredAt=scored_at), LATER).status is (
            WriteStatus.STALE
        )


def test_naive_scored_at_is_taken_as_utc_rather_than_failing_to_compare() -> None:
    state = create(scoredAt=T2)
    naive_older = T1.replace(tzinfo=None)
    assert apply_score_record(state, rec(scoredAt=naive_older), LATER).status is (WriteStatus.STALE)
    naive_same = apply_score_record(state, rec(scoredAt=T2.replace(tzinfo=None)), LATER)
    assert naive_same.status is WriteStatus.UNCHANGED


# --- updated: same run -------------------------------------------------------------------


def test_second_rank_same_run_sets_event_slot() -> None:
    state = create(rank=0)
    transition = apply_score_record(state, rec(rank=1, eventId="ev1", market="Paris"), LATER)
    assert transition.status is WriteStatus.UPDATED
    assert transition.state.events == [ev("ev0"), ev("ev1", "Paris")]
    assert transition.state.rank0 is True
    assert transition.delta.is_zero


def test_same_run_rank_beyond_the_end_grows_the_list_with_holes() -> None:
    state = create(rank=0)
    state = apply_score_record(state, rec(rank=3, eventId="ev3"), LATER).state
    assert state.events == [ev("ev0"), None, None, ev("ev3")]


def test_same_run_rank_fills_a_hole_without_shrinking_the_list() -> None:
    state = create(rank=3, eventId="ev3")
    state = apply_score_record(state, rec(rank=1, eventId="ev1"), LATER).state
    assert state.events == [None, ev("ev1"), None, ev("ev3")]
    assert state.rank0 is False


def test_rank0_arriving_later_in_the_same_run_sets_the_flag() -> None:
    state = create(rank=1, eventId="ev1")
    assert state.rank0 is False
    state = apply_score_record(state, rec(rank=0), LATER).state
    assert state.rank0 is True
    assert state.events == [ev("ev0"), ev("ev1")]


def test_same_run_record_with_a_different_event_at_a_rank_overwrites_it() -> None:
    state = create(rank=0, eventId="ev0")
    transition = apply_score_record(state, rec(rank=0, eventId="evX"), LATER)
    assert transition.status is WriteStatus.UPDATED
    assert transition.state.events == [ev("evX")]


def test_fan_level_fields_take_the_latest_record_values_within_a_run() -> None:
    state = create(email="a@example.com", score=0.5, tags=["x"])
    record = rec(rank=1, eventId="ev1", email="b@example.com", score=0.6, tags=[])
    state = apply_score_record(state, record, LATER).state
    assert (state.email, state.score, state.tags) == ("b@example.com", 0.6, [])


def test_fan_level_field_cleared_by_the_record_is_cleared_in_state() -> None:
    state = create(memberId="m1", nudetectScore=0.3, nudetectScoreBand="low")
    state = apply_score_record(state, rec(memberId=None), LATER).state
    assert state.memberId is None
    assert state.nudetect == Nudetect()


def test_missing_campaign_name_keeps_the_one_already_known() -> None:
    state = create(campaignName="Tour")
    transition = apply_score_record(state, rec(campaignName=None), LATER)
    assert transition.status is WriteStatus.UNCHANGED
    assert transition.state.campaignName == "Tour"


def test_new_campaign_name_replaces_the_old_one() -> None:
    state = create(campaignName="Tour")
    state = apply_score_record(state, rec(campaignName="Tour 2027"), LATER).state
    assert state.campaignName == "Tour 2027"


# --- updated: newer run ------------------------------------------------------------------


def test_newer_file_replaces_events() -> None:
    state = create(rank=0, scoredAt=T1)
    for rank in (1, 2):
        state = apply_score_record(state, rec(rank=rank, eventId=f"ev{rank}"), NOW).state
    assert state.events == [ev("ev0"), ev("ev1"), ev("ev2")]
    transition = apply_score_record(state, rec(rank=1, eventId="new1", scoredAt=T2), LATER)
    assert transition.status is WriteStatus.UPDATED
    assert transition.state.events == [None, ev("new1")]
    assert transition.state.rank0 is False
    assert transition.state.scoredAt == T2


def test_newer_file_at_rank0_keeps_only_rank0() -> None:
    state = create(rank=2, eventId="ev2", scoredAt=T1)
    state = apply_score_record(state, rec(rank=0, scoredAt=T2), LATER).state
    assert state.events == [ev("ev0")]
    assert state.rank0 is True


def test_newer_file_with_identical_values_still_updates_to_record_its_time() -> None:
    # scoredAt must move forward, or rows of the older file would no longer be stale.
    state = create(scoredAt=T1)
    transition = apply_score_record(state, rec(scoredAt=T2), LATER)
    assert transition.status is WriteStatus.UPDATED
    assert transition.state.scoredAt == T2
    assert transition.delta.is_zero


def test_after_a_newer_file_the_older_file_is_stale() -> None:
    state = create(scoredAt=T1)
    state = apply_score_record(state, rec(scoredAt=T2, isVerified=False), LATER).state
    transition = apply_score_record(state, rec(scoredAt=T1, rank=1, eventId="ev1"), LATER)
    assert transition.status is WriteStatus.STALE
    assert transition.state.isVerified is False


# --- updated: bookkeeping ----------------------------------------------------------------


def test_every_update_increments_the_version_by_one() -> None:
    state = create()
    versions = [state.version]
    for rank in (1, 2, 3):
        state = apply_score_record(state, rec(rank=rank, eventId=f"ev{rank}"), LATER).state
        versions.append(state.version)
    assert versions == [1, 2, 3, 4]


def test_stale_and_unchanged_writes_do_not_bump_the_version() -> None:
    state = create(scoredAt=T2)
    state = apply_score_record(state, rec(scoredAt=T2), LATER).state
    state = apply_score_record(state, rec(scoredAt=T1), LATER).state
    assert state.version == 1


def test_update_stamps_the_write_time_and_the_source_of_the_change() -> None:
    state = create()
    new_source = source(line=7, etag="etag-2")
    state = apply_score_record(state, rec(verdict=True, source=new_source), LATER).state
    assert state.updated == LATER
    assert state.source == new_source


def test_update_keeps_the_old_state_object_untouched() -> None:
    state = create()
    before = state.model_dump()
    apply_score_record(state, rec(rank=1, eventId="ev1", isVerified=False), LATER)
    assert state.model_dump() == before


def test_record_of_another_fan_cannot_be_applied() -> None:
    state = create(globalUserId="u1")
    with pytest.raises(ValueError, match="cannot be applied"):
        apply_score_record(state, rec(globalUserId="u2"), LATER)
    with pytest.raises(ValueError, match="cannot be applied"):
        apply_score_record(state, rec(campaignId="c2"), LATER)


# --- count deltas through transitions ----------------------------------------------------


def test_flip_to_rejected_moves_one_count() -> None:
    state = create(isVerified=True)
    transition = apply_score_record(state, rec(isVerified=False), LATER)
    assert transition.status is WriteStatus.UPDATED
    assert transition.delta == CountDelta(verified=-1, rejected=1)


def test_flip_to_verified_moves_one_count() -> None:
    state = create(isVerified=False)
    transition = apply_score_record(state, rec(isVerified=True), LATER)
    assert transition.delta == CountDelta(verified=1, rejected=-1)


@pytest.mark.parametrize("before", [None, False])
def test_verdict_becoming_true_selects(before: bool | None) -> None:
    state = create(verdict=before)
    transition = apply_score_record(state, rec(verdict=True), LATER)
    assert transition.delta == CountDelta(selected=1)


def test_verdict_true_to_null_unselects() -> None:
    state = create(verdict=True)
    transition = apply_score_record(state, rec(verdict=None), LATER)
    assert transition.status is WriteStatus.UPDATED
    assert transition.delta == CountDelta(selected=-1)


def test_verdict_true_to_false_unselects() -> None:
    state = create(verdict=True)
    transition = apply_score_record(state, rec(verdict=False), LATER)
    assert transition.delta == CountDelta(selected=-1)


@pytest.mark.parametrize(("before", "after"), [(None, False), (False, None)])
def test_verdict_moving_between_pending_and_false_changes_no_count(
    before: bool | None, after: bool | None
) -> None:
    state = create(verdict=before)
    transition = apply_score_record(state, rec(verdict=after), LATER)
    assert transition.status is WriteStatus.UPDATED
    assert transition.delta.is_zero


def test_flip_and_unselect_in_one_record_sum_both_rows_of_the_table() -> None:
    state = create(isVerified=True, verdict=True)
    transition = apply_score_record(state, rec(isVerified=False, verdict=None), LATER)
    assert transition.delta == CountDelta(verified=-1, rejected=1, selected=-1)


def test_newer_file_flip_counts_like_any_other_update() -> None:
    state = create(isVerified=False, scoredAt=T1)
    transition = apply_score_record(state, rec(isVerified=True, verdict=True, scoredAt=T2), LATER)
    assert transition.delta == CountDelta(verified=1, rejected=-1, selected=1)


# --- count_delta directly: the SPEC table ------------------------------------------------


def state_of(is_verified: bool, verdict: bool | None, fan: str = "u1") -> VerificationState:
    return create(globalUserId=fan, isVerified=is_verified, verdict=verdict)


SPEC_TABLE = [
    # (before, after, delta): before None = no state
    (None, (True, None), CountDelta(verified=1)),
    (None, (False, None), CountDelta(rejected=1)),
    (None, (True, True), CountDelta(verified=1, selected=1)),
    (None, (False, True), CountDelta(rejected=1, selected=1)),
    ((True, None), (True, True), CountDelta(selected=1)),
    ((True, False), (True, True), CountDelta(selected=1)),
    ((False, None), (True, None), CountDelta(verified=1, rejected=-1)),
    ((True, None), (False, None), CountDelta(verified=-1, rejected=1)),
    ((True, True), (True, False), CountDelta(selected=-1)),
    ((True, True), (True, None), CountDelta(selected=-1)),
    ((True, True), (True, True), CountDelta()),
    ((False, False), (False, False), CountDelta()),
    ((False, None), (False, None), CountDelta()),
]


@pytest.mark.parametrize(("before", "after", "expected"), SPEC_TABLE)
def test_count_delta_follows_the_spec_table(
    before: tuple[bool, bool | None] | None,
    after: tuple[bool, bool | None],
    expected: CountDelta,
) -> None:
    old = state_of(*before) if before is not None else None
    assert count_delta(old, state_of(*after)) == expected


def test_count_delta_between_two_absent_states_is_zero() -> None:
    assert count_delta(None, None).is_zero


def test_removing_a_state_reverses_its_creation() -> None:
    state = state_of(True, True)
    assert count_delta(state, None) == count_delta(None, state).negate()
    assert count_delta(state, None) == CountDelta(verified=-1, selected=-1)


def test_count_delta_refuses_to_compare_different_fans() -> None:
    with pytest.raises(ValueError, match="different fans"):
        count_delta(state_of(True, None, "u1"), state_of(True, None, "u2"))


# --- recount and sum_deltas --------------------------------------------------------------


def test_recount_counts_each_campaign_separately() -> None:
    states = [
        create(campaignId="c1", globalUserId="a", isVerified=True, verdict=True),
        create(campaignId="c1", globalUserId="b", isVerified=False, verdict=True),
        create(campaignId="c1", globalUserId="c", isVerified=True, verdict=False),
        create(campaignId="c2", globalUserId="a", isVerified=False, verdict=None),
    ]
    assert recount(states) == {
        "c1": Counts(verified=2, rejected=1, selected=2),
        "c2": Counts(verified=0, rejected=1, selected=0),
    }


def test_recount_of_no_states_is_empty() -> None:
    assert recount([]) == {}


def test_recount_accepts_any_iterable() -> None:
    states = (create(globalUserId=fan) for fan in ("a", "b"))
    assert recount(states) == {"c1": Counts(verified=2)}


def test_sum_deltas_aggregates_per_campaign() -> None:
    totals = sum_deltas(
        [
            ("c1", CountDelta(verified=1)),
            ("c2", CountDelta(rejected=1)),
            ("c1", CountDelta(verified=1, selected=1)),
        ]
    )
    assert totals == {"c1": CountDelta(verified=2, selected=1), "c2": CountDelta(rejected=1)}


def test_sum_deltas_drops_campaigns_whose_deltas_cancel_out() -> None:
    totals = sum_deltas(
        [
            ("c1", CountDelta(verified=1, rejected=-1)),
            ("c1", CountDelta(verified=-1, rejected=1)),
            ("c2", CountDelta()),
            ("c3", CountDelta(selected=1)),
        ]
    )
    assert totals == {"c3": CountDelta(selected=1)}


def test_sum_deltas_of_nothing_is_empty() -> None:
    assert sum_deltas([]) == {}


# --- serialisation -----------------------------------------------------------------------


def test_state_survives_a_json_round_trip_with_holes_and_nudetect() -> None:
    state = create(rank=2, eventId="ev2", nudetectScore=0.4, nudetectScoreBand="medium")
    state = apply_score_record(state, rec(rank=0, market=None), LATER).state
    restored = VerificationState.from_json(state.to_json())
    assert restored == state
    assert restored.events == [EventPreference(eventId="ev0"), None, ev("ev2")]
    assert restored.scoredAt == T1
    assert restored.version == 2


def test_state_json_includes_the_rank0_flag_for_downstream_readers() -> None:
    import json

    document = json.loads(create(rank=0).to_json())
    assert document["rank0"] is True
    assert document["events"] == [{"eventId": "ev0", "market": "London"}]
    assert document["version"] == 1
    assert document["scoredAt"] == "2026-10-20T12:00:00Z"


def test_rank0_in_stored_json_cannot_contradict_the_events() -> None:
    import json

    document = json.loads(create(rank=0).to_json())
    document["rank0"] = False
    restored = VerificationState.from_json(json.dumps(document))
    assert restored.rank0 is True


def test_state_is_immutable() -> None:
    state = create()
    with pytest.raises(ValidationError):
        state.isVerified = False  # type: ignore[misc]


def test_transition_is_immutable() -> None:
    transition = apply_score_record(None, rec(), NOW)
    assert isinstance(transition, Transition)
    with pytest.raises(ValidationError):
        transition.status = WriteStatus.FAILED  # type: ignore[misc]


def test_state_version_below_one_is_rejected() -> None:
    document = create().model_dump()
    document["version"] = 0
    with pytest.raises(ValidationError):
        VerificationState.model_validate(document)


# --- properties --------------------------------------------------------------------------

CAMPAIGNS = ("c1", "c2", "c3")
FANS = ("u1", "u2", "u3", "u4")
TIMES = (T1, T2, T3)

random_records = st.builds(
    rec,
    campaignId=st.sampled_from(CAMPAIGNS),
    globalUserId=st.sampled_from(FANS),
    rank=st.integers(min_value=0, max_value=4),
    eventId=st.sampled_from(("e1", "e2", "e3")),
    scoredAt=st.sampled_from(TIMES),
    isVerified=st.booleans(),
    verdict=st.sampled_from((True, False, None)),
    score=st.sampled_from((0.0, 0.5, 1.0)),
    email=st.sampled_from((None, "a@example.com")),
)


def run(
    records: list[ScoreRecord],
    store: dict[str, VerificationState] | None = None,
    now: datetime = NOW,
) -> tuple[dict[str, VerificationState], list[tuple[str, Transition]]]:
    """Apply records in order the way the stream processor does: one state per key."""
    store = dict(store or {})
    log: list[tuple[str, Transition]] = []
    for record in records:
        transition = apply_score_record(store.get(record.key), record, now)
        store[record.key] = transition.state
        log.append((record.campaignId, transition))
    return store, log


def as_delta(counts: Counts) -> CountDelta:
    return CountDelta(verified=counts.verified, rejected=counts.rejected, selected=counts.selected)


@settings(max_examples=200, deadline=None)
@given(st.lists(random_records, max_size=40))
def test_summed_deltas_always_equal_a_recount_and_never_go_negative(
    records: list[ScoreRecord],
) -> None:
    store, log = run(records)
    running: dict[str, Counts] = {}
    for campaign, transition in log:
        running[campaign] = running.get(campaign, Counts()).apply(transition.delta)
        assert running[campaign].violations() == []
    expected = recount(store.values())
    summed = sum_deltas((campaign, t.delta) for campaign, t in log)
    assert summed == {campaign: as_delta(counts) for campaign, counts in expected.items()}
    assert {c: counts for c, counts in running.items() if counts != Counts()} == expected
    for counts in expected.values():
        fans = counts.verified + counts.rejected
        assert 0 <= counts.selected <= fans


@settings(max_examples=200, deadline=None)
@given(st.lists(random_records, max_size=30))
def test_statuses_versions_and_deltas_are_consistent(records: list[ScoreRecord]) -> None:
    store: dict[str, VerificationState] = {}
    writes: Counter[str] = Counter()
    latest: dict[str, datetime] = {}
    for record in records:
        before = store.get(record.key)
        transition = apply_score_record(before, record, NOW)
        status = transition.status
        if status in (WriteStatus.STALE, WriteStatus.UNCHANGED):
            assert transition.state is before
            assert transition.delta.is_zero
        else:
            writes[record.key] += 1
            assert transition.state.source == record.source
            assert transition.delta == count_delta(before, transition.state)
        assert (before is None) == (status is WriteStatus.CREATED)
        if status is WriteStatus.STALE:
            assert before is not None and record.scoredAt < before.scoredAt
        state = transition.state
        assert state.version == writes[record.key]
        latest[record.key] = max(latest.get(record.key, record.scoredAt), record.scoredAt)
        assert state.scoredAt == latest[record.key]
        if status is not WriteStatus.STALE:
            assert state.events[record.rank] == EventPreference(
                eventId=record.eventId, market=record.market
            )
        assert state.rank0 == (bool(state.events) and state.events[0] is not None)
        store[record.key] = state


@st.composite
def scoring_runs(draw: st.DrawFn) -> list[ScoreRecord]:
    """Well-formed files: within one file a fan's rows agree on every fan-level value and
    each (fan, rank) appears once, as the upstream pipeline produces them."""
    rows: list[ScoreRecord] = []
    times = draw(st.lists(st.sampled_from(TIMES), min_size=1, max_size=3, unique=True))
    for at in times:
        for campaign in draw(st.lists(st.sampled_from(CAMPAIGNS), max_size=2, unique=True)):
            fans = draw(st.lists(st.sampled_from(FANS), min_size=1, max_size=3, unique=True))
            for fan in fans:
                fan_values = {
                    "isVerified": draw(st.booleans()),
                    "verdict": draw(st.sampled_from((True, False, None))),
                    "score": draw(st.sampled_from((0.1, 0.9))),
                }
                ranks = draw(st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True))
                for rank in ranks:
                    rows.append(
                        rec(
                            campaignId=campaign,
                            globalUserId=fan,
                            rank=rank,
                            eventId=draw(st.sampled_from(("e1", "e2"))),
                            scoredAt=at,
                            **fan_values,
                        )
                    )
    return rows


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_delivery_order_converges_and_a_full_replay_changes_nothing(
    data: st.DataObject,
) -> None:
    rows = data.draw(scoring_runs())
    shuffled = data.draw(st.permutations(rows))
    in_order = sorted(rows, key=lambda r: r.scoredAt)

    first, _ = run(in_order)
    second, second_log = run(shuffled)
    assert {k: s.fan_data() for k, s in first.items()} == {
        k: s.fan_data() for k, s in second.items()
    }

    replayed, replay_log = run(data.draw(st.permutations(rows)), store=second, now=LATER)
    assert all(t.status in (WriteStatus.STALE, WriteStatus.UNCHANGED) for _, t in replay_log)
    assert sum_deltas((c, t.delta) for c, t in replay_log) == {}
    assert replayed == second

    summed = sum_deltas((c, t.delta) for c, t in second_log + replay_log)
    assert summed == {c: as_delta(counts) for c, counts in recount(replayed.values()).items()}


@settings(max_examples=100, deadline=None)
@given(st.lists(random_records, min_size=1, max_size=15))
def test_any_reachable_state_survives_a_json_round_trip(records: list[ScoreRecord]) -> None:
    store, _ = run(records)
    for state in store.values():
        assert VerificationState.from_json(state.to_json()) == state
