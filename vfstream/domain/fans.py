"""The verification state on the hot path: score rows in, fan states out (SPEC 3). No I/O.

The verify agent applies every record through here, so nothing here is a pydantic model:
rows and states are slotted dataclasses, a record is decoded from the JSON object the edge
(ingestor, bridge) already validated with cheap structural checks only, and a fan's stored
envelope is a compact JSON array. ``vfstream.domain.state`` keeps the pydantic
``VerificationState`` for the edges (the web view, tests); ``FanState.to_verification_state``
and ``public_json`` give its exact shape.

Positions: a record's position is ``offset * POSITION_SLOTS + index``, the offset of the
batch message that carried it and its index in the batch, so positions order records the way
they were produced and a redelivered batch is recognised record by record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from vfstream.domain.keys import fan_key

# Index slots per batch message: more than a batch of the broker's largest message can hold.
POSITION_SLOTS = 1 << 20
ENVELOPE_FORMAT = 2  # the first element of a stored envelope


def position_of(offset: int, index: int) -> int:
    return offset * POSITION_SLOTS + index


def offset_of(position: int) -> int:
    return position // POSITION_SLOTS


class WriteStatus(StrEnum):
    """The outcome of one write (SPEC 3)."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    STALE = "stale"
    INVALID = "invalid"
    FAILED = "failed"


Delta = tuple[int, int, int]  # verified, rejected, selected
ZERO: Delta = (0, 0, 0)


class MalformedRecord(ValueError):
    """A record that is not a score record; the reasons say why."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


@dataclass(slots=True, frozen=True)
class Event:
    eventId: str
    market: str | None


@dataclass(slots=True, frozen=True)
class Nudetect:
    score: float | None
    scoreBand: str | None


@dataclass(slots=True)
class ScoreRow:
    """One score record as the verify agent applies it."""

    campaignId: str
    campaignName: str | None
    globalUserId: str
    rank: int
    eventId: str
    market: str | None
    score: float
    localFanscore: float | None
    accountFanscore: float | None
    bandScore: float | None
    isVerified: bool
    verdict: bool | None
    nudetectScore: float | None
    nudetectScoreBand: str | None
    tags: list[str]
    codes: list[str]
    memberId: str | None
    email: str | None
    firstName: str | None
    lastName: str | None
    phone: str | None
    phoneType: str | None
    phoneConfirmedDate: str | None
    locale: str | None
    scoredAt: str
    scored_us: int  # scoredAt as UTC microseconds: comparable whatever the offset
    source: dict[str, Any] | None

    @property
    def key(self) -> str:
        return fan_key(self.campaignId, self.globalUserId)

    @property
    def run_id(self) -> str | None:
        source = self.source
        if not source:
            return None
        run = source.get("run")
        if run:
            return str(run)
        return f"s3://{source.get('bucket')}/{source.get('key')}@{source.get('etag')}"


@dataclass(slots=True)
class FanState:
    """One fan of one campaign: the fields of SPEC 3's verification state."""

    campaignId: str
    campaignName: str | None
    globalUserId: str
    memberId: str | None
    email: str | None
    firstName: str | None
    lastName: str | None
    phone: str | None
    phoneType: str | None
    phoneConfirmedDate: str | None
    locale: str | None
    score: float
    localFanscore: float | None
    accountFanscore: float | None
    bandScore: float | None
    isVerified: bool
    verdict: bool | None
    codes: list[str]
    tags: list[str]
    nudetectScore: float | None
    nudetectScoreBand: str | None
    events: list[Event | None]
    scoredAt: str
    scored_us: int
    updated: str
    version: int
    source: dict[str, Any] | None

    @property
    def rank0(self) -> bool:
        return bool(self.events) and self.events[0] is not None

    @property
    def nudetect(self) -> Nudetect:
        return Nudetect(self.nudetectScore, self.nudetectScoreBand)

    @property
    def key(self) -> str:
        return fan_key(self.campaignId, self.globalUserId)

    def standing(self) -> Delta:
        """What this state contributes to its campaign's counts."""
        return (
            1 if self.isVerified else 0,
            0 if self.isVerified else 1,
            1 if self.verdict is True else 0,
        )

    def public_json(self) -> dict[str, Any]:
        """The state as the web view and the README show it (VerificationState's JSON)."""
        return {
            "memberId": self.memberId,
            "email": self.email,
            "firstName": self.firstName,
            "lastName": self.lastName,
            "phone": self.phone,
            "phoneType": self.phoneType,
            "phoneConfirmedDate": self.phoneConfirmedDate,
            "locale": self.locale,
            "campaignId": self.campaignId,
            "campaignName": self.campaignName,
            "globalUserId": self.globalUserId,
            "score": self.score,
            "localFanscore": self.localFanscore,
            "accountFanscore": self.accountFanscore,
            "bandScore": self.bandScore,
            "isVerified": self.isVerified,
            "verdict": self.verdict,
            "codes": list(self.codes),
            "tags": list(self.tags),
            "nudetect": {"score": self.nudetectScore, "scoreBand": self.nudetectScoreBand},
            "events": [
                None if e is None else {"eventId": e.eventId, "market": e.market}
                for e in self.events
            ],
            "scoredAt": self.scoredAt,
            "updated": self.updated,
            "version": self.version,
            "source": _public_source(self.source),
            "rank0": self.rank0,
        }

    def to_verification_state(self) -> Any:
        from vfstream.domain.state import VerificationState

        return VerificationState.model_validate(self.public_json())


