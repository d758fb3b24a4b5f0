"""Fanlist files (SPEC 2.2): key parsing, row validation, de-duplication, stored items and the
count summary. Pure: nothing here talks to S3, DynamoDB, Kinesis or Kafka."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vfstream.domain.records import (
    FiniteFloat,
    describe_error,
    normalise_email,
    parse_iso_datetime,
    repeated_columns,
)
from vfstream.errors import FileRejected

FANLIST_PREFIX = "fanlist/"
FANLIST_KEY_PATTERN = re.compile(
    r"^fanlist/scored/(?P<campaign_id>[^/]+)/(?P<timestamp>[^/]+)\.csv$"
)
FANLIST_COLUMNS: tuple[str, ...] = ("memberId", "email", "globalUserId", "score")
IDENTIFIER_COLUMNS: tuple[str, ...] = ("memberId", "email")
MAX_PARTITION_KEY_CHARS = 256


class FanlistFileError(FileRejected):
    """A whole fanlist file is unusable; nothing of it may be stored."""


class FanlistKey(BaseModel):
    """What the S3 object key of a fanlist file tells us."""

    model_config = ConfigDict(frozen=True)

    campaign_id: str
    timestamp: str
    scored_at: datetime


def parse_timestamp(text: str) -> datetime:
    """Epoch seconds (10 digits), epoch milliseconds (13 digits) or ISO-8601 basic/extended.

    Only those digit counts are read as epochs: an 8-digit ``20261020`` is an ISO date,
    and guessing the unit of other lengths could put a file years off.
    """
    if text.isdigit() and len(text) in (10, 13):
        seconds = int(text) / (1000 if len(text) == 13 else 1)
        return datetime.fromtimestamp(seconds, tz=UTC)
    return parse_iso_datetime(text)


def parse_fanlist_key(key: str) -> FanlistKey:
    match = FANLIST_KEY_PATTERN.match(key)
    if match is None:
        raise FanlistFileError(
            f"object key {key!r} does not match fanlist/scored/<campaignId>/<timestamp>.csv"
        )
    timestamp = match["timestamp"]
    try:
        scored_at = parse_timestamp(timestamp)
    except (ValueError, OverflowError, OSError) as exc:
        raise FanlistFileError(
            f"object key {key!r} has an invalid timestamp {timestamp!r}: expected epoch "
            f"seconds, epoch milliseconds or an ISO-8601 date-time ({exc})"
        ) from exc
    return FanlistKey(campaign_id=match["campaign_id"], timestamp=timestamp, scored_at=scored_at)


def check_fanlist_header(header: list[str]) -> None:
    if not header or all(not column.strip() for column in header):
        raise FanlistFileError("the file has no header row")
    missing: list[str] = []
    if "score" not in header:
        missing.append("score")
    if not any(column in header for column in IDENTIFIER_COLUMNS):
        missing.append("memberId or email")
    if missing:
        raise FanlistFileError(f"the header lacks required columns: {', '.join(missing)}")
    repeated = repeated_columns(header, FANLIST_COLUMNS)
    if repeated:
        raise FanlistFileError(f"the header repeats columns: {', '.join(repeated)}")


def email_problem(email: str) -> str | None:
    """Why a normalised email cannot identify a fan, or None when it can."""
    if email.count("@") != 1:
        return "is not an email address (it needs exactly one @)"
    local, domain = email.split("@")
    if not local or not domain:
        return "is not an email address (text is needed on both sides of the @)"
    if any(character.isspace() for character in email):
        return "is not an email address (it contains whitespace)"
    return None


class FanlistRow(BaseModel):
    """One valid fanlist row: a fan identified by memberId, else by a well-formed email."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    memberId: str | None = Field(default=None, min_length=1)
    email: str | None = Field(default=None, min_length=1)
    globalUserId: str | None = Field(default=None, min_length=1)
    score: FiniteFloat

    @model_validator(mode="after")
    def _identified(self) -> FanlistRow:
        # Repeats validate_fanlist_row's rules so a row built any other way is just as sound.
        if self.email is not None:
            problem = email_problem(self.email)
            if problem is not None or self.email != normalise_email(self.email):
                raise ValueError(f"email {self.email!r} is not a normalised email address")
        if self.memberId is None and self.email is None:
            raise ValueError("neither memberId nor email identifies the fan")
        return self

    @property
    def identifier(self) -> str:
        """The fan's identifier in this file (SPEC 2.2): memberId, else the email."""
        # One of the two is set: the model refuses a row without either.
        return self.memberId or self.email or ""

    @property
    def identifier_key(self) -> str:
        """The identifier with its kind, so a memberId never collides with an equal email."""
        return f"sid:{self.memberId}" if self.memberId is not None else f"email:{self.email}"

    @property
    def item_pk(self) -> str:
        if self.globalUserId is not None:
            return f"fan:{self.globalUserId}"
        return self.identifier_key

    @property
    def partition_key(self) -> str:
        """globalUserId, else memberId, else email (SPEC 4), as a Kinesis partition key.

        Kinesis refuses a key over 256 characters, and one such key fails its whole
        PutRecords call; an overlong id is replaced by its SHA-256, which keeps one fan's
        records on one shard.
        """
        key = self.globalUserId if self.globalUserId is not None else self.identifier
        if len(key) > MAX_PARTITION_KEY_CHARS:
            return hashlib.sha256(key.encode()).hexdigest()
        return key


