"""The one-pass row validator of the ingestion hot path: a CSV row's fields by column index
to a score record's JSON, or the row's reasons, with the same rules as ``ScoreRecord`` (a
property test holds the two together) and no per-field Python validators. No I/O."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter

from vfstream.domain.limits import (
    DEFAULT_LIMITS,
    Limits,
    number_refusal,
    over_bytes,
    underflows,
)
from vfstream.domain.records import (
    ScoringKey,
    as_aware,
    limit_reasons,
    normalise_email,
)

_ASCII_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_BOOL_TEXT = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_BANDS = frozenset({"low", "medium", "high"})
_CONTACT_COLUMNS = (
    ("memberId", "memberId"),
    ("firstName", "firstName"),
    ("lastName", "lastName"),
    ("phone", "phone"),
    ("phoneType", "phoneType"),
    ("phoneConfirmedDate", "phoneConfirmedDate"),
    ("locale", "locale"),
)
_OPTIONAL_FLOATS = (
    ("localFanscore", "localFanscore"),
    ("accountFanscore", "accountFanscore"),
    ("bandScore", "bandScore"),
    ("nudetect.score", "nudetectScore"),
)


_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)


def _as_bool(text: str | bool | None) -> bool | None:
    return _BOOL_TEXT.get(text.lower()) if isinstance(text, str) else None


class RowValidator:
    """Validates the rows of one file in one pass of plain Python (issue #13: ingestion at
    50,000 rows a second): the record's JSON-ready dict, or None when the row is not plainly
    valid, in which case ``build_score_record`` (pydantic, every reason) decides.

    It accepts exactly what ``build_score_record`` accepts, and gives the same record (a
    hypothesis test holds the two equal); anything unusual goes the slow way. Columns are
    read by index (an absent column reads an empty field appended to the row), and a text
    is measured in bytes only when its characters could be past a limit.
    """

    def __init__(
        self,
        kept: list[tuple[str, int]],
        scoring_key: ScoringKey,
        source: dict[str, Any],
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        at = {column: index for column, index in kept}
        # An absent column points one past the header: the row is padded with "" up to it.
        self._width = max(at.values(), default=-1) + 2
        blank = self._width - 1

        def index(column: str) -> int:
            return at.get(column, blank)

        self._user, self._id, self._campaign_at = (
            index("globalUserId"),
            index("id"),
            index("campaign_id"),
        )
        self._event, self._score = index("event_id"), index("score")
        self._verified, self._verdict = index("isVerified"), index("verdict")
        self._market, self._email, self._band = (
            index("hbase"),
            index("email"),
            index("nudetect.scoreBand"),
        )
        self._tags, self._codes = index("review_notes"), index("codes")
        self._contacts = [(index(column), name) for column, name in _CONTACT_COLUMNS]
        self._floats = [(index(column), name) for column, name in _OPTIONAL_FLOATS]
        self._campaign: str | None = scoring_key.campaign_id
        if limit_reasons("campaign_id", scoring_key.campaign_id, limits):
            self._campaign = None  # every row goes the slow way and says why
        self._name = scoring_key.campaign_name
        # The key's time as a record serialises it.
        self._scored_at = _DATETIME.dump_python(as_aware(scoring_key.scored_at), mode="json")
        self._source = source
        self._events = limits.events_per_fan
        self._limit = limits.field_bytes
        self._id_limit = limits.id_bytes
        # Texts of at most this many characters cannot be past a limit in bytes.
        self._short = min(limits.field_bytes, limits.id_bytes) // 4

    def validate(self, fields: list[str], line: int) -> dict[str, Any] | None:
        if len(fields) < self._width:
            fields = fields + [""] * (self._width - len(fields))
        short = self._short
        user = fields[self._user].strip()
        row_id = fields[self._id].strip()
        event_id = fields[self._event].strip()
        if (
            not user
            or not event_id
            or len(row_id) < 4
            or fields[self._campaign_at].strip() != self._campaign
            or row_id[:-3] != user
        ):
            return None
        rank_text = row_id[-3:]
        if not (rank_text.isascii() and rank_text.isdigit()):
            return None
        rank = int(rank_text)
        if rank >= self._events or _CONTROL_CHARACTERS.search(user):
            return None
        if (len(row_id) > short or len(event_id) > short) and (
            over_bytes(user, self._id_limit) is not None
            or over_bytes(row_id, self._id_limit + 3) is not None
            or over_bytes(event_id, self._limit) is not None
        ):
            return None
        score = _plain_float(fields[self._score].strip(), short, self._limit)
        if score is None or not 0.0 <= score <= 1.0:
            return None
        verified = _BOOL_TEXT.get(fields[self._verified].strip().lower())
        if verified is None:
            return None
        record: dict[str, Any] = {}
        for at, name in self._contacts:
            text = fields[at].strip()
            if text:
                if len(text) > short and over_bytes(text, self._limit) is not None:
                    return None
                record[name] = text
        email = fields[self._email].strip()
        if email:
            if len(email) > short and over_bytes(email, self._limit) is not None:
                return None
            email = normalise_email(email)
            if email:
                record["email"] = email
        record["campaignId"] = self._campaign
        record["campaignName"] = self._name
        record["globalUserId"] = user
        record["id"] = row_id
        record["rank"] = rank
        record["eventId"] = event_id
        market = fields[self._market].strip()
        if market:
            if len(market) > short and over_bytes(market, self._limit) is not None:
                return None
            record["market"] = market
        record["score"] = score
        for at, name in self._floats:
            text = fields[at].strip()
            if text:
                value = _plain_float(text, short, self._limit)
                if value is None:
                    return None
                record[name] = value
        record["isVerified"] = verified
        verdict_text = fields[self._verdict].strip()
        if verdict_text:
            verdict = _BOOL_TEXT.get(verdict_text.lower())
            if verdict is None:
                return None
            record["verdict"] = verdict
        band = fields[self._band].strip()
        if band:
            band = band.lower()
            if band not in _BANDS:
                return None
            record["nudetectScoreBand"] = band
        for at, name in ((self._tags, "tags"), (self._codes, "codes")):
            text = fields[at].strip()
            if len(text) > short and over_bytes(text, self._limit) is not None:
                return None
            record[name] = (
                [part.strip() for part in text.split("|") if part.strip()] if text else []
            )
        record["scoredAt"] = self._scored_at
        record["source"] = {**self._source, "line": line}
        return record


_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f]")


def _plain_float(text: str, short: int, limit: int) -> float | None:
    """A plainly written finite number (ASCII digits), else None: the slow path decides."""
    if len(text) > short and over_bytes(text, limit) is not None:
        return None
    if not _ASCII_FLOAT.fullmatch(text):
        return None
    value = float(text)
    if number_refusal(value) is not None or underflows(text, value):
        return None  # the slow path says why
    return value + 0.0  # -0 is 0
