"""The verification state on the hot path: score rows in, fan states out (SPEC 3). No I/O.

The verify agent applies every record through here, so nothing here is a pydantic model.
Rows, states and stored envelopes are msgspec ``Struct``s, decoded from JSON and checked
against their types and bounds in C: a score batch of 1,000 records decodes in about 1.5 ms,
where ``orjson`` into dicts plus Python checks took about 13 ms. The edge (ingestor, bridge)
validated every record already; this decode is what still keeps a foreign or corrupt record
from breaking the rules, and it is cheap enough to keep. A fan's stored envelope is a compact
JSON array (``array_like``) with a format tag. ``vfstream.domain.state`` keeps the pydantic
``VerificationState`` for the edges (the web view, tests); ``FanState.public_json`` and
``state.verification_state_of`` give its exact shape.

Positions: a record's position is ``offset * POSITION_SLOTS + index``, the offset of the
batch message that carried it and its index in the batch, so positions order records the way
they were produced and a redelivered batch is recognised record by record.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from vfstream.domain.batches import BATCH_FORMAT, MalformedBatch
from vfstream.domain.keys import fan_key
from vfstream.domain.limits import (
    MAX_RUN_ID_BYTES,
    Limits,
    has_control_characters,
    number_refusal,
    over_bytes,
)

# A run id derived from an object's URL longer than this is digested (``ScoreRow.run_id``).
FALLBACK_RUN_ID_CHARS = 256

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


# Refuses inf (1e999 in JSON): every finite float is within the largest one.
FiniteFloat = Annotated[float, Meta(ge=-sys.float_info.max, le=sys.float_info.max)]
Text = Annotated[str, Meta(min_length=1)]


class Event(Struct, array_like=True, frozen=True, gc=False):
    eventId: str
    market: str | None


@dataclass(slots=True, frozen=True)
class Nudetect:
    score: float | None
    scoreBand: str | None


class ScoreRow(Struct, forbid_unknown_fields=True, gc=False):
    """One score record as the verify agent applies it: today's record JSON, typed."""

    campaignId: Text
    globalUserId: Text
    id: Annotated[str, Meta(min_length=4)]
    rank: Annotated[int, Meta(ge=0, le=999)]
    eventId: Text
    score: Annotated[float, Meta(ge=0.0, le=1.0)]
    isVerified: bool
    scoredAt: str
    campaignName: str | None = None
    market: str | None = None
    localFanscore: FiniteFloat | None = None
    accountFanscore: FiniteFloat | None = None
    bandScore: FiniteFloat | None = None
    verdict: bool | None = None
    nudetectScore: FiniteFloat | None = None
    nudetectScoreBand: Literal["low", "medium", "high"] | None = None
    tags: list[str] = []
    codes: list[str] = []
    memberId: str | None = None
    email: str | None = None
    firstName: str | None = None
    lastName: str | None = None
    phone: str | None = None
    phoneType: str | None = None
    phoneConfirmedDate: str | None = None
    locale: str | None = None
    source: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return fan_key(self.campaignId, self.globalUserId)

    @property
    def scored_us(self) -> int:
        return utc_micros(self.scoredAt)

    @property
    def run_id(self) -> str | None:
        source = self.source
        if not source:
            return None
        run = source.get("run")
        if run:
            return str(run)
        # Records from before runs had ids: their object. A long key is digested, so the
        # run index keeps entries of a bounded size (``bookkeeping_refusal``).
        url = f"s3://{source.get('bucket')}/{source.get('key')}@{source.get('etag')}"
        if len(url) > FALLBACK_RUN_ID_CHARS:
            return "s3-sha256:" + hashlib.sha256(url.encode("utf-8", "replace")).hexdigest()
        return url


class FanState(Struct, array_like=True, gc=False):
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


class Envelope(Struct, array_like=True, tag=ENVELOPE_FORMAT, gc=False):
    """What the state table stores for one fan: the position of its last change, the count
    change not yet covered by a flushed partial (see ``ledger``) and the state."""

    position: int
    pending: tuple[int, int, int]
    state: FanState


# --- decoding records -------------------------------------------------------------------


class _Batch(Struct):
    v: Literal[1]
    records: list[ScoreRow]


class _RawBatch(Struct):
    v: Literal[1]
    records: list[msgspec.Raw]


# msgspec decodes nested JSON recursively: a message of ~5,000 nested brackets (10 KB) raises
# RecursionError, which once killed the verify agent on every restart.
_UNDECODABLE = (msgspec.ValidationError, msgspec.DecodeError, RecursionError)
TOO_DEEP = "not a score batch: JSON nested deeper than a record can be"

