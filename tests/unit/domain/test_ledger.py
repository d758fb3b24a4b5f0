"""Applying one record to a fan's stored envelope and its partition's tallies."""

from __future__ import annotations

import orjson

from tests.support.rows import hot_row
from vfstream.domain.fans import WriteStatus
from vfstream.domain.ledger import (
    PartialCounts,
    PartialTally,
    RunProgress,
    RunTally,
    apply_record,
)
from vfstream.domain.limits import Limits

NOW = "2026-11-30T12:00:00Z"


def test_a_new_fan_folds_into_the_partial_and_counts_for_its_run() -> None:
    partial, run = PartialTally("c1", 0), RunTally("r1", "c1", 0)

    applied = apply_record(None, hot_row(), 5, partial, -1, run, NOW)

    assert applied.status is WriteStatus.CREATED and applied.envelope is not None
    assert (partial.verified, partial.rejected, partial.watermark) == (1, 0, 5)
    assert (run.applied, applied.counted_for_run) == (1, True)


def test_a_record_at_or_below_the_stored_position_changes_nothing() -> None:
    partial, run = PartialTally("c1", 0), RunTally("r1", "c1", 0)
    first = apply_record(None, hot_row(), 5, partial, -1, run, NOW)

    again = apply_record(first.envelope, hot_row(), 5, partial, 5, run, NOW)

    assert again.status is WriteStatus.UNCHANGED and again.redelivered
    assert (partial.verified, run.applied) == (1, 1)


def test_a_flip_moves_one_count_and_a_rank_past_the_limit_is_refused() -> None:
    partial = PartialTally("c1", 0)
    first = apply_record(None, hot_row(), 1, partial, -1, None, NOW)
    flipped = apply_record(first.envelope, hot_row(verified=False), 2, partial, 1, None, NOW)
    refused = apply_record(
        flipped.envelope, hot_row(rank=5), 3, partial, 2, None, NOW, Limits(events_per_fan=5)
    )

    assert (partial.verified, partial.rejected) == (0, 1)
    assert refused.status is WriteStatus.INVALID and refused.envelope is None


def test_the_hot_path_tallies_write_the_same_json_as_their_models() -> None:
    partial = PartialTally("c1", 3, verified=2, rejected=1, selected=1, watermark=9)
    run = RunTally("r1", "c1", 3, applied=4, watermark=9)

    assert PartialCounts.model_validate_json(partial.to_json()).model_dump() == orjson.loads(
        partial.to_json()
    )
    assert PartialTally.from_json(partial.to_json()) == partial
    assert RunTally.from_json(run.to_json()) == run
    assert RunProgress.model_validate_json(run.to_json()).applied == 4


def test_the_hot_path_tallies_have_exactly_their_models_fields() -> None:
    from dataclasses import fields

    assert [f.name for f in fields(PartialTally)] == list(PartialCounts.model_fields)
    assert [f.name for f in fields(RunTally)] == list(RunProgress.model_fields)
