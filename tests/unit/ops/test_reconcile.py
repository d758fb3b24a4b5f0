"""Reconcile's recount from the fan-state changelog alone."""

from __future__ import annotations

from tests.support.rows import hot_row
from vfstream.domain.keys import fan_key, partial_key, partition_for
from vfstream.domain.ledger import PartialCounts, PartialTally, apply_record
from vfstream.domain.state import Counts
from vfstream.ops.reconcile import durable_partials, misplaced_fans, recount_partials

NOW = "2026-11-30T12:00:00Z"


def state(user: str, verified: bool, verdict: bool | None = None) -> bytes:
    applied = apply_record(
        None, hot_row(user, 0, verified, verdict), 1, PartialTally("c1", 0), -1, None, NOW
    )
    assert applied.encoded is not None
    return applied.encoded


def test_fans_are_recounted_per_campaign_and_partition_and_other_keys_ignored() -> None:
    durable = PartialCounts(campaignId="c1", partition=0).model_dump_json().encode()
    changelog = {
        fan_key("c1", "u1").encode(): (0, state("u1", True, True)),
        fan_key("c1", "u2").encode(): (0, state("u2", False)),
        fan_key("c1", "u3").encode(): (2, state("u3", True)),
        partial_key(0, "c1"): (0, durable),
    }

    assert recount_partials(changelog) == {
        "c1": {0: Counts(verified=1, rejected=1, selected=1), 2: Counts(verified=1)}
    }
    assert list(durable_partials(changelog)) == [("c1", 0)]


def test_a_fan_stored_in_another_partition_than_its_hash_is_named() -> None:
    key = fan_key("c1", "u1").encode()
    right = partition_for(key, 6)
    changelog = {key: ((right + 1) % 6, state("u1", True))}

    assert misplaced_fans(changelog, 6) == [key.decode()]
    assert misplaced_fans({key: (right, state("u1", True))}, 6) == []
