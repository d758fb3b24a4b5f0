"""Rank-0 fans to the entry service, read from the fan-state changelog (a ``TopicRelay``, see
``base.py`` and ``lanes.py``).

**One lane per campaign.** Each rank-0 state read is parked in its campaign's lane, keyed by
the fan: a fan's newer state replaces an older one not yet sent, so a fan goes once with its
newest state. A lane sends its fans in requests of at most 500 records, after looking up the
campaign's markets (cached an hour); up to ``LANES`` campaigns are delivered at once, each
independently of the others.

**Waiting, not dropping.** While the entry service fails a campaign's requests (a 5xx, 429,
404, a refused or reset connection, a timeout) or the campaign service cannot give its
markets (down, or not knowing the campaign yet: a 404), that campaign's lane waits: it backs
off with jitter (at most 10 s between attempts) and tries again for as long as it takes, and
its records stay uncommitted. The other campaigns' lanes go on meanwhile,
also for records that come after the waiting campaign's in the same partition; the
partition's offset is committed only up to the oldest record not yet delivered, so a restart
or a rebalance reads the waiting campaign's records again (and repeats some of the others',
which the entry service takes as updates): one campaign's failures hold up no other
campaign and lose none of its own. ``/statuses`` names the waiting campaigns.

**Reported, not retried**, only what the record itself is wrong for: a fan whose rank-0
market the campaign does not list (``entry-unknown-market``, never sent with a guessed id),
and a record the entry service refuses as bad (a 400, 413 or 422: the request is split until
the refused record is alone, and that record is dead-lettered as ``entry-refused``). A dead
letter that cannot be written makes the lane wait too.

Memory is bounded: past ``MAX_HELD`` fans held, the relay stops reading until fewer are
(then a campaign waiting long enough does hold up the others; ``/statuses`` says
``paused``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from vfstream import kafka
from vfstream.domain.entries import MAX_RECORDS_PER_REQUEST, entry_record, market_ids, rank0_market
from vfstream.domain.fans import FanState, decode_envelope
from vfstream.domain.keys import is_fan_key
from vfstream.errors import describe_error
from vfstream.metrics import DEAD_LETTERS, ENTRY_RECORDS
from vfstream.services.campaigns import CampaignService, CampaignServiceError
from vfstream.settings import Settings
from vfstream.sinks.clients.entry_service import (
    EntryService,
    EntryServiceError,
    EntryServiceRefused,
)
from vfstream.sinks.relays.base import TopicRelay
from vfstream.sinks.relays.lanes import Attempt, Parcel, Wait
from vfstream.stream.layout import Table, changelog_topic

log = logging.getLogger(__name__)

MARKETS_CACHE_SECONDS = 3_600.0
LANES = 8  # campaigns delivered at once
MAX_HELD = 50_000  # fans read and not yet sent, across campaigns, before reading pauses
PER_ATTEMPT = 2_000  # fans of a campaign one attempt sends (4 requests)

ENTRY_SERVICE = "entry service"
CAMPAIGN_SERVICE = "campaign service"
DEAD_LETTER_TOPIC = "dead-letter topic"


class EntryForwarder:
    name = ENTRY_SERVICE

    def __init__(
        self,
        settings: Settings,
        *,
        entry_service: EntryService | None = None,
        campaign_service: CampaignService | None = None,
        max_backoff_seconds: float = 10.0,
        max_held: int = MAX_HELD,
    ) -> None:
        self.settings = settings
        # One call an attempt: the lane's backoff is the retry, and what it waits for shows.
        self.entry = entry_service or EntryService(settings.entry_service_url, attempts=1)
        self.campaigns = campaign_service or CampaignService(
            settings.campaign_service_url, cache_seconds=MARKETS_CACHE_SECONDS, attempts=1
        )
        topic = changelog_topic(settings, Table.FAN_STATE)
        self.relay = TopicRelay(
            settings,
            "entry-forwarder",
            [topic],
            self,
            max_held=max_held,
            per_attempt=PER_ATTEMPT,
            concurrency=LANES,
            max_backoff_seconds=max_backoff_seconds,
            lane_noun="campaign",
        )
        self._producer: AIOKafkaProducer | None = None

    async def run(self, should_stop: Callable[[], bool]) -> None:
        self._producer = kafka.producer(self.settings)
        await self._producer.start()
        try:
            await self.relay.run(should_stop)
        finally:
            await self._producer.stop()
            self._producer = None

    # --- the relay's destination ---------------------------------------------------------

    def parcels(self, tp: TopicPartition, record: ConsumerRecord) -> Iterable[tuple[str, Any, Any]]:
        """A rank-0 fan's state, in its campaign's lane, keyed by the fan; held as the
        changelog's bytes (a third of the decoded state's memory), decoded again to send."""
        state = _state_of(record)
        if state is None or not state.rank0:
            return ()
        return ((state.campaignId, record.key, record.value),)

    async def deliver(
        self, campaign: str, parcels: list[Parcel], go_on: Callable[[], bool]
    ) -> Attempt:
        """One attempt at a campaign's fans: its markets, then requests of at most 500, in
        order, until one fails (the rest wait) or the relay is being stopped."""
        try:
            markets = market_ids(await self.campaigns.markets(campaign))
        except CampaignServiceError as exc:
            cause = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
            return Attempt(wait=Wait(CAMPAIGN_SERVICE, f"markets: {exc}{cause}"))
        except ValueError as exc:
            return Attempt(wait=Wait(CAMPAIGN_SERVICE, f"markets unreadable: {exc}"[:256]))
        done: list[Parcel] = []
        unknown: list[tuple[Parcel, FanState, str]] = []
        sendable: list[tuple[Parcel, dict[str, Any]]] = []
        for parcel in parcels:
            state = decode_envelope(parcel.value).state
            name = rank0_market(state)
            market_id = markets.get(name) if name is not None else None
            if market_id is None:
                unknown.append((parcel, state, name or ""))
            else:
                sendable.append((parcel, entry_record(state, market_id)))
        try:
            for parcel, state, market in unknown:
                reason = f"market {market!r} is not one of campaign {campaign}'s markets"
                await self._dead_letter(campaign, [_who(state)], reason, "unknown-market")
                done.append(parcel)
        except KafkaError as exc:
            return Attempt(done, Wait(DEAD_LETTER_TOPIC, describe_error(exc)))
        requests = [
            sendable[start : start + MAX_RECORDS_PER_REQUEST]
            for start in range(0, len(sendable), MAX_RECORDS_PER_REQUEST)
        ]
        while requests and go_on():
            request = requests.pop(0)
            records = [record for _, record in request]
            try:
                result = await self.entry.post_scoring(campaign, records)
            except EntryServiceRefused as exc:
                if len(request) > 1:  # find the refused record: each half on its own
                    half = len(request) // 2
                    requests[0:0] = [request[:half], request[half:]]
                    continue
                try:
                    who = {"globalUserId": records[0].get("globalUserId"), "campaignId": campaign}
                    await self._dead_letter(campaign, [who], str(exc), "refused")
                except KafkaError as error:
                    return Attempt(done, Wait(DEAD_LETTER_TOPIC, describe_error(error)))
                done.append(request[0][0])
                continue
            except EntryServiceError as exc:
                return Attempt(done, Wait(ENTRY_SERVICE, str(exc)))
            done.extend(parcel for parcel, _ in request)
            ENTRY_RECORDS.labels("sent").inc(result.sent)
            ENTRY_RECORDS.labels("inserted").inc(result.inserted)
            ENTRY_RECORDS.labels("updated").inc(result.updated)
        return Attempt(done)

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


def _who(state: FanState) -> dict[str, Any]:
    return {"globalUserId": state.globalUserId, "campaignId": state.campaignId}


def _state_of(record: ConsumerRecord) -> FanState | None:
    key = record.key or b""
    if not is_fan_key(key) or record.value is None:
        return None
    try:
        return decode_envelope(record.value).state
    except ValueError as exc:
        log.error("unreadable fan-state entry at offset %d skipped: %s", record.offset, exc)
        return None