def validate_fanlist_row(values: Mapping[str, str]) -> FanlistRow | list[str]:
    """Validate one row (column -> text) into a FanlistRow, or return every reason it fails.

    A malformed email next to a memberId does not invalidate the row (memberId identifies
    the fan) but is left out, so no store downstream receives it as an address.
    """
    data: dict[str, str] = {}
    for column in FANLIST_COLUMNS:
        text = values.get(column, "").strip()
        if text:
            data[column] = text
    reasons: list[str] = []
    email = data.get("email")
    if email is not None:
        email = data["email"] = normalise_email(email)
        problem = email_problem(email)
        if problem is not None:
            del data["email"]
            if "memberId" not in data:
                reasons.append(f"email: {email!r} {problem}, and there is no memberId")
    elif "memberId" not in data:
        reasons.append("memberId, email: both are missing or empty; one must identify the fan")
    try:
        row = FanlistRow.model_validate(data)
    except ValidationError as exc:
        return [
            *reasons,
            *(
                describe_error(error)
                for error in exc.errors(include_url=False)
                # The model's own identifier check (no location) would repeat a reason above.
                if error["loc"] or not reasons
            ),
        ]
    return reasons if reasons else row


class Deduplicated(NamedTuple):
    kept: list[FanlistRow]
    duplicates: int


def _keep_highest(rows: Iterable[FanlistRow], key: Callable[[FanlistRow], str]) -> list[FanlistRow]:
    best: dict[str, FanlistRow] = {}
    for row in rows:
        current = best.get(key(row))
        # Strictly higher: on a tie the earlier row stays, so the outcome does not depend on
        # float formatting quirks of the file.
        if current is None or row.score > current.score:
            best[key(row)] = row
    return list(best.values())


def keep_highest_scores(rows: Iterable[FanlistRow]) -> Deduplicated:
    """Drop duplicates within one file, keeping the highest score (SPEC 2.2).

    Duplicates are rows with the same identifier. Rows that would be stored as the same
    DynamoDB item (two memberIds of one globalUserId) are duplicates too: only one of them
    can be stored, and a BatchWriteItem call refuses two puts of one key. Kept rows stay in
    the order their identifiers first appear.
    """
    given = list(rows)
    by_identifier = _keep_highest(given, key=lambda row: row.identifier_key)
    kept = _keep_highest(by_identifier, key=lambda row: row.item_pk)
    return Deduplicated(kept=kept, duplicates=len(given) - len(kept))


