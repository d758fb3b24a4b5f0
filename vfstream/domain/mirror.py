"""What the DynamoDB demand table holds for each changelog entry (SPEC 4 layout). No I/O.

The mirror reads the tables' changelogs; each entry becomes at most one item. Within one
changelog partition entries are in write order and a key lives in one partition, so the last
entry of a key in a batch is the one to write, and a stored item with a higher ``version``
must never be replaced by an older one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from vfstream.domain.fans import FanState, decode_envelope
from vfstream.domain.keys import is_fan_key
from vfstream.domain.ledger import CampaignTotals
from vfstream.domain.reports import ReportBook

COUNTS_SK = "meta:counts"
SLACK_COUNTS_SK = "meta:slack:counts"


class MirroredTable(StrEnum):
    FAN_STATE = "fan-state"
    CAMPAIGN_COUNTS = "campaign-counts"
    SLACK_REPORTS = "slack-reports"


@dataclass(frozen=True)
class MirrorItem:
    attributes: dict[str, Any]
    version: int | None = None  # fan items only: compared with the stored item's version

    @property
    def key(self) -> tuple[str, str]:
        return (self.attributes["PK"], self.attributes["SK"])


def _offset_form(moment: str) -> str:
    """ISO-8601 with ``+00:00`` for UTC, as the demand table has always held it."""
    return moment[:-1] + "+00:00" if moment.endswith("Z") else moment


def fan_item(state: FanState) -> MirrorItem:
    item: dict[str, Any] = {
        "PK": f"fan:{state.globalUserId}",
        "SK": f"campaign:{state.campaignId}",
        "globalUserId": state.globalUserId,
        "campaignId": state.campaignId,
        "memberId": state.memberId,
        "score": state.score,
        "registrationScore": state.localFanscore,
        "accountScore": state.accountFanscore,
        "bandScore": state.bandScore,
        "isVerified": state.isVerified,
        "verdict": state.verdict,
        "codes": list(state.codes),
        "tags": list(state.tags),
        "origin": {
            "nudetect": {"score": state.nudetect.score, "scoreBand": state.nudetect.scoreBand}
        },
        "events": [
            None if event is None else {"eventId": event.eventId, "market": event.market}
            for event in state.events
        ],
        "date": {"updated": _offset_form(state.updated)},
        "version": state.version,
    }
    if state.rank0:
        item["rank"] = "0"
    return MirrorItem(attributes=item, version=state.version)


def counts_item(
    campaign_id: str, verified: int, rejected: int, selected: int, sk: str
) -> MirrorItem:
    return MirrorItem(
        attributes={
            "PK": f"campaign:{campaign_id}",
            "SK": sk,
            "campaignId": campaign_id,
            "verified": verified,
            "rejected": rejected,
            "selected": selected,
        }
    )


def item_for_entry(table: MirroredTable, key: bytes, value: bytes | None) -> MirrorItem | None:
    """The item one changelog entry asks for, or None (bookkeeping keys, tombstones).

    Raises ``ValueError`` for an entry that cannot be read; the caller reports it.
    """
    if value is None:
        return None
    if table is MirroredTable.FAN_STATE:
        if not is_fan_key(key):  # the ledger's partial counts, run progress and index
            return None
        return fan_item(decode_envelope(value).state)
    if table is MirroredTable.CAMPAIGN_COUNTS:
        totals = CampaignTotals.from_bytes(value)
        counts = totals.counts
        return counts_item(
            totals.campaignId, counts.verified, counts.rejected, counts.selected, COUNTS_SK
        )
    book = ReportBook.from_bytes(value)
    if book.last is None:
        return None
    last = book.last
    return counts_item(
        book.campaignId, last.verified, last.rejected, last.selected, SLACK_COUNTS_SK
    )


def latest_per_key(items: list[MirrorItem]) -> list[MirrorItem]:
    """One item per key, the last one given (entries come in changelog order)."""
    latest: dict[tuple[str, str], MirrorItem] = {}
    for item in items:
        latest.pop(item.key, None)
        latest[item.key] = item
    return list(latest.values())


def newer_than_stored(
    items: list[MirrorItem], stored: dict[tuple[str, str], int]
) -> list[MirrorItem]:
    """Drop fan items whose stored version is the same or newer: replays and late writes."""
    return [
        item for item in items if item.version is None or stored.get(item.key, 0) < item.version
    ]