_BATCH = msgspec.json.Decoder(_Batch)
_RAW_BATCH = msgspec.json.Decoder(_RawBatch)
_ROW = msgspec.json.Decoder(ScoreRow)
_ENVELOPE = msgspec.json.Decoder(Envelope)
_ENCODER = msgspec.json.Encoder()
_SCORED_AT: dict[str, int] = {}  # a file has one scoredAt: parse each distinct text once


def utc_micros(text: str) -> int:
    """``scoredAt`` as UTC microseconds since the epoch; ``ValueError`` if it is no time."""
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


@dataclass(slots=True)
class Refused:
    """A record of a batch that is not a score record: its bytes and why."""

    raw: bytes
    reasons: list[str]


def _checked(row: ScoreRow, raw: bytes | None) -> ScoreRow | Refused:
    try:
        utc_micros(row.scoredAt)
    except ValueError:
        return Refused(raw or _ENCODER.encode(row), ["scoredAt: expected an ISO-8601 date-time"])
    return row


def bookkeeping_refusal(row: ScoreRow, limits: Limits) -> str | None:
    """Why a record must not even reach the ledger's bookkeeping, or None.

    Its ids become keys of partials, runs and the run index, one changelog message each:
    past the id limit (or with control characters), a foreign producer's record grew one
    partition's bookkeeping past the broker's message size, the flush failed and the worker
    died (issue #20). The ingestor and the bridge refuse such rows already; this holds for
    any producer of the topic.
    """
    for name, text in (("campaignId", row.campaignId), ("globalUserId", row.globalUserId)):
        size = over_bytes(text, limits.id_bytes)
        if size is not None:
            return f"{name}: {size} bytes, over the limit of {limits.id_bytes}"
        if has_control_characters(text):
            return f"{name}: holds control characters"
    run = row.run_id
    if run is not None:
        size = over_bytes(run, MAX_RUN_ID_BYTES)
        if size is not None:
            return f"source.run: {size} bytes, over the limit of {MAX_RUN_ID_BYTES}"
    return None


def content_refusal(row: ScoreRow, now_us: int, limits: Limits) -> str | None:
    """Why a well-formed record cannot be applied as it is, or None: a scoring time past
    the future skew, a number no store can hold. Such a record is refused but still counts
    towards its run, which would otherwise never settle."""
    ahead = row.scored_us - now_us
    if ahead > limits.future_skew_us:
        return (
            f"scoredAt: {row.scoredAt} is {ahead / 3.6e9:,.1f} h in the future, past the "
            f"allowed skew of {limits.future_skew_seconds / 3600:g} h"
        )
    for name, value in (
        ("score", row.score),
        ("localFanscore", row.localFanscore),
        ("accountFanscore", row.accountFanscore),
        ("bandScore", row.bandScore),
        ("nudetectScore", row.nudetectScore),
    ):
        if value is not None and value != 0.0:
            reason = number_refusal(value)
            if reason is not None:
                return f"{name}: {reason}"
    return None


