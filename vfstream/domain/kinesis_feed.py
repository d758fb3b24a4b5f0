"""Score records published as JSON to a Kinesis stream (SPEC 2.3). No I/O here.

A feed record carries the fields of a scoring-file row under the same names (``campaign_id``,
``event_id``, ``nudetect.score`` ...) plus ``campaignId``, which plays the part the object
key plays for a file: the campaign every row must belong to. It is validated by the same
``build_score_record`` as a CSV row, so a record is valid from Kinesis exactly when it would
be valid in a file.

Two optional fields stand in for the rest of the key: ``campaignName``, and ``scoredAt``
(ISO-8601, the time of the scoring run). Without ``scoredAt`` the record's Kinesis arrival
time is used; records of one scoring run should carry the same ``scoredAt``, or each fan's
later record counts as a newer scoring run and replaces the events list (SPEC 3).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from vfstream.domain.limits import DEFAULT_LIMITS, Limits, has_control_characters, over_bytes
from vfstream.domain.records import (
    CSV_COLUMNS,
    MAX_ROW_BYTES,
    ScoreRecord,
    ScoringKey,
    as_aware,
    build_score_record,
    future_refusal,
    parse_iso_datetime,
)

CAMPAIGN_FIELD = "campaignId"
CAMPAIGN_NAME_FIELD = "campaignName"
SCORED_AT_FIELD = "scoredAt"
# Columns whose CSV text is a `|`-separated list: a JSON array of strings is accepted too.
LIST_COLUMNS = frozenset({"review_notes", "codes"})
DEAD_LETTER_KIND = "kinesis-record"


class FeedPosition(BaseModel):
    """Where one Kinesis record was read."""

    model_config = ConfigDict(frozen=True)

    stream: str
    shardId: str
    sequenceNumber: str
    partitionKey: str = ""
    arrivedAt: datetime


class FeedRejection(BaseModel):
    """An invalid feed record as it goes to the dead-letter topic: where, what, and why."""

    model_config = ConfigDict(frozen=True)

    kind: str = DEAD_LETTER_KIND
    stream: str
    shardId: str
    sequenceNumber: str
    partitionKey: str
    raw: str
    reasons: list[str]
    campaignId: str | None = None

    @property
    def key(self) -> str:
        return feed_record_id(self.stream, self.shardId, self.sequenceNumber)

    def to_json(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self)


def feed_record_id(stream: str, shard_id: str, sequence_number: str) -> str:
    return f"kinesis://{stream}/{shard_id}/{sequence_number}"


def feed_run_id(stream: str, campaign_id: str) -> str:
    """The run a feed record counts towards: one per stream and campaign.

    A per-record or per-arrival run would grow the workers' run index without bound; a
    stream never ends, so its runs never settle the way a file does.
    """
    return f"kinesis://{stream}/{campaign_id}"


def printable(data: bytes) -> str:
    """Record bytes for a dead letter: at most 64 KiB, invalid UTF-8 shown as \\xNN."""
    return data[:MAX_ROW_BYTES].decode("utf-8", "backslashreplace")


def _column_text(column: str, value: Any) -> str | None:
    """The CSV text a JSON value stands for; None when the value cannot be a cell."""
    if value is None:
        return ""
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    if (
        column in LIST_COLUMNS
        and isinstance(value, list)
        and all(isinstance(item, str) for item in value)
    ):
        return "|".join(value)
    return None


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array"}.get(type(value), type(value).__name__)


def parse_feed_record(
    data: bytes,
    position: FeedPosition,
    limits: Limits = DEFAULT_LIMITS,
    now: datetime | None = None,
) -> ScoreRecord | FeedRejection:
    """Validate one Kinesis record into a score record, or a rejection with every reason."""

    def reject(reasons: list[str], campaign_id: str | None = None) -> FeedRejection:
        return FeedRejection(
            stream=position.stream,
            shardId=position.shardId,
            sequenceNumber=position.sequenceNumber,
            partitionKey=position.partitionKey,
            raw=printable(data),
            reasons=reasons,
            campaignId=campaign_id,
        )

    if len(data) > MAX_ROW_BYTES:
        return reject([f"record: longer than {MAX_ROW_BYTES // 1024} KiB"])
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return reject(["record: not valid UTF-8"])
        return reject([f"record: not valid JSON ({exc})"])
    if not isinstance(document, dict):
        return reject([f"record: expected a JSON object, got {_type_name(document)}"])

    reasons: list[str] = []
    campaign_id = document.get(CAMPAIGN_FIELD)
    if campaign_id is None or (isinstance(campaign_id, str) and not campaign_id.strip()):
        reasons.append(f"{CAMPAIGN_FIELD}: required value is missing or empty")
        campaign_id = None
    elif not isinstance(campaign_id, str):
        reasons.append(f"{CAMPAIGN_FIELD}: expected a string, got {_type_name(campaign_id)}")
        campaign_id = None
    else:
        campaign_id = campaign_id.strip()

    campaign_name = document.get(CAMPAIGN_NAME_FIELD)
    if campaign_name is not None and not isinstance(campaign_name, str):
        reasons.append(f"{CAMPAIGN_NAME_FIELD}: expected a string, got {_type_name(campaign_name)}")
        campaign_name = None
    campaign_name = (campaign_name or "").strip() or None
    if campaign_name is not None:
        size = over_bytes(campaign_name, limits.field_bytes)
        if size is not None:
            reasons.append(
                f"{CAMPAIGN_NAME_FIELD}: {size} bytes, over the limit of {limits.field_bytes}"
            )
            campaign_name = None
        elif has_control_characters(campaign_name):
            reasons.append(f"{CAMPAIGN_NAME_FIELD}: holds control characters")
            campaign_name = None

    scored_at = as_aware(position.arrivedAt)
    scored_text = document.get(SCORED_AT_FIELD)
    if scored_text is not None:
        try:
            if not isinstance(scored_text, str):
                raise ValueError
            scored_at = parse_iso_datetime(scored_text)
        except ValueError:
            reasons.append(
                f"{SCORED_AT_FIELD}: expected an ISO-8601 date-time (got {scored_text!r})"
            )
        else:
            too_far = future_refusal(scored_at, now or datetime.now(UTC), limits)
            if too_far is not None:
                reasons.append(f"{SCORED_AT_FIELD}: {too_far}")

    values: dict[str, str] = {}
    for column, value in document.items():
        if column not in CSV_COLUMNS:
            continue  # like an unknown CSV column
        text = _column_text(column, value)
        if text is None:
            reasons.append(
                f"{column}: expected a string, number or boolean, got {_type_name(value)}"
            )
        else:
            values[column] = text

    # Without a campaignId the row's own campaign_id is taken as the key's, so the row's other
    # faults are still reported and no mismatch is invented.
    key_campaign = campaign_id or values.get("campaign_id", "").strip()
    scoring_key = ScoringKey(
        campaign_id=key_campaign,
        campaign_name=campaign_name or "",
        scored_at=scored_at,
        gzipped=False,
    )
    source = {
        "bucket": "",
        "key": "",
        "etag": "",
        "line": 0,
        "run": feed_run_id(position.stream, key_campaign),
        "stream": position.stream,
        "shardId": position.shardId,
        "sequenceNumber": position.sequenceNumber,
    }
    result = build_score_record(values, scoring_key, source, limits)
    if isinstance(result, list):
        reasons.extend(result)
    if reasons or isinstance(result, list):
        return reject(reasons, campaign_id or None)
    if campaign_name is None:
        # The campaign name is campaign-level: absent here, the state keeps the one it has.
        result = result.model_copy(update={"campaignName": None})
    return result
