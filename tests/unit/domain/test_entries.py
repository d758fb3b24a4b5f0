"""Rank-0 records for the entry service: fields, marketIds, batches of 500 (pure domain)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.states import sample_state
from vfstream.domain.entries import (
    MAX_RECORDS_PER_REQUEST,
    entry_record,
    market_ids,
    plan_entries,
)
from vfstream.domain.records import EventPreference

MARKETS = {"c1": {"London": "m-lon", "Paris": "m-par"}}


def test_entry_record_has_the_spec_fields_and_verdict_is_is_verified() -> None:
    state = sample_state(verdict=False, isVerified=True, email="a@b.c", phone="1", locale="en")
    record = entry_record(state, "m-lon")
    assert set(record) == {
        "memberId", "globalUserId", "phoneType", "phone", "phoneConfirmedDate", "email",
        "firstName", "lastName", "verdict", "score", "localFanscore", "bandScore",
        "marketId", "locale",
    }  # fmt: skip
    assert record["verdict"] is True and record["marketId"] == "m-lon"
    assert (record["score"], record["localFanscore"]) == (0.75, 0.5)


def test_only_rank_0_fans_go_with_the_market_id_of_their_rank_0_event() -> None:
    top = sample_state(globalUserId="top", events=[EventPreference(eventId="e", market="Paris")])
    second = sample_state(globalUserId="second", events=[None, EventPreference(eventId="e")])
    plan = plan_entries([top, second], MARKETS)
    assert plan.requests == {"c1": [[entry_record(top, "m-par")]]}


def test_an_unknown_market_is_reported_not_guessed() -> None:
    lost = sample_state(globalUserId="x", events=[EventPreference(eventId="e", market="Rome")])
    none = sample_state(globalUserId="y", events=[EventPreference(eventId="e", market=None)])
    plan = plan_entries([lost, none], MARKETS)
    assert plan.requests == {}
    assert [(s.globalUserId, market) for s, market in plan.unknown_market] == [
        ("x", "Rome"),
        ("y", ""),
    ]


def test_campaigns_without_markets_are_left_to_the_caller() -> None:
    other = sample_state(campaignId="c2")
    plan = plan_entries([other], MARKETS)
    assert plan.requests == {} and plan.unknown_market == []


@given(st.integers(0, 1300))
def test_requests_hold_at_most_500_records_and_lose_none(fans: int) -> None:
    states = [sample_state(globalUserId=f"u{n}") for n in range(fans)]
    plan = plan_entries(states, MARKETS)
    batches = plan.requests.get("c1", [])
    assert all(0 < len(batch) <= MAX_RECORDS_PER_REQUEST for batch in batches)
    assert [r["globalUserId"] for batch in batches for r in batch] == [
        s.globalUserId for s in states
    ]


def test_markets_answer_maps_names_to_ids() -> None:
    assert market_ids([{"id": 7, "name": "London"}]) == {"London": "7"}


@pytest.mark.parametrize("answer", [{"id": 1}, [{"id": 1}], ["London"], None])
def test_a_markets_answer_of_another_shape_is_an_error(answer: object) -> None:
    with pytest.raises(ValueError):
        market_ids(answer)
