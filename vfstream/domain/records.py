"""Score records: the validated form of one scoring-file row (SPEC 2.1). No I/O here."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from vfstream.domain.keys import fan_key
from vfstream.domain.limits import (
    DEFAULT_LIMITS,
    Limits,
    has_control_characters,
    number_refusal,
    over_bytes,
    underflows,
)
from vfstream.errors import FileRejected

SCORING_KEY_PATTERN = re.compile(
    r"^scrubbed/registrants\.(?P<campaign_id>[^./]+)\.(?P<campaign_name>[^/]+?)\."
    r"(?P<date_time>\d{8}T\d{6}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:?\d{2})?"
    r"|\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:?\d{2})?)"
    r"\.cleaned\.prepared\.merged\.csv(?P<gz>\.gz)?$"
)
# "3 digits" means ASCII 0-9: \d would also take Arabic-Indic or fullwidth digits.
ID_PATTERN = re.compile(r"^(?P<user>.+?)(?P<rank>[0-9]{3})$")
REQUIRED_COLUMNS: tuple[str, ...] = (
    "globalUserId",
    "id",
    "campaign_id",
    "event_id",
    "score",
    "isVerified",
)
MAX_ROW_BYTES = 64 * 1024

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


class ScoringFileError(FileRejected):
    """A whole scoring file is unusable; nothing of it may be ingested."""


class ScoringKey(BaseModel):
    """What the S3 object key of a scrubbed scoring file tells us."""

    model_config = ConfigDict(frozen=True)

    campaign_id: str
    campaign_name: str
    scored_at: datetime
    gzipped: bool


def parse_iso_datetime(text: str) -> datetime:
    """ISO-8601 basic (20261020T120000Z) or extended; ``Z`` or ``z`` is UTC, and naive times
    are taken as UTC."""
    value = text.strip()
    if re.fullmatch(r"\d{8}T\d{6}(\.\d+)?.*", value):
        value = f"{value[0:4]}-{value[4:6]}-{value[6:8]}T{value[9:11]}:{value[11:13]}:{value[13:]}"
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    return as_aware(datetime.fromisoformat(value))


def as_aware(moment: datetime) -> datetime:
    """The same moment with a time zone: a naive datetime is taken as UTC."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=UTC)
    return moment


def future_refusal(scored_at: datetime, now: datetime, limits: Limits) -> str | None:
    """Why a scoring time too far ahead of ``now`` is refused, or None.

    Fans are ordered by scoring time: a file dated 9999 would make every real later score of
    its fans stale for good, silently (README "Limits").
    """
    ahead = (scored_at - now).total_seconds()
    if ahead <= limits.future_skew_seconds:
        return None
    return (
        f"{scored_at.isoformat()} is {ahead / 3600:,.1f} h in the future, past the allowed "
        f"skew of {limits.future_skew_seconds / 3600:g} h"
    )


def parse_scoring_key(
    key: str, limits: Limits = DEFAULT_LIMITS, now: datetime | None = None
) -> ScoringKey:
    match = SCORING_KEY_PATTERN.match(key)
    if match is None:
        raise ScoringFileError(
            f"object key {key!r} does not match "
            "scrubbed/registrants.<campaignId>.<campaignName>.<dateTime>"
            ".cleaned.prepared.merged.csv[.gz]"
        )
    for part, text, limit in (
        ("campaignId", match["campaign_id"], limits.id_bytes),
        ("campaignName", match["campaign_name"], limits.field_bytes),
    ):
        if has_control_characters(text):
            raise ScoringFileError(f"object key: the {part} holds control characters")
        size = over_bytes(text, limit)
        if size is not None:
            raise ScoringFileError(
                f"object key: the {part} is {size} bytes, over the limit of {limit}"
            )
    try:
        scored_at = parse_iso_datetime(match["date_time"])
    except ValueError as exc:
        raise ScoringFileError(f"object key {key!r} has an invalid dateTime: {exc}") from exc
    too_far = future_refusal(scored_at, now or datetime.now(UTC), limits)
    if too_far is not None:
        raise ScoringFileError(f"object key: the dateTime {too_far}")
    return ScoringKey(
        campaign_id=match["campaign_id"],
        campaign_name=match["campaign_name"],
        scored_at=scored_at,
        gzipped=bool(match["gz"]),
    )


def check_header(header: list[str]) -> None:
    if not header or all(not column.strip() for column in header):
        raise ScoringFileError("the file has no header row")
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if missing:
        raise ScoringFileError(f"the header lacks required columns: {', '.join(missing)}")
    duplicated = repeated_columns(header, CSV_COLUMNS)
    if duplicated:
        raise ScoringFileError(f"the header repeats columns: {', '.join(duplicated)}")


