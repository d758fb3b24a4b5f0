"""The fan key scheme: distinct (campaign, fan) pairs never share a key (issue #12)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfstream.domain.keys import fan_key, is_fan_key, split_fan_key

# Ids drawn with the characters that could confuse a joined key, and any others.
_IDS = st.text(
    st.sampled_from(":%#3A2a5b") | st.characters(exclude_categories=("Cs",)),
    min_size=1,
    max_size=12,
)


def test_a_campaign_holding_the_separator_does_not_take_another_campaigns_fan() -> None:
    # The pair that collided under "<campaignId>:<globalUserId>".
    assert fan_key("p3col:a", "b") != fan_key("p3col", "a:b")


def test_plain_ids_keep_the_readable_key() -> None:
    assert fan_key("c1001", "g00001") == "c1001:g00001"


@given(_IDS, _IDS, _IDS, _IDS)
def test_no_two_distinct_pairs_map_to_the_same_key(c1: str, u1: str, c2: str, u2: str) -> None:
    if (c1, u1) != (c2, u2):
        assert fan_key(c1, u1) != fan_key(c2, u2)
    else:
        assert fan_key(c1, u1) == fan_key(c2, u2)


@given(_IDS, _IDS)
def test_a_key_splits_back_into_its_pair_and_is_never_a_bookkeeping_key(
    campaign: str, user: str
) -> None:
    key = fan_key(campaign, user)
    assert split_fan_key(key) == (campaign, user)
    assert is_fan_key(key.encode())
    assert not key.startswith("#")


@pytest.mark.parametrize("key", ["#counts:0:c1", "#position:3", "no-separator"])
def test_keys_that_are_not_a_fans_are_refused_by_split(key: str) -> None:
    with pytest.raises(ValueError):
        split_fan_key(key)
