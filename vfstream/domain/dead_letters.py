"""Dead letters as the operator's console shows them (issue #15). No I/O.

Every producer of the dead-letter topic writes a JSON object with ``kind`` and ``reasons``;
where the refused input was depends on the kind (a file and line, a Kinesis shard and
sequence number, a score-record partition and offset). Raw text is cut to a length a page
and a terminal can show; the page puts it in with ``textContent``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

RAW_CHARS = 500


def _where(letter: dict[str, Any]) -> str:
    if letter.get("key") and letter.get("bucket") is not None:
        line = letter.get("line")
        return f"s3://{letter['bucket']}/{letter['key']}" + (f":{line}" if line else "")
    if letter.get("stream"):
        return (
            f"kinesis://{letter['stream']}/{letter.get('shardId')}/{letter.get('sequenceNumber')}"
        )
    if "partition" in letter and "offset" in letter:
        index = f"[{letter['index']}]" if "index" in letter else ""
        return f"score-records {letter['partition']}@{letter['offset']}{index}"
    return ""


def describe(value: bytes, timestamp_ms: int | None) -> dict[str, Any] | None:
    """One dead letter for display; None when the message is not a dead letter."""
    try:
        letter = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(letter, dict) or "kind" not in letter:
        return None
    raw = letter.get("raw")
    if raw is None and "records" in letter:
        raw = orjson.dumps(letter["records"]).decode()
    raw = str(raw or "")
    reasons = letter.get("reasons") or []
    return {
        "kind": str(letter["kind"]),
        "campaignId": letter.get("campaignId"),
        "where": _where(letter),
        "line": letter.get("line"),
        "reasons": [str(reason)[:RAW_CHARS] for reason in reasons][:20],
        "raw": raw[:RAW_CHARS] + ("…" if len(raw) > RAW_CHARS else ""),
        "at": (
            datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC).isoformat()
            if timestamp_ms
            else None
        ),
    }


def latest(
    letters: Iterable[dict[str, Any]], *, campaign: str | None, kind: str | None, limit: int
) -> list[dict[str, Any]]:
    """The newest ``limit`` letters per (campaign, kind), newest first, filtered."""
    chosen = [
        letter
        for letter in letters
        if (campaign is None or letter["campaignId"] == campaign)
        and (kind is None or letter["kind"] == kind)
    ]
    chosen.sort(key=lambda letter: letter["at"] or "", reverse=True)
    kept: list[dict[str, Any]] = []
    per_group: dict[tuple[Any, str], int] = {}
    for letter in chosen:
        group = (letter["campaignId"], letter["kind"])
        if per_group.get(group, 0) < limit:
            per_group[group] = per_group.get(group, 0) + 1
            kept.append(letter)
    return kept
