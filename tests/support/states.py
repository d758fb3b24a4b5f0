"""A verification state with every field set, for tests of what is built from states."""

from __future__ import annotations

from datetime import UTC, datetime

from vfstream.domain.records import EventPreference
from vfstream.domain.state import Nudetect, VerificationState

UPDATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def sample_state(**overrides: object) -> VerificationState:
    values: dict[str, object] = {
        "campaignId": "c1",
        "globalUserId": "u1",
        "memberId": "m1",
        "score": 0.75,
        "localFanscore": 0.5,
        "accountFanscore": 0.25,
        "bandScore": 0.1,
        "isVerified": True,
        "verdict": None,
        "codes": ["a", "b"],
        "tags": ["t"],
        "nudetect": Nudetect(score=0.3, scoreBand="low"),
        "events": [EventPreference(eventId="e0", market="London"), None],
        "scoredAt": UPDATED,
        "updated": UPDATED,
        "version": 4,
    }
    return VerificationState(**{**values, **overrides})


def stored_envelope(state: VerificationState, position: int = 0, pending=(0, 0, 0)) -> bytes:
    """``state`` as the fan-state table stores it."""
    from vfstream.domain.fans import Envelope, encode_envelope
    from vfstream.domain.state import fan_state_of

    return encode_envelope(Envelope(position, tuple(pending), fan_state_of(state)))


def sample_fan(**overrides: object):  # type: ignore[no-untyped-def]
    """``sample_state`` in the hot path's form (``fans.FanState``)."""
    from vfstream.domain.state import fan_state_of

    return fan_state_of(sample_state(**overrides))