def fanlist_sk(campaign_id: str) -> str:
    """The sort key of a campaign's fanlist items.

    Not ``campaign:<id>``: that is the SK of the fan's mirrored verification item, and the
    two writers (each putting whole items) erased each other's fields. Separate items keep
    both (SPEC 4).
    """
    return f"fanlist:{campaign_id}"


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fanlist_fields(row: FanlistRow, campaign_id: str) -> dict[str, Any]:
    """What is stored of a row, in DynamoDB and on the stream alike."""
    fields: dict[str, Any] = {
        name: value
        for name in ("memberId", "email", "globalUserId")
        if (value := getattr(row, name)) is not None
    }
    fields["score"] = row.score
    fields["campaignId"] = campaign_id
    return fields


def fanlist_item(row: FanlistRow, fanlist_key: FanlistKey, *, updated: datetime) -> dict[str, Any]:
    """The demand-table item of a row (SPEC 4), as plain attributes."""
    return {
        "PK": row.item_pk,
        "SK": fanlist_sk(fanlist_key.campaign_id),
        **fanlist_fields(row, fanlist_key.campaign_id),
        "date": {"updated": iso_utc(updated), "scored": iso_utc(fanlist_key.scored_at)},
    }


def fanlist_stream_record(
    row: FanlistRow, campaign_id: str, *, correlation: str, date: datetime
) -> dict[str, Any]:
    """The campaign-data stream record of a stored row; its partition key is row.partition_key."""
    return {
        **fanlist_fields(row, campaign_id),
        "__meta": {"correlation": correlation, "date": iso_utc(date)},
    }


NonNegative = Annotated[int, Field(ge=0)]


class InputCounts(BaseModel):
    model_config = ConfigDict(
        frozen=True, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    in_: NonNegative = Field(default=0, alias="in")
    invalid: NonNegative = 0
    duplicate: NonNegative = 0
    valid: NonNegative = 0

    @model_validator(mode="after")
    def _adds_up(self) -> InputCounts:
        if self.in_ != self.invalid + self.duplicate + self.valid:
            raise ValueError("input: in must equal invalid + duplicate + valid")
        return self


class SinkCounts(BaseModel):
    model_config = ConfigDict(
        frozen=True, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    in_: NonNegative = Field(default=0, alias="in")
    failed: NonNegative = 0
    out: NonNegative = 0

    @model_validator(mode="after")
    def _adds_up(self) -> SinkCounts:
        if self.in_ != self.failed + self.out:
            raise ValueError("in must equal failed + out")
        return self


class FanlistCounts(BaseModel):
    """The counts SPEC 2.2 reports; each stage takes in exactly what the one before passed on."""

    model_config = ConfigDict(frozen=True)

    input: InputCounts = Field(default_factory=InputCounts)
    dynamo: SinkCounts = Field(default_factory=SinkCounts)
    stream: SinkCounts = Field(default_factory=SinkCounts)

    @model_validator(mode="after")
    def _stages_chain(self) -> FanlistCounts:
        if self.dynamo.in_ != self.input.valid:
            raise ValueError("dynamo.in must equal input.valid")
        if self.stream.in_ != self.dynamo.out:
            raise ValueError("stream.in must equal dynamo.out: only stored records are streamed")
        return self

    @classmethod
    def tally(
        cls,
        *,
        rows_in: int,
        invalid: int,
        duplicate: int,
        dynamo_failed: int = 0,
        stream_failed: int = 0,
    ) -> FanlistCounts:
        valid = rows_in - invalid - duplicate
        stored = valid - dynamo_failed
        return cls(
            input=InputCounts(in_=rows_in, invalid=invalid, duplicate=duplicate, valid=valid),
            dynamo=SinkCounts(in_=valid, failed=dynamo_failed, out=stored),
            stream=SinkCounts(in_=stored, failed=stream_failed, out=stored - stream_failed),
        )

    def as_dict(self) -> dict[str, dict[str, int]]:
        return self.model_dump(by_alias=True)
