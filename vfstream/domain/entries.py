"""Rank-0 fans for the entry service (SPEC 4): which states go, with which marketId, in which
batches. No I/O.

``marketId`` is the id of the rank-0 event's market, looked up by name in the campaign's
markets. A market the campaign service does not list is reported, never guessed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vfstream.domain.fans import FanState

MAX_RECORDS_PER_REQUEST = 500


def market_ids(markets: Any) -> dict[str, str]:
    """Market name -> id from the campaign service's ``[{"id", "name"}]`` answer.

    Raises ``ValueError`` for an answer of another shape.
    """
    if not isinstance(markets, list):
        raise ValueError(f"markets must be a JSON list, got {type(markets).__name__}")
    found: dict[str, str] = {}
    for market in markets:
        if not isinstance(market, dict) or "id" not in market or "name" not in market:
            raise ValueError(f"a market needs an id and a name, got {market!r}")
        found[str(market["name"])] = str(market["id"])
    return found


def rank0_market(state: FanState) -> str | None:
    first = state.events[0] if state.events else None
    return first.market if first is not None else None


def entry_record(state: FanState, market_id: str) -> dict[str, Any]:
    return {
        "memberId": state.memberId,
        "globalUserId": state.globalUserId,
        "phoneType": state.phoneType,
        "phone": state.phone,
        "phoneConfirmedDate": state.phoneConfirmedDate,
        "email": state.email,
        "firstName": state.firstName,
        "lastName": state.lastName,
        "verdict": state.isVerified,
        "score": state.score,
        "localFanscore": state.localFanscore,
        "bandScore": state.bandScore,
        "marketId": market_id,
        "locale": state.locale,
    }


@dataclass
class EntryPlan:
    """Requests per campaign, and the rank-0 fans that cannot be sent, with why."""

    requests: dict[str, list[list[dict[str, Any]]]] = field(default_factory=dict)
    unknown_market: list[tuple[FanState, str]] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(len(batch) for batches in self.requests.values() for batch in batches)


def plan_entries(states: Iterable[FanState], markets: Mapping[str, Mapping[str, str]]) -> EntryPlan:
    """Group rank-0 states by campaign into requests of at most 500 records.

    ``markets`` maps a campaign id to its market name -> id table; states of campaigns
    missing from it are left out (the caller reports those campaigns).
    """
    plan = EntryPlan()
    by_campaign: dict[str, list[dict[str, Any]]] = {}
    for state in states:
        if not state.rank0 or state.campaignId not in markets:
            continue
        name = rank0_market(state)
        market_id = markets[state.campaignId].get(name) if name is not None else None
        if market_id is None:
            plan.unknown_market.append((state, name or ""))
            continue
        by_campaign.setdefault(state.campaignId, []).append(entry_record(state, market_id))
    for campaign, records in by_campaign.items():
        plan.requests[campaign] = chunks(records, MAX_RECORDS_PER_REQUEST)
    return plan


def chunks(records: Sequence[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [list(records[start : start + size]) for start in range(0, len(records), size)]
