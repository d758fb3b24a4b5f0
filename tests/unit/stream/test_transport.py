"""What the stream consumer's fetcher proves holds no record (issue #13: a Kinesis bridge puts
a transaction marker in every score partition every pass; each used to cost a direct read)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfstream.stream.transport import FetchedGaps, resume_offset

TP0 = SimpleNamespace(topic="scores", partition=0)


def test_a_marker_between_two_fetched_records_is_a_known_gap() -> None:
    gaps = FetchedGaps()
    gaps.observe(TP0, [0, 1, 3, 4], position=5)  # 2: a commit marker
    assert gaps.holds_no_record("scores", 0, 2, 3)
    assert not gaps.holds_no_record("scores", 0, 1, 3)  # 1 is a record
    assert not gaps.holds_no_record("scores", 1, 2, 3)  # another partition


def test_markers_at_the_end_of_a_fetch_are_gaps_before_the_next_record() -> None:
    gaps = FetchedGaps()
    gaps.observe(TP0, [10, 11], position=13)  # 12: a marker the fetch passed
    gaps.observe(TP0, [15], position=16)  # 13, 14: an aborted record and its marker
    assert gaps.holds_no_record("scores", 0, 12, 15)
    assert gaps.holds_no_record("scores", 0, 13, 15)
    assert not gaps.holds_no_record("scores", 0, 11, 15)


def test_a_seek_forgets_what_was_proved() -> None:
    gaps = FetchedGaps()
    gaps.observe(TP0, [0], position=1)
    gaps.forget([TP0])
    # After a seek the next record proves nothing about what lies before it.
    gaps.observe(TP0, [50], position=51)
    assert not gaps.holds_no_record("scores", 0, 1, 50)


@pytest.mark.parametrize(("start", "end"), [(0, 1), (5, 9), (100, 101)])
def test_nothing_unproved_is_a_gap(start: int, end: int) -> None:
    gaps = FetchedGaps()
    assert not gaps.holds_no_record("scores", 0, start, end)
    gaps.observe(TP0, [1, 2, 3], position=4)
    assert not gaps.holds_no_record("scores", 0, start, end)


def test_records_fetched_and_dropped_are_never_inside_a_gap() -> None:
    # Faust fetched 5..9 and dropped 6..8 at a rebalance: they were fetched, so reading them
    # directly is still required.
    gaps = FetchedGaps()
    gaps.observe(TP0, [5, 6, 7, 8, 9], position=10)
    assert not gaps.holds_no_record("scores", 0, 6, 9)


# ---- where a source partition resumes: the earlier of Kafka's committed offset and the
# ---- position the ledger recorded with the state


def test_nothing_recorded_leaves_it_to_the_committed_offset() -> None:
    assert resume_offset(None, None) is None
    assert resume_offset(0, None) == 0
    assert resume_offset(42, None) == 42


def test_committed_past_the_recorded_position_resumes_at_the_position() -> None:
    assert resume_offset(900, 700) == 700


def test_a_replay_behind_the_recorded_position_is_honoured() -> None:
    assert resume_offset(0, 700) == 0
    assert resume_offset(250, 700) == 250


def test_recorded_but_never_committed_starts_from_the_beginning() -> None:
    assert resume_offset(None, 700) == 0


@given(st.one_of(st.none(), st.integers(0, 10**9)), st.integers(0, 10**9))
def test_never_resumes_past_either_offset(committed: int | None, recorded: int) -> None:
    offset = resume_offset(committed, recorded)
    assert offset is not None
    assert offset <= recorded
    assert committed is None or offset <= committed
    assert offset in (recorded, committed, 0)


def test_the_consumers_objects_are_handed_to_it_on_the_transport_not_the_app() -> None:
    from vfstream.settings import Settings
    from vfstream.stream.app import build_faust_app
    from vfstream.stream.transport import (
        CommittedReadConsumerThread,
        CommittedReadTransport,
        ConsumerHooks,
        install_transport,
    )

    app = build_faust_app(Settings(listen_for_notifications=False))
    hooks = ConsumerHooks(FetchedGaps())
    install_transport(app, hooks)
    assert isinstance(app.transport, CommittedReadTransport)
    assert app.transport.hooks is hooks
    assert not hasattr(app, "fetched_gaps") and not hasattr(app, "recorded_positions")
    thread = SimpleNamespace(consumer=SimpleNamespace(transport=app.transport))
    assert CommittedReadConsumerThread.fetched_gaps.fget(thread) is hooks.gaps  # type: ignore[attr-defined]