def repeated_columns(header: list[str], known: Iterable[str]) -> list[str]:
    """Known columns that appear more than once, in header order: which copy counts would be a
    guess. Unknown columns may repeat (they are ignored)."""
    wanted = set(known)
    seen: set[str] = set()
    repeated: list[str] = []
    for column in header:
        if column in wanted:
            if column in seen and column not in repeated:
                repeated.append(column)
            seen.add(column)
    return repeated


def parse_bool(value: Any) -> bool:
    """true/false, 1/0 or yes/no in any case, or a real bool; nothing else.

    Decided here rather than by pydantic's lax bool parsing, which would also take
    "on", "t", "y", 1.0 and bytes.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise ValueError("expected true/false, 1/0 or yes/no")


def split_tags(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split("|") if part.strip()]
    return value


def normalise_email(value: str) -> str:
    """Trimmed and lower-cased; an email of only whitespace becomes the empty string."""
    return value.strip().lower()


FlexibleBool = Annotated[bool, BeforeValidator(parse_bool)]
TagList = Annotated[list[str], BeforeValidator(split_tags)]
# Digits, one point, an exponent: what a scoring file writes. Python's float() also takes
# "0.2_5", "inf" and "nan"; none of them is a score.
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def plain_decimal(value: Any) -> Any:
    """Text that reads as a number must be a plainly written decimal (``0.2_5``, ``1_0``,
    ``nan`` and ``infinity`` are not); JSON numbers pass as they are, and other text is left
    to the float validator's own message."""
    if isinstance(value, str) and _DECIMAL_TEXT.fullmatch(value.strip()):
        if underflows(value, float(value)):
            raise ValueError(
                f"{value.strip()[:40]!r} is too small to store (DynamoDB numbers are 0 or of "
                "magnitude 1e-130 to under 1e+126)"
            )
        return value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        if number != number or number in (float("inf"), float("-inf")):
            return value  # "nan", "infinity": the validator says "finite"
        raise ValueError(f"not a plainly written decimal number (got {value.strip()[:40]!r})")
    return value


def storable(value: float) -> float:
    """A number every store can hold (``limits.number_refusal``); -0 is 0."""
    reason = number_refusal(value)
    if reason is not None:
        raise ValueError(reason)
    return value + 0.0  # -0.0 + 0.0 == 0.0


FiniteFloat = Annotated[
    float,
    Field(allow_inf_nan=False),
    BeforeValidator(plain_decimal),
    AfterValidator(storable),
]


def _is_none(value: Any) -> bool:
    return value is None


class RecordSource(BaseModel):
    model_config = ConfigDict(frozen=True)

    bucket: str
    key: str
    etag: str
    line: int
    run: str | None = None  # one ingestion of the object; a forced re-ingestion is a new run
    # Records copied from a Kinesis stream (SPEC 2.3) say where they were read. Left out of
    # the JSON when absent, so file-fed records and states serialize exactly as before.
    stream: str | None = Field(default=None, exclude_if=_is_none)
    shardId: str | None = Field(default=None, exclude_if=_is_none)
    sequenceNumber: str | None = Field(default=None, exclude_if=_is_none)


class EventPreference(BaseModel):
    model_config = ConfigDict(frozen=True)

    eventId: str
    market: str | None = None


class FanContact(BaseModel):
    """Contact data of a fan: carried by score records and kept in the verification state."""

    memberId: str | None = None
    email: str | None = None
    firstName: str | None = None
    lastName: str | None = None
    phone: str | None = None
    phoneType: str | None = None
    phoneConfirmedDate: str | None = None
    locale: str | None = None


class ScoreRecord(FanContact):
    """One valid row: one (fan, ranked event preference) of one scoring run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    campaignId: str = Field(min_length=1)
    campaignName: str | None = None
    globalUserId: str = Field(min_length=1)
    id: str = Field(min_length=4)
    rank: int = Field(ge=0, le=999)
    eventId: str = Field(min_length=1)
    market: str | None = None
    score: FiniteFloat = Field(ge=0.0, le=1.0)
    localFanscore: FiniteFloat | None = None
    accountFanscore: FiniteFloat | None = None
    bandScore: FiniteFloat | None = None
    isVerified: FlexibleBool
    verdict: FlexibleBool | None = None
    nudetectScore: FiniteFloat | None = None
    nudetectScoreBand: Literal["low", "medium", "high"] | None = None
    tags: TagList = Field(default_factory=list)
    codes: TagList = Field(default_factory=list)
    scoredAt: datetime
    source: RecordSource | None = None

    @field_validator("email")
    @classmethod
    def _normalise_email(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return normalise_email(value) or None

    @field_validator("scoredAt")
    @classmethod
    def _aware_scored_at(cls, value: datetime) -> datetime:
        return as_aware(value)

    @field_validator("nudetectScoreBand", mode="before")
    @classmethod
    def _lower_band(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def key(self) -> str:
        return fan_key(self.campaignId, self.globalUserId)

    def to_json(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self, exclude_none=True)

    @classmethod
    def from_json(cls, data: bytes | str) -> ScoreRecord:
        return cls.model_validate_json(data)


# CSV column -> ScoreRecord field, for the columns whose names differ or that are renamed.
CSV_COLUMNS: dict[str, str] = {
    "globalUserId": "globalUserId",
    "id": "id",
    "campaign_id": "campaignId",
    "event_id": "eventId",
    "hbase": "market",
    "score": "score",
    "localFanscore": "localFanscore",
    "accountFanscore": "accountFanscore",
    "bandScore": "bandScore",
    "isVerified": "isVerified",
    "verdict": "verdict",
    "nudetect.score": "nudetectScore",
    "nudetect.scoreBand": "nudetectScoreBand",
    "review_notes": "tags",
    "codes": "codes",
    "memberId": "memberId",
    "email": "email",
    "firstName": "firstName",
    "lastName": "lastName",
    "phone": "phone",
    "phoneType": "phoneType",
    "phoneConfirmedDate": "phoneConfirmedDate",
    "locale": "locale",
}
_FIELD_TO_COLUMN = {field: column for column, field in CSV_COLUMNS.items()}


class RowRejection(BaseModel):
    """An invalid row as it goes to the dead-letter topic: where it was, what it was, why."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    key: str
    etag: str
    line: int
    raw: str
    reasons: list[str]
    campaignId: str | None = None
    kind: str = "scoring-row"

    def to_json(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self)


