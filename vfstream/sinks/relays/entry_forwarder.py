"""Rank-0 fans to the entry service, read from the fan-state changelog (see ``relay.py``).

Per batch: the newest state of each fan, rank-0 ones only, grouped by campaign. A campaign
whose markets cannot be looked up, or whose requests keep failing, is reported (log, metric,
dead letter with its records) and does not hold up the other campaigns; a fan whose rank-0
market the campaign does not list is reported the same way, never sent with a guessed id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from vfstream import kafka
from vfstream.domain.entries import market_ids, plan_entries
from vfstream.domain.fans import FanState, decode_envelope
from vfstream.domain.keys import is_fan_key
from vfstream.metrics import DEAD_LETTERS, ENTRY_RECORDS
from vfstream.settings import Settings
from vfstream.sinks.clients.entry_service import EntryService, EntryServiceError
from vfstream.sinks.relays.base import Batch, TopicRelay
from vfstream.sources.campaigns import CampaignService, CampaignServiceError
from vfstream.topics import changelog_topic

log = logging.getLogger(__name__)

MARKETS_CACHE_SECONDS = 3_600.0


class EntryForwarder:
    def __init__(
        self,
        settings: Settings,
        *,
        entry_service: EntryService | None = None,
        campaign_service: CampaignService | None = None,
    ) -> None:
        self.settings = settings
        self.entry = entry_service or EntryService(settings.entry_service_url)
        self.campaigns = campaign_service or CampaignService(
            settings.campaign_service_url, cache_seconds=MARKETS_CACHE_SECONDS
        )
        topic = changelog_topic(settings, "fan-state")
        self.relay = TopicRelay(settings, "entry-forwarder", [topic], self._handle)
        self._producer: AIOKafkaProducer | None = None

    async def run(self, should_stop: Callable[[], bool]) -> None:
        self._producer = kafka.producer(self.settings)
        await self._producer.start()
        try:
            await self.relay.run(should_stop)
        finally:
            await self._producer.stop()

    async def _handle(self, batch: Batch, relay: TopicRelay) -> int:
        return await self.forward(states_of(batch))

    async def forward(self, states: list[FanState]) -> int:
        """Send the rank-0 states; returns how many records the entry service accepted."""
        rank0 = [state for state in states if state.rank0]
        markets: dict[str, dict[str, str]] = {}
        for campaign in sorted({state.campaignId for state in rank0}):
            try:
                markets[campaign] = market_ids(await self.campaigns.markets(campaign))
            except (CampaignServiceError, ValueError) as exc:
                stuck = [s for s in rank0 if s.campaignId == campaign]
                await self._report(campaign, stuck, f"markets unavailable: {exc}", "no-markets")
        plan = plan_entries(rank0, markets)
        for state, market in plan.unknown_market:
            reason = f"market {market!r} is not one of campaign {state.campaignId}'s markets"
            await self._report(state.campaignId, [state], reason, "unknown-market")
        sent = 0
        for campaign, requests in plan.requests.items():
            for records in requests:
                try:
                    result = await self.entry.post_scoring(campaign, records)
                except EntryServiceError as exc:
                    await self._dead_letter(campaign, records, str(exc), "failed")
                    continue
                sent += result.sent
                ENTRY_RECORDS.labels("sent").inc(result.sent)
                ENTRY_RECORDS.labels("inserted").inc(result.inserted)
                ENTRY_RECORDS.labels("updated").inc(result.updated)
        return sent

    async def _report(
        self, campaign: str, states: list[FanState], reason: str, outcome: str
    ) -> None:
        records = [{"globalUserId": s.globalUserId, "campaignId": s.campaignId} for s in states]
        await self._dead_letter(campaign, records, reason, outcome)

    async def _dead_letter(
        self, campaign: str, records: list[dict[str, Any]], reason: str, outcome: str
    ) -> None:
        ENTRY_RECORDS.labels(outcome).inc(len(records))
        DEAD_LETTERS.labels(f"entry-{outcome}").inc(len(records))
        log.error("entry service: %d record(s) of %s not sent: %s", len(records), campaign, reason)
        if self._producer is None:
            return
        body = orjson.dumps(
            {
                "kind": f"entry-{outcome}",
                "campaignId": campaign,
                "reasons": [reason],
                "records": records,
            }
        )
        await self._producer.send_and_wait(
            self.settings.dead_letter_topic, body, key=f"entry:{campaign}".encode()
        )


def states_of(batch: Batch) -> list[FanState]:
    """The newest state of each fan in a fan-state changelog batch."""
    latest: dict[bytes, FanState] = {}
    for records in batch.values():
        for record in records:
            key = record.key or b""
            if not is_fan_key(key) or record.value is None:
                continue
            try:
                latest[key] = decode_envelope(record.value).state
            except ValueError as exc:
                log.error("unreadable fan-state entry at offset %d skipped: %s", record.offset, exc)
    return list(latest.values())
