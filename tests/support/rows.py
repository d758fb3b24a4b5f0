"""Scoring rows for tests: the smallest valid row, and a full one in SPEC column order."""

from typing import Any

import orjson

from vfstream.domain.fans import ScoreRow, row_from_json
from vfstream.domain.records import CSV_COLUMNS

SCORING_HEADER = ",".join(CSV_COLUMNS)

# The smallest valid scoring row (column -> text): fan u1, rank 0, campaign c1.
MINIMAL_ROW: dict[str, str] = {
    "globalUserId": "u1",
    "id": "u1000",
    "campaign_id": "c1",
    "event_id": "ev1",
    "score": "0.5",
    "isVerified": "true",
}


STAMP = "20261020T120000Z"


def scoring_key(campaign: str, name: str = "tour", stamp: str = STAMP, gz: bool = False) -> str:
    """An object key of the scrubbed scoring files (SPEC 2.1)."""
    suffix = ".gz" if gz else ""
    return f"scrubbed/registrants.{campaign}.{name}.{stamp}.cleaned.prepared.merged.csv{suffix}"


def csv_file(*rows: str) -> bytes:
    """A scoring file: the full header and these rows."""
    return (SCORING_HEADER + "\n" + "".join(row + "\n" for row in rows)).encode()


def scoring_row(campaign: str, user: str, rank: int = 0, **overrides: str) -> str:
    """One CSV line (no quoting applied) with every column; ``overrides`` replace values."""
    values = {
        "globalUserId": user,
        "id": f"{user}{rank:03d}",
        "campaign_id": campaign,
        "event_id": "ev1",
        "hbase": "chicago",
        "score": "0.5",
        "localFanscore": "0.4",
        "accountFanscore": "0.3",
        "bandScore": "",
        "isVerified": "true",
        "verdict": "",
        "nudetect.score": "0.1",
        "nudetect.scoreBand": "low",
        "review_notes": "",
        "codes": "",
        "memberId": f"m-{user}",
        "email": f"{user}@example.com",
        "firstName": "A",
        "lastName": "B",
        "phone": "",
        "phoneType": "",
        "phoneConfirmedDate": "",
        "locale": "en-us",
    }
    values.update(overrides)
    return ",".join(values[column] for column in CSV_COLUMNS)


def feed_document(
    fan: int, rank: int = 0, score: float = 0.5, campaign: str = "cfeed", **overrides: Any
) -> dict[str, Any]:
    """A valid Kinesis feed record (SPEC 2.3) for fan ``u<fan>``."""
    user = f"u{fan}"
    return {
        **MINIMAL_ROW,
        "globalUserId": user,
        "id": f"{user}{rank:03d}",
        "campaign_id": campaign,
        "campaignId": campaign,
        "event_id": f"ev{rank}",
        "score": score,
        "scoredAt": "2026-10-21T08:00:00Z",
        **overrides,
    }


def hot_row(
    user: str = "u1", rank: int = 0, verified: bool = True, verdict: bool | None = None
) -> ScoreRow:
    """A score record of campaign c1 as the hot path decodes it."""
    parsed = row_from_json(
        orjson.dumps(
            {
                "campaignId": "c1",
                "globalUserId": user,
                "id": f"{user}{rank:03d}",
                "rank": rank,
                "eventId": f"ev{rank}",
                "score": 0.5,
                "isVerified": verified,
                "verdict": verdict,
                "scoredAt": "2026-10-20T12:00:00Z",
            }
        )
    )
    assert isinstance(parsed, ScoreRow), parsed
    return parsed
