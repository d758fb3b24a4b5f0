"""Where a source partition resumes: the earlier of Kafka's committed offset and the
position the ledger recorded with the state."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vfstream.domain.ledger import resume_offset


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