def describe_error(error: Any, columns: Mapping[str, str] | None = None) -> str:
    """One pydantic error as a dead letter's reason: the column (``columns`` maps model
    fields to the file's column names), what is wrong, and the value when it is short."""
    location = str(error["loc"][0]) if error["loc"] else "row"
    column = (columns or {}).get(location, location)
    if error["type"] == "missing":
        return f"{column}: required value is missing or empty"
    message = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    shown = f" (got {value!r})" if isinstance(value, str | int | float) else ""
    return f"{column}: {message}{shown}"


_ID_COLUMNS = frozenset({"globalUserId", "campaign_id"})


def limit_reasons(column: str, text: str, limits: Limits) -> list[str]:
    limit = limits.id_bytes if column in _ID_COLUMNS else limits.field_bytes
    if column == "id":
        limit = limits.id_bytes + 3
    reasons: list[str] = []
    size = over_bytes(text, limit)
    if size is not None:
        reasons.append(f"{column}: {size} bytes, over the limit of {limit}")
    if column in _ID_COLUMNS and has_control_characters(text):
        reasons.append(f"{column}: holds control characters")
    return reasons


def build_score_record(
    values: dict[str, str],
    scoring_key: ScoringKey,
    source: RecordSource | dict[str, Any],
    limits: Limits = DEFAULT_LIMITS,
) -> ScoreRecord | list[str]:
    """Validate one row (column -> text) into a score record, or return every reason it fails.

    ``source`` may be a plain dict: it is validated with the record, which is cheaper than
    building a RecordSource first (this runs once per row of million-row files).
    """
    data: dict[str, Any] = {}
    reasons: list[str] = []
    for column, text in values.items():
        field = CSV_COLUMNS.get(column)
        if field is None:
            continue
        text = text.strip()
        if text:
            if len(text) * 4 > limits.id_bytes or column in _ID_COLUMNS:
                reasons.extend(limit_reasons(column, text, limits))
            data[field] = text
    row_id = data.get("id")
    user = data.get("globalUserId")
    id_reported = False
    if row_id is not None:
        match = ID_PATTERN.match(row_id)
        if match is None or (user is not None and match["user"] != user):
            id_reported = True
            reasons.append(
                f"id: {row_id!r} is not globalUserId followed by a 3-digit rank"
                + (f" (globalUserId {user!r})" if user is not None else "")
            )
        else:
            data["rank"] = int(match["rank"])
            if data["rank"] >= limits.events_per_fan:
                reasons.append(
                    f"id: rank {data['rank']} is past the limit of {limits.events_per_fan} "
                    "events per fan"
                )
    campaign = data.get("campaignId")
    if campaign is not None and campaign != scoring_key.campaign_id:
        reasons.append(
            f"campaign_id: {campaign!r} differs from the file's campaign "
            f"{scoring_key.campaign_id!r}"
        )
    data["campaignName"] = scoring_key.campaign_name
    data["scoredAt"] = scoring_key.scored_at
    data["source"] = source
    if "rank" not in data:
        data["rank"] = 0  # placeholder so the id reason above is not reported twice
    try:
        record = ScoreRecord.model_validate(data)
    except ValidationError as exc:
        reasons.extend(
            describe_error(error, _FIELD_TO_COLUMN)
            for error in exc.errors(include_url=False)
            # The id check above already explains a malformed id; pydantic's length rule
            # would only say the same thing again.
            if not (id_reported and error["loc"][:1] == ("id",))
        )
        return reasons
    return reasons if reasons else record


# --- the fast path of row validation -----------------------------------------------------
