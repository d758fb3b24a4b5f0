"""Verification state, its write rules and the count deltas they imply (SPEC 3). No I/O here.

Counts are never computed by reading the state table: each state transition yields a
`CountDelta`, and the deltas are summed per campaign. `recount` is the independent check
that this bookkeeping is right (reconcile and the tests compare the two).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

from vfstream.domain.records import (
    EventPreference,
    FanContact,
    RecordSource,
    ScoreRecord,
    record_key,
)


class WriteStatus(StrEnum):
    """Outcome of one write; `invalid` and `failed` are set by callers, never by the rules here."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    STALE = "stale"
    INVALID = "invalid"
    FAILED = "failed"


# Fields that describe the write rather than the fan: they never make a write "changed".
BOOKKEEPING_FIELDS: frozenset[str] = frozenset({"updated", "version", "source"})


def as_utc(moment: datetime) -> datetime:
    """Naive times are taken as UTC so that comparing scoredAt values can never raise."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class CountDelta(BaseModel):
    """A change to one campaign's counts; deltas are summed, never the counts re-read."""

    model_config = ConfigDict(frozen=True)

    verified: int = 0
    rejected: int = 0
    selected: int = 0

    @classmethod
    def zero(cls) -> CountDelta:
        return cls()

    def __add__(self, other: CountDelta) -> CountDelta:
        if not isinstance(other, CountDelta):
            return NotImplemented
        return CountDelta(
            verified=self.verified + other.verified,
            rejected=self.rejected + other.rejected,
            selected=self.selected + other.selected,
        )

    @property
    def is_zero(self) -> bool:
        """Zero deltas are dropped, so nothing downstream wakes up for a no-op write."""
        return self.verified == 0 and self.rejected == 0 and self.selected == 0

    def negate(self) -> CountDelta:
        """The delta that undoes this one (e.g. removing a state reverses its creation)."""
        return CountDelta(verified=-self.verified, rejected=-self.rejected, selected=-self.selected)


class Counts(BaseModel):
    """One campaign's counts. Negative values are representable on purpose: a broken
    delta stream must be visible to reconcile (`violations`), not crash the writer."""

    model_config = ConfigDict(frozen=True)

    verified: int = 0
    rejected: int = 0
    selected: int = 0

    def apply(self, delta: CountDelta) -> Counts:
        return Counts(
            verified=self.verified + delta.verified,
            rejected=self.rejected + delta.rejected,
            selected=self.selected + delta.selected,
        )

    def difference(self, other: Counts) -> CountDelta:
        """The delta that turns `other` into `self`; reconcile --fix applies it."""
        return CountDelta(
            verified=self.verified - other.verified,
            rejected=self.rejected - other.rejected,
            selected=self.selected - other.selected,
        )

    def violations(self) -> list[str]:
        """Invariants checkable without the state: only sign. The others need `recount`."""
        return [
            f"{name} is negative ({value})"
            for name, value in (
                ("verified", self.verified),
                ("rejected", self.rejected),
                ("selected", self.selected),
            )
            if value < 0
        ]


class Nudetect(BaseModel):
    model_config = ConfigDict(frozen=True)

    score: float | None = None
    scoreBand: Literal["low", "medium", "high"] | None = None