_STREAM_FIELDS = ("stream", "shardId", "sequenceNumber")


def _public_source(source: dict[str, Any] | None) -> dict[str, Any] | None:
    """A record's source as RecordSource serialises it: ``run`` always there, the Kinesis
    fields only when set."""
    if source is None:
        return None
    public = {
        "bucket": source.get("bucket"),
        "key": source.get("key"),
        "etag": source.get("etag"),
        "line": source.get("line"),
        "run": source.get("run"),
    }
    for name in _STREAM_FIELDS:
        if source.get(name) is not None:
            public[name] = source[name]
    return public


@dataclass(slots=True)
class Envelope:
    """What the state table stores for one fan: the state, the position of its last change
    and the count change not yet covered by a flushed partial (see ``ledger``)."""

    state: FanState
    position: int
    pending: Delta = ZERO


# --- decoding records -------------------------------------------------------------------

_RECORD_KEYS = frozenset(
    {
        "campaignId",
        "campaignName",
        "globalUserId",
        "id",
        "rank",
        "eventId",
        "market",
        "score",
        "localFanscore",
        "accountFanscore",
        "bandScore",
        "isVerified",
        "verdict",
        "nudetectScore",
        "nudetectScoreBand",
        "tags",
        "codes",
        "scoredAt",
        "source",
        "memberId",
        "email",
        "firstName",
        "lastName",
        "phone",
        "phoneType",
        "phoneConfirmedDate",
        "locale",
    }
)
_OPTIONAL_TEXT = (
    "campaignName",
    "market",
    "memberId",
    "email",
    "firstName",
    "lastName",
    "phone",
    "phoneType",
    "phoneConfirmedDate",
    "locale",
)
_OPTIONAL_NUMBERS = ("localFanscore", "accountFanscore", "bandScore", "nudetectScore")
_BANDS = frozenset({"low", "medium", "high"})
_SCORED_AT: dict[str, int] = {}  # a file has one scoredAt: parse each distinct text once


def utc_micros(text: str) -> int:
    cached = _SCORED_AT.get(text)
    if cached is None:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
        cached = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        if len(_SCORED_AT) > 10_000:
            _SCORED_AT.clear()
        _SCORED_AT[text] = cached
    return cached


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _text_list(obj: dict[str, Any], name: str, reasons: list[str]) -> list[str]:
    value = obj.get(name)
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    reasons.append(f"{name}: expected a list of strings")
    return []


