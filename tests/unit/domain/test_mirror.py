"""Changelog entries to DynamoDB items in the SPEC 4 layout (pure domain)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.states import sample_fan, sample_state, stored_envelope
from vfstream.domain.ledger import CampaignTotals, PartialCounts
from vfstream.domain.mirror import (
    COUNTS_SK,
    SLACK_COUNTS_SK,
    MirroredTable,
    MirrorItem,
    fan_item,
    item_for_entry,
    latest_per_key,
    newer_than_stored,
)
from vfstream.domain.records import EventPreference
from vfstream.domain.reports import ReportBook
from vfstream.domain.state import Counts


def test_fan_item_has_the_spec_layout() -> None:
    item = fan_item(sample_fan())
    assert item.version == 4
    assert item.attributes == {
        "PK": "fan:u1",
        "SK": "campaign:c1",
        "globalUserId": "u1",
        "campaignId": "c1",
        "memberId": "m1",
        "score": 0.75,
        "registrationScore": 0.5,
        "accountScore": 0.25,
        "bandScore": 0.1,
        "isVerified": True,
        "verdict": None,
        "codes": ["a", "b"],
        "tags": ["t"],
        "origin": {"nudetect": {"score": 0.3, "scoreBand": "low"}},
        "events": [{"eventId": "e0", "market": "London"}, None],
        "date": {"updated": "2026-01-02T03:04:05+00:00"},
        "version": 4,
        "rank": "0",
    }


def test_a_fan_without_rank_0_has_no_rank_attribute() -> None:
    item = fan_item(sample_fan(events=[None, EventPreference(eventId="e1")]))
    assert "rank" not in item.attributes


def test_fan_state_entries_become_fan_items_and_bookkeeping_keys_nothing() -> None:
    body = stored_envelope(sample_state(), 9)
    item = item_for_entry(MirroredTable.FAN_STATE, b"c1:u1", body)
    assert item is not None and item.key == ("fan:u1", "campaign:c1")
    for key in (b"#counts:0:c1", b"#run:0:r1", b"#index:0"):
        assert item_for_entry(MirroredTable.FAN_STATE, key, b"{}") is None
    assert item_for_entry(MirroredTable.FAN_STATE, b"c1:u1", None) is None


def test_campaign_totals_become_the_meta_counts_item() -> None:
    totals = CampaignTotals(campaignId="c1")
    totals.merge_partial(PartialCounts(campaignId="c1", partition=0, verified=3, rejected=1))
    totals.merge_partial(PartialCounts(campaignId="c1", partition=1, verified=2, selected=4))
    item = item_for_entry(MirroredTable.CAMPAIGN_COUNTS, b"c1", totals.to_bytes())
    assert item is not None and item.version is None
    assert item.attributes == {
        "PK": "campaign:c1",
        "SK": COUNTS_SK,
        "campaignId": "c1",
        "verified": 5,
        "rejected": 1,
        "selected": 4,
    }


def test_the_last_posted_counts_become_meta_slack_counts_once_there_are_any() -> None:
    never = ReportBook(campaignId="c1")
    assert item_for_entry(MirroredTable.SLACK_REPORTS, b"c1", never.to_bytes()) is None
    posted = ReportBook(campaignId="c1", last=Counts(verified=7, rejected=2, selected=1))
    item = item_for_entry(MirroredTable.SLACK_REPORTS, b"c1", posted.to_bytes())
    assert item is not None and item.key == ("campaign:c1", SLACK_COUNTS_SK)
    assert (item.attributes["verified"], item.attributes["selected"]) == (7, 1)


def test_an_unreadable_entry_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        item_for_entry(MirroredTable.FAN_STATE, b"c1:u1", b"not json")


def versioned(gid: str, version: int) -> MirrorItem:
    return fan_item(sample_fan(globalUserId=gid, version=version))


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 9)), max_size=40))
def test_one_item_per_key_survives_and_it_is_the_last_one(entries: list[tuple[str, int]]) -> None:
    items = [versioned(gid, version) for gid, version in entries]
    kept = latest_per_key(items)
    assert len(kept) == len({gid for gid, _ in entries})
    last = {gid: version for gid, version in entries}
    assert {item.attributes["globalUserId"]: item.version for item in kept} == last


def test_stored_newer_or_equal_versions_are_never_replaced() -> None:
    items = [versioned("a", 3), versioned("b", 3), versioned("c", 3)]
    stored = {("fan:a", "campaign:c1"): 4, ("fan:b", "campaign:c1"): 3}
    fresh = newer_than_stored(items, stored)
    assert [item.attributes["globalUserId"] for item in fresh] == ["c"]


def test_counts_items_carry_no_version_and_are_always_written() -> None:
    item = MirrorItem(attributes={"PK": "campaign:c1", "SK": COUNTS_SK})
    assert newer_than_stored([item], {("campaign:c1", COUNTS_SK): 99}) == [item]
