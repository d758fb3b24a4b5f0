"""Verification state, its write rules and the count deltas they imply (SPEC 3). No I/O here.

Counts are never computed by reading the state table: each state transition yields a
`CountDelta`, and the deltas are summed per campaign. `recount` is the independent check
that this bookkeeping is right (reconcile and the tests compare the two).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

from vfstream.domain.fans import (
    Event,
    FanState,
    Refused,
    WriteStatus,
    apply_row,
    iso_now,
    row_from_json,
    utc_micros,
)
from vfstream.domain.keys import fan_key
from vfstream.domain.records import (
    EventPreference,
    FanContact,
    RecordSource,
    ScoreRecord,
)

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
        return fan_key(self.campaignId, self.globalUserId)

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


def fan_state_of(state: VerificationState) -> FanState:
    """The hot path's form of a state."""
    body = orjson.loads(state.to_json())
    return FanState(
        campaignId=state.campaignId,
        campaignName=state.campaignName,
        globalUserId=state.globalUserId,
        memberId=state.memberId,
        email=state.email,
        firstName=state.firstName,
        lastName=state.lastName,
        phone=state.phone,
        phoneType=state.phoneType,
        phoneConfirmedDate=state.phoneConfirmedDate,
        locale=state.locale,
        score=state.score,
        localFanscore=state.localFanscore,
        accountFanscore=state.accountFanscore,
        bandScore=state.bandScore,
        isVerified=state.isVerified,
        verdict=state.verdict,
        codes=list(state.codes),
        tags=list(state.tags),
        nudetectScore=state.nudetect.score,
        nudetectScoreBand=state.nudetect.scoreBand,
        events=[None if e is None else Event(e.eventId, e.market) for e in state.events],
        scoredAt=body["scoredAt"],
        scored_us=utc_micros(body["scoredAt"]),
        updated=body["updated"],
        version=state.version,
        source=body["source"],
    )


def verification_state_of(fan: FanState) -> VerificationState:
    """The edges' form of a hot-path state (``fan_state_of`` the other way)."""
    return VerificationState.model_validate(fan.public_json())


def apply_score_record(
    state: VerificationState | None, record: ScoreRecord, now: datetime
) -> Transition:
    """Fold one record into the fan's state: ``fans.apply_row`` (the rules the verify agent
    applies), for callers holding pydantic models.

    Ordering is by the file's scoredAt, not by arrival, so replays and out-of-order
    deliveries converge: older files are `stale`, a newer file starts a fresh events list,
    and rows of the same file fill their rank slots.
    """
    if state is not None and state.key != record.key:
        raise ValueError(f"record {record.key!r} cannot be applied to state {state.key!r}")
    row = row_from_json(record.to_json())
    if isinstance(row, Refused):
        raise ValueError(f"record {record.key!r} is not a score record: {row.reasons}")
    status, applied, delta = apply_row(
        fan_state_of(state) if state is not None else None, row, iso_now(as_utc(now))
    )
    if applied is None:
        assert state is not None
        return Transition(state=state, status=status)
    verified, rejected, selected = delta
    return Transition(
        state=verification_state_of(applied),
        status=status,
        delta=CountDelta(verified=verified, rejected=rejected, selected=selected),
    )


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


def recount_by_partition(
    states: Iterable[tuple[int, FanState]],
) -> dict[str, dict[int, Counts]]:
    """campaign -> source partition -> counts, from (partition, fan state) pairs alone: what
    the partial counts must equal (reconcile, and the crash property's check)."""
    out: dict[str, dict[int, list[int]]] = {}
    for partition, state in states:
        verified, rejected, selected = state.standing()
        total = out.setdefault(state.campaignId, {}).setdefault(partition, [0, 0, 0])
        total[0] += verified
        total[1] += rejected
        total[2] += selected
    return {
        campaign: {
            partition: Counts(verified=v, rejected=r, selected=s)
            for partition, (v, r, s) in partitions.items()
        }
        for campaign, partitions in out.items()
    }