def row_from_record(obj: Any) -> ScoreRow:
    """A decoded score record (a JSON object) as a row; ``MalformedRecord`` when it is not one.

    The edge validated it already: these are structural checks that keep a foreign or
    corrupt record from breaking the rules, not the validation of a row.
    """
    if not isinstance(obj, dict):
        raise MalformedRecord([f"record: expected a JSON object, got {type(obj).__name__}"])
    reasons: list[str] = []
    unknown = obj.keys() - _RECORD_KEYS
    if unknown:
        reasons.append(f"record: unknown fields {sorted(unknown)[:5]}")
    campaign, user = obj.get("campaignId"), obj.get("globalUserId")
    event_id, rank = obj.get("eventId"), obj.get("rank")
    score, verified, verdict = obj.get("score"), obj.get("isVerified"), obj.get("verdict")
    scored_at = obj.get("scoredAt")
    for name, value in (("campaignId", campaign), ("globalUserId", user), ("eventId", event_id)):
        if not isinstance(value, str) or not value:
            reasons.append(f"{name}: expected a non-empty string")
    if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank <= 999:
        reasons.append("rank: expected an integer from 0 to 999")
    if not _is_number(score) or not 0.0 <= score <= 1.0:
        reasons.append("score: expected a number from 0 to 1")
    if not isinstance(verified, bool):
        reasons.append("isVerified: expected true or false")
    if verdict is not None and not isinstance(verdict, bool):
        reasons.append("verdict: expected true, false or null")
    for name in _OPTIONAL_TEXT:
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            reasons.append(f"{name}: expected a string or null")
    for name in _OPTIONAL_NUMBERS:
        value = obj.get(name)
        if value is not None and not _is_number(value):
            reasons.append(f"{name}: expected a finite number or null")
    band = obj.get("nudetectScoreBand")
    if band is not None and band not in _BANDS:
        reasons.append("nudetectScoreBand: expected low, medium or high")
    source = obj.get("source")
    if source is not None and not isinstance(source, dict):
        reasons.append("source: expected an object or null")
    tags = _text_list(obj, "tags", reasons)
    codes = _text_list(obj, "codes", reasons)
    scored_us = 0
    if not isinstance(scored_at, str):
        reasons.append("scoredAt: expected an ISO-8601 date-time")
    else:
        try:
            scored_us = utc_micros(scored_at)
        except ValueError:
            reasons.append("scoredAt: expected an ISO-8601 date-time")
    if reasons:
        raise MalformedRecord(reasons)
    get = obj.get
    return ScoreRow(
        campaignId=campaign,  # type: ignore[arg-type]
        campaignName=get("campaignName"),
        globalUserId=user,  # type: ignore[arg-type]
        rank=rank,  # type: ignore[arg-type]
        eventId=event_id,  # type: ignore[arg-type]
        market=get("market"),
        score=float(score),  # type: ignore[arg-type]
        localFanscore=_float_or_none(get("localFanscore")),
        accountFanscore=_float_or_none(get("accountFanscore")),
        bandScore=_float_or_none(get("bandScore")),
        isVerified=verified,  # type: ignore[arg-type]
        verdict=verdict,
        nudetectScore=_float_or_none(get("nudetectScore")),
        nudetectScoreBand=band,
        tags=tags,
        codes=codes,
        memberId=get("memberId"),
        email=get("email"),
        firstName=get("firstName"),
        lastName=get("lastName"),
        phone=get("phone"),
        phoneType=get("phoneType"),
        phoneConfirmedDate=get("phoneConfirmedDate"),
        locale=get("locale"),
        scoredAt=scored_at,  # type: ignore[arg-type]
        scored_us=scored_us,
        source=source,
    )


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


# --- the rules ----------------------------------------------------------------------------


def _events_with(events: list[Event | None], rank: int, event: Event) -> list[Event | None]:
    grown = list(events)
    if len(grown) <= rank:
        grown.extend([None] * (rank + 1 - len(grown)))
    grown[rank] = event
    return grown


def _same_fan_data(
    row: ScoreRow, name: str | None, events: list[Event | None], s: FanState
) -> bool:
    return (
        row.isVerified == s.isVerified
        and row.verdict == s.verdict
        and row.score == s.score
        and row.scored_us == s.scored_us
        and events == s.events
        and row.globalUserId == s.globalUserId
        and row.campaignId == s.campaignId
        and name == s.campaignName
        and row.memberId == s.memberId
        and row.email == s.email
        and row.firstName == s.firstName
        and row.lastName == s.lastName
        and row.phone == s.phone
        and row.phoneType == s.phoneType
        and row.phoneConfirmedDate == s.phoneConfirmedDate
        and row.locale == s.locale
        and row.localFanscore == s.localFanscore
        and row.accountFanscore == s.accountFanscore
        and row.bandScore == s.bandScore
        and row.codes == s.codes
        and row.tags == s.tags
        and row.nudetectScore == s.nudetectScore
        and row.nudetectScoreBand == s.nudetectScoreBand
    )


def _state_from(
    row: ScoreRow, name: str | None, events: list[Event | None], updated: str, version: int
) -> FanState:
    return FanState(
        campaignId=row.campaignId,
        campaignName=name,
        globalUserId=row.globalUserId,
        memberId=row.memberId,
        email=row.email,
        firstName=row.firstName,
        lastName=row.lastName,
        phone=row.phone,
        phoneType=row.phoneType,
        phoneConfirmedDate=row.phoneConfirmedDate,
        locale=row.locale,
        score=row.score,
        localFanscore=row.localFanscore,
        accountFanscore=row.accountFanscore,
        bandScore=row.bandScore,
        isVerified=row.isVerified,
        verdict=row.verdict,
        codes=list(row.codes),
        tags=list(row.tags),
        nudetectScore=row.nudetectScore,
        nudetectScoreBand=row.nudetectScoreBand,
        events=events,
        scoredAt=row.scoredAt,
        scored_us=row.scored_us,
        updated=updated,
        version=version,
        source=row.source,
    )