def read_batch(value: bytes | None) -> list[ScoreRow | Refused]:
    """The records of one message of the score-record topic, in order: each a row, or the
    record refused with its reason. ``MalformedBatch`` when the message is no batch at all.

    A batch whose records are all well formed (the normal case) is decoded in one call; one
    that is not is decoded record by record, so only the malformed ones are refused. A bare
    record object (a single-record message) reads as a batch of one.
    """
    if not value:
        raise MalformedBatch("empty message")
    try:
        rows: list[ScoreRow | Refused] = list(_BATCH.decode(value).records)
    except _UNDECODABLE:
        pass
    else:
        return [_checked(row, None) for row in rows]
    try:
        raws = _RAW_BATCH.decode(value).records
    except _UNDECODABLE:
        raws = None
    if raws is None:
        try:
            body = msgspec.json.decode(value)
        except RecursionError as exc:
            raise MalformedBatch(TOO_DEEP) from exc
        except msgspec.DecodeError as exc:
            raise MalformedBatch(f"not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise MalformedBatch(f"expected a JSON object, got {type(body).__name__}")
        if "records" in body and "v" in body:
            raise MalformedBatch(f"not a score batch of format {BATCH_FORMAT}: v={body['v']!r}")
        raws = [msgspec.Raw(value)]
    return [row_from_json(bytes(raw)) for raw in raws]


def read_batch_json(value: bytes | None) -> list[tuple[bytes, ScoreRow | Refused]]:
    """Like ``read_batch``, with each record's own JSON (as it was produced)."""
    if not value:
        raise MalformedBatch("empty message")
    try:
        raws = [bytes(raw) for raw in _RAW_BATCH.decode(value).records]
    except _UNDECODABLE:
        raws = [value]
    rows = read_batch(value)
    if len(rows) != len(raws):  # a bare record that is itself malformed
        raise MalformedBatch("not a score batch")
    return list(zip(raws, rows, strict=True))


def row_from_json(raw: bytes) -> ScoreRow | Refused:
    """One record's JSON as a row, or refused with the decoder's reason."""
    try:
        row = _ROW.decode(raw)
    except RecursionError:
        return Refused(raw, [TOO_DEEP])
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return Refused(raw, [str(exc)])
    return _checked(row, raw)


def encode_record(row: ScoreRow) -> bytes:
    """A row as a record's JSON (what a batch holds)."""
    return _ENCODER.encode(row)


# --- the rules ----------------------------------------------------------------------------


def _events_with(events: list[Event | None], rank: int, event: Event) -> list[Event | None]:
    grown = list(events)
    if len(grown) <= rank:
        grown.extend([None] * (rank + 1 - len(grown)))
    grown[rank] = event
    return grown


def _same_fan_data(
    row: ScoreRow, scored: int, name: str | None, events: list[Event | None], s: FanState
) -> bool:
    return (
        row.isVerified == s.isVerified
        and row.verdict == s.verdict
        and row.score == s.score
        and scored == s.scored_us
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
    row: ScoreRow,
    scored: int,
    name: str | None,
    events: list[Event | None],
    updated: str,
    version: int,
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
        scored_us=scored,
        updated=updated,
        version=version,
        source=row.source,
    )


def apply_row(
    state: FanState | None, row: ScoreRow, now: str, trusted_until_us: int | None = None
) -> tuple[WriteStatus, FanState | None, Delta]:
    """Fold one row into the fan's state (SPEC 3): the status, the new state (None when it
    does not change) and the count delta.

    Ordering is by the file's scoredAt, not by arrival, so replays and out-of-order
    deliveries converge: older files are ``stale``, a newer file starts a fresh events list,
    and rows of the same file fill their rank slots. A row without a campaignName keeps the
    name the state has (Kinesis-fed records carry none).

    A stored scoredAt after ``trusted_until_us`` (now plus the future skew) was accepted
    before such times were refused; it orders nothing, so the fan is not frozen by it: the
    row is applied as if the stored one were older.
    """
    event = Event(row.eventId, row.market)
    scored = row.scored_us
    if state is None:
        events = _events_with([], row.rank, event)
        created = _state_from(row, scored, row.campaignName, events, now, 1)
        return WriteStatus.CREATED, created, created.standing()
    if state.campaignId != row.campaignId or state.globalUserId != row.globalUserId:
        raise ValueError(f"record {row.key!r} cannot be applied to state {state.key!r}")
    stored_us = state.scored_us
    if trusted_until_us is not None and stored_us > trusted_until_us:
        stored_us = -1  # frozen: any real score is newer
    if scored < stored_us:
        return WriteStatus.STALE, None, ZERO
    base = state.events if scored == stored_us else []
    events = _events_with(base, row.rank, event)
    name = row.campaignName if row.campaignName is not None else state.campaignName
    if _same_fan_data(row, scored, name, events, state):
        return WriteStatus.UNCHANGED, None, ZERO
    updated = _state_from(row, scored, name, events, now, state.version + 1)
    before, after = state.standing(), updated.standing()
    delta = (after[0] - before[0], after[1] - before[1], after[2] - before[2])
    return WriteStatus.UPDATED, updated, delta


# --- the stored envelope ------------------------------------------------------------------


def encode_envelope(envelope: Envelope) -> bytes:
    """A compact JSON array, ``[2, position, pending, [state fields...]]``: about half the
    bytes of the object form, and no field names to write or parse."""
    return _ENCODER.encode(envelope)


def decode_envelope(data: bytes) -> Envelope:
    """The envelope ``encode_envelope`` wrote; ``ValueError`` for anything else."""
    try:
        return _ENVELOPE.decode(data)
    except _UNDECODABLE as exc:
        raise ValueError(f"not a stored fan envelope: {exc!r}"[:300]) from exc


def iso_now(moment: datetime | None = None) -> str:
    """An ``updated`` time as VerificationState serialises it."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