class VerificationState(FanContact):
    """Everything known about one fan in one campaign; one per `<campaignId>:<globalUserId>`.

    `rank0` is derived from `events` so the two can never disagree; it is still part of
    the JSON because downstream readers (Dynamo `rank`, the entry service) filter on it.
    """

    model_config = ConfigDict(frozen=True)

    campaignId: str = Field(min_length=1)
    campaignName: str | None = None
    globalUserId: str = Field(min_length=1)
    score: float
    localFanscore: float | None = None
    accountFanscore: float | None = None
    bandScore: float | None = None
    isVerified: bool
    verdict: bool | None = None
    codes: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    nudetect: Nudetect = Field(default_factory=Nudetect)
    events: list[EventPreference | None] = Field(default_factory=list)
    scoredAt: datetime
    updated: datetime
    version: int = Field(default=1, ge=1)
    source: RecordSource | None = None

    @field_validator("scoredAt", "updated")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return as_utc(value)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def rank0(self) -> bool:
        return bool(self.events) and self.events[0] is not None

    @property
    def key(self) -> str:
        return record_key(self.campaignId, self.globalUserId)

    def fan_data(self) -> dict[str, Any]:
        """What a write is judged by: an identical re-delivery must be `unchanged`."""
        return self.model_dump(exclude=set(BOOKKEEPING_FIELDS))

    def to_json(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> VerificationState:
        # rank0 is in the JSON but computed; the default extra="ignore" drops it on the way in.
        return cls.model_validate_json(data)


_FAN_DATA_FIELDS = tuple(
    name for name in VerificationState.model_fields if name not in BOOKKEEPING_FIELDS
)


class Transition(BaseModel):
    """The result of applying one record: what to store, how to report it, what to count."""

    model_config = ConfigDict(frozen=True)

    state: VerificationState
    status: WriteStatus
    delta: CountDelta = Field(default_factory=CountDelta)


def _event_of(record: ScoreRecord) -> EventPreference:
    return EventPreference(eventId=record.eventId, market=record.market)


def _fan_fields(record: ScoreRecord, previous: VerificationState | None) -> dict[str, Any]:
    # campaignName is campaign-level and absent from Kinesis-fed records: a record that
    # lacks it must not erase a name learned from a file.
    campaign_name = record.campaignName
    if campaign_name is None and previous is not None:
        campaign_name = previous.campaignName
    return {
        "campaignId": record.campaignId,
        "campaignName": campaign_name,
        "globalUserId": record.globalUserId,
        "memberId": record.memberId,
        "email": record.email,
        "firstName": record.firstName,
        "lastName": record.lastName,
        "phone": record.phone,
        "phoneType": record.phoneType,
        "phoneConfirmedDate": record.phoneConfirmedDate,
        "locale": record.locale,
        "score": record.score,
        "localFanscore": record.localFanscore,
        "accountFanscore": record.accountFanscore,
        "bandScore": record.bandScore,
        "isVerified": record.isVerified,
        "verdict": record.verdict,
        "codes": list(record.codes),
        "tags": list(record.tags),
        "nudetect": Nudetect(score=record.nudetectScore, scoreBand=record.nudetectScoreBand),
        "scoredAt": as_utc(record.scoredAt),
    }


def _events_with(
    events: list[EventPreference | None], rank: int, event: EventPreference
) -> list[EventPreference | None]:
    grown = list(events) + [None] * (rank + 1 - len(events))
    grown[rank] = event
    return grown


def apply_score_record(
    state: VerificationState | None, record: ScoreRecord, now: datetime
) -> Transition:
    """Fold one record into the fan's state.

    Ordering is by the file's scoredAt, not by arrival, so replays and out-of-order
    deliveries converge: older files are `stale`, a newer file starts a fresh events list,
    and rows of the same file fill their rank slots.
    """
    if state is not None and state.key != record.key:
        raise ValueError(f"record {record.key!r} cannot be applied to state {state.key!r}")
    scored_at = as_utc(record.scoredAt)
    # model_construct: every value below comes from validated models; this runs per record.
    if state is None:
        created = VerificationState.model_construct(
            **_fan_fields(record, None),
            events=_events_with([], record.rank, _event_of(record)),
            updated=now,
            version=1,
            source=record.source,
        )
        return Transition(
            state=created, status=WriteStatus.CREATED, delta=count_delta(None, created)
        )
    if scored_at < state.scoredAt:
        return Transition(state=state, status=WriteStatus.STALE)
    base_events = state.events if scored_at == state.scoredAt else []
    candidate = VerificationState.model_construct(
        **_fan_fields(record, state),
        events=_events_with(base_events, record.rank, _event_of(record)),
        updated=state.updated,
        version=state.version,
        source=state.source,
    )
    if _same_fan_data(candidate, state):
        return Transition(state=state, status=WriteStatus.UNCHANGED)
    updated = candidate.model_copy(
        update={"updated": as_utc(now), "version": state.version + 1, "source": record.source}
    )
    return Transition(state=updated, status=WriteStatus.UPDATED, delta=count_delta(state, updated))


def _same_fan_data(a: VerificationState, b: VerificationState) -> bool:
    """fan_data() equality without dumping both models (this runs once per record)."""
    return all(getattr(a, name) == getattr(b, name) for name in _FAN_DATA_FIELDS)


def _standing(state: VerificationState) -> CountDelta:
    """What one state contributes to its campaign's counts."""
    return CountDelta(
        verified=1 if state.isVerified else 0,
        rejected=0 if state.isVerified else 1,
        selected=1 if state.verdict is True else 0,
    )


def count_delta(before: VerificationState | None, after: VerificationState | None) -> CountDelta:
    """SPEC 3's delta table, expressed as "contribution after minus contribution before".

    That single rule reproduces every row of the table (a flip moves one count each way,
    verdict true <-> not true moves `selected`) and makes deltas sum to a recount by
    construction; a removal (after=None) reverses the creation.
    """
    if before is not None and after is not None and before.key != after.key:
        raise ValueError(f"no delta between different fans: {before.key!r} -> {after.key!r}")
    total = CountDelta.zero()
    if after is not None:
        total = total + _standing(after)
    if before is not None:
        total = total + _standing(before).negate()
    return total


def recount(states: Iterable[VerificationState]) -> dict[str, Counts]:
    """Counts rebuilt from the states alone: the yardstick the delta bookkeeping must match."""
    totals: dict[str, CountDelta] = {}
    for state in states:
        totals[state.campaignId] = totals.get(state.campaignId, CountDelta()) + _standing(state)
    return {
        campaign: Counts(verified=d.verified, rejected=d.rejected, selected=d.selected)
        for campaign, d in totals.items()
    }


def sum_deltas(items: Iterable[tuple[str, CountDelta]]) -> dict[str, CountDelta]:
    """Pre-aggregate per campaign so one counts write covers a whole batch; net zeros vanish."""
    totals: dict[str, CountDelta] = {}
    for campaign, delta in items:
        totals[campaign] = totals.get(campaign, CountDelta()) + delta
    return {campaign: delta for campaign, delta in totals.items() if not delta.is_zero}
