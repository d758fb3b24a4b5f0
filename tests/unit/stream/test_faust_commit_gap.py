"""Why the ledger records positions (README, "Where a partition resumes"): Faust's offset
bookkeeping commits a run of acknowledged offsets past one that was never acknowledged.

This pins faust-streaming's ``Consumer._new_offset`` down; if a release fixes it, these
fail and the README can say so. The committed offset is the next one to read.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

from faust.transport.consumer import Consumer
from intervaltree import IntervalTree

TP = "scores-0"


def offset_faust_commits(committed: int | None, acked: range) -> int | None:
    bookkeeping = SimpleNamespace(
        _acked=defaultdict(list, {TP: list(acked)}),
        _acked_index=defaultdict(set, {TP: set(acked)}),
        _gap=defaultdict(IntervalTree),
        _committed_offset=defaultdict(lambda: None, {TP: committed}),
    )
    return Consumer._new_offset(bookkeeping, TP)  # type: ignore[arg-type]


def test_a_gap_of_two_offsets_holds_the_commit_back() -> None:
    assert offset_faust_commits(100, range(102, 105)) is None


def test_a_gap_of_one_offset_is_committed_past() -> None:
    # Offset 100 was never acknowledged, yet the commit moves to 105.
    assert offset_faust_commits(100, range(101, 105)) == 105


def test_any_gap_is_committed_past_when_nothing_or_zero_was_committed() -> None:
    assert offset_faust_commits(None, range(50, 55)) == 55
    assert offset_faust_commits(0, range(50, 55)) == 55