def apply_row(
    state: FanState | None, row: ScoreRow, now: str
) -> tuple[WriteStatus, FanState | None, Delta]:
    """Fold one row into the fan's state (SPEC 3): the status, the new state (None when it
    does not change) and the count delta.

    Ordering is by the file's scoredAt, not by arrival, so replays and out-of-order
    deliveries converge: older files are ``stale``, a newer file starts a fresh events list,
    and rows of the same file fill their rank slots. A row without a campaignName keeps the
    name the state has (Kinesis-fed records carry none).
    """
    event = Event(row.eventId, row.market)
    if state is None:
        created = _state_from(row, row.campaignName, _events_with([], row.rank, event), now, 1)
        return WriteStatus.CREATED, created, created.standing()
    if state.campaignId != row.campaignId or state.globalUserId != row.globalUserId:
        raise ValueError(f"record {row.key!r} cannot be applied to state {state.key!r}")
    if row.scored_us < state.scored_us:
        return WriteStatus.STALE, None, ZERO
    base = state.events if row.scored_us == state.scored_us else []
    events = _events_with(base, row.rank, event)
    name = row.campaignName if row.campaignName is not None else state.campaignName
    if _same_fan_data(row, name, events, state):
        return WriteStatus.UNCHANGED, None, ZERO
    updated = _state_from(row, name, events, now, state.version + 1)
    before, after = state.standing(), updated.standing()
    delta = (after[0] - before[0], after[1] - before[1], after[2] - before[2])
    return WriteStatus.UPDATED, updated, delta


# --- the stored envelope ------------------------------------------------------------------


def encode_envelope(envelope: Envelope) -> bytes:
    """A compact JSON array: about half the bytes of the object form, and no field names
    to write or parse."""
    s = envelope.state
    return orjson.dumps(
        [
            ENVELOPE_FORMAT,
            envelope.position,
            envelope.pending,
            s.campaignId,
            s.campaignName,
            s.globalUserId,
            s.memberId,
            s.email,
            s.firstName,
            s.lastName,
            s.phone,
            s.phoneType,
            s.phoneConfirmedDate,
            s.locale,
            s.score,
            s.localFanscore,
            s.accountFanscore,
            s.bandScore,
            s.isVerified,
            s.verdict,
            s.codes,
            s.tags,
            s.nudetectScore,
            s.nudetectScoreBand,
            [None if e is None else (e.eventId, e.market) for e in s.events],
            s.scoredAt,
            s.scored_us,
            s.updated,
            s.version,
            s.source,
        ]
    )


def decode_envelope(data: bytes) -> Envelope:
    """The envelope ``encode_envelope`` wrote; ``ValueError`` for anything else."""
    try:
        (
            marker,
            position,
            pending,
            campaign,
            name,
            user,
            member,
            email,
            first,
            last,
            phone,
            phone_type,
            phone_date,
            locale,
            score,
            local,
            account,
            band,
            verified,
            verdict,
            codes,
            tags,
            nudetect,
            nudetect_band,
            events,
            scored_at,
            scored_us,
            updated,
            version,
            source,
        ) = orjson.loads(data)
    except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise ValueError(f"not a stored fan envelope: {exc}") from exc
    if marker != ENVELOPE_FORMAT:
        raise ValueError(f"fan envelope format {marker!r}, expected {ENVELOPE_FORMAT}")
    state = FanState(
        campaignId=campaign,
        campaignName=name,
        globalUserId=user,
        memberId=member,
        email=email,
        firstName=first,
        lastName=last,
        phone=phone,
        phoneType=phone_type,
        phoneConfirmedDate=phone_date,
        locale=locale,
        score=score,
        localFanscore=local,
        accountFanscore=account,
        bandScore=band,
        isVerified=verified,
        verdict=verdict,
        codes=codes,
        tags=tags,
        nudetectScore=nudetect,
        nudetectScoreBand=nudetect_band,
        events=[None if e is None else Event(e[0], e[1]) for e in events],
        scoredAt=scored_at,
        scored_us=scored_us,
        updated=updated,
        version=version,
        source=source,
    )
    return Envelope(state=state, position=position, pending=tuple(pending))  # type: ignore[arg-type]


def iso_now(moment: datetime | None = None) -> str:
    """An ``updated`` time as VerificationState serialises it."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
