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
