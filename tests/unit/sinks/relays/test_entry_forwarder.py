"""The entry forwarder as a lane destination, against local aiohttp servers playing the entry
and campaign services: one attempt at a campaign's fans, what it sends, what it reports, and
what it waits for (the lanes themselves: ``test_lanes.py``; on the real broker:
``tests/integration/test_entries.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from tests.support.services import Answer, ScriptedService, scripted_service
from tests.support.states import sample_state, stored_envelope
from vfstream.dev.stack import free_port
from vfstream.domain.records import EventPreference
from vfstream.metrics import DEAD_LETTERS
from vfstream.services.campaigns import CampaignService
from vfstream.settings import Settings
from vfstream.sinks.clients.entry_service import EntryService
from vfstream.sinks.relays.entry_forwarder import EntryForwarder
from vfstream.sinks.relays.lanes import Parcel

TP = TopicPartition("fan-state-changelog", 0)
MARKETS = [{"id": "m-chi", "name": "chicago"}, {"id": "m-det", "name": "detroit"}]


def fan_record(
    offset: int, gid: str, market: str = "chicago", *, rank0: bool = True
) -> ConsumerRecord:
    events = (
        [EventPreference(eventId="e", market=market)]
        if rank0
        else [None, EventPreference(eventId="e", market=market)]
    )
    state = sample_state(campaignId="c1", globalUserId=gid, events=events)
    key, value = state.key.encode(), stored_envelope(state)
    return ConsumerRecord(TP.topic, 0, offset, 0, 0, key, value, None, len(key), len(value), ())


@pytest.fixture
async def services() -> AsyncIterator[tuple[ScriptedService, ScriptedService]]:
    async with scripted_service() as entry, scripted_service() as campaigns:
        entry.fallback = Answer.json(200, {"inserted": 1, "updated": 0})
        campaigns.script["/campaigns/c1/markets"] = [Answer.json(200, MARKETS)]
        yield entry, campaigns


def forwarder(entry_url: str, campaigns_url: str) -> EntryForwarder:
    return EntryForwarder(
        Settings(),
        entry_service=EntryService(entry_url, attempts=1),
        campaign_service=CampaignService(campaigns_url, attempts=1),
    )


def parcels_of(f: EntryForwarder, records: list[ConsumerRecord]) -> list[Parcel]:
    return [
        Parcel(lane, key, value, ((TP, rec.offset),))
        for rec in records
        for lane, key, value in f.parcels(TP, rec)
    ]


def sent_ids(entry: ScriptedService) -> list[list[str]]:
    return [[r["globalUserId"] for r in body["records"]] for body in entry.bodies(succeeded=True)]


def letters(kind: str) -> float:
    return DEAD_LETTERS.labels(kind)._value.get()


def test_only_rank_0_fans_of_the_fan_state_become_parcels_in_their_campaigns_lane() -> None:
    f = forwarder("http://127.0.0.1:1", "http://127.0.0.1:1")
    bookkeeping = ConsumerRecord(TP.topic, 0, 9, 0, 0, b"#ledger", b"{}", None, 7, 2, ())
    broken = ConsumerRecord(TP.topic, 0, 10, 0, 0, b"c1:g", b"\x00nope", None, 4, 6, ())
    records = [fan_record(0, "g1"), fan_record(1, "g2", rank0=False), bookkeeping, broken]
    parcels = parcels_of(f, records)
    assert [(p.lane, p.key) for p in parcels] == [("c1", records[0].key)]


async def test_an_attempt_sends_in_requests_of_500_and_reports_unknown_markets(
    services: tuple[ScriptedService, ScriptedService],
) -> None:
    entry, campaigns = services
    f = forwarder(entry.url, campaigns.url)
    records = [fan_record(n, f"g{n}", "detroit") for n in range(1_100)]
    records.append(fan_record(1_100, "lost", "toronto"))
    parcels = parcels_of(f, records)
    before = letters("entry-unknown-market")
    attempt = await f.deliver("c1", parcels, lambda: True)
    assert attempt.wait is None and {id(p) for p in attempt.done} == {id(p) for p in parcels}
    assert [len(ids) for ids in sent_ids(entry)] == [500, 500, 100]
    assert {r["marketId"] for b in entry.bodies() for r in b["records"]} == {"m-det"}
    assert letters("entry-unknown-market") == before + 1


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (Answer(404, "{}"), "markets: the campaign service knows no such thing"),
        (Answer(503, "down"), "markets: campaign service unavailable after 1 attempts "
         "(HTTP 503 from the campaign service)"),
        (Answer.json(200, {"not": "a list"}), "markets unreadable: markets must be a JSON list"),
    ],
)  # fmt: skip
async def test_a_campaign_whose_markets_cannot_be_had_waits_for_the_campaign_service(
    services: tuple[ScriptedService, ScriptedService], answer: Answer, error: str
) -> None:
    entry, campaigns = services
    campaigns.script["/campaigns/c1/markets"] = [answer]
    f = forwarder(entry.url, campaigns.url)
    attempt = await f.deliver("c1", parcels_of(f, [fan_record(0, "g1")]), lambda: True)
    assert attempt.done == [] and attempt.wait is not None
    assert attempt.wait.destination == "campaign service"
    assert attempt.wait.error.startswith(error)
    assert entry.requests == []


async def test_a_campaign_service_not_listening_is_waited_for_without_its_address(
    services: tuple[ScriptedService, ScriptedService],
) -> None:
    entry, _ = services
    f = forwarder(entry.url, f"http://127.0.0.1:{free_port()}")
    attempt = await f.deliver("c1", parcels_of(f, [fan_record(0, "g1")]), lambda: True)
    assert attempt.wait is not None and attempt.wait.destination == "campaign service"
    assert "Connection refused" in attempt.wait.error and "127.0.0.1" not in attempt.wait.error


async def test_a_failing_request_leaves_it_and_the_later_ones_waiting(
    services: tuple[ScriptedService, ScriptedService],
) -> None:
    entry, campaigns = services
    entry.respond = lambda path, body: Answer(503, "busy") if b'"g600"' in body else None
    f = forwarder(entry.url, campaigns.url)
    parcels = parcels_of(f, [fan_record(n, f"g{n}") for n in range(1_200)])
    attempt = await f.deliver("c1", parcels, lambda: True)
    assert attempt.done == parcels[:500]
    assert attempt.wait is not None and (attempt.wait.destination, attempt.wait.error) == (
        "entry service",
        "HTTP 503",
    )
    assert len(entry.requests) == 2


async def test_a_refused_request_is_split_until_the_refused_record_alone_is_reported(
    services: tuple[ScriptedService, ScriptedService],
) -> None:
    entry, campaigns = services
    entry.respond = lambda path, body: Answer(422, "bad email") if b'"bad"' in body else None
    f = forwarder(entry.url, campaigns.url)
    gids = ["g0", "g1", "g2", "bad", "g4", "g5", "g6"]
    parcels = parcels_of(f, [fan_record(n, gid) for n, gid in enumerate(gids)])
    before = letters("entry-refused")
    attempt = await f.deliver("c1", parcels, lambda: True)
    assert attempt.wait is None and len(attempt.done) == len(parcels)
    assert sorted(g for ids in sent_ids(entry) for g in ids) == sorted(set(gids) - {"bad"})
    assert letters("entry-refused") == before + 1
    refused = [orjson.loads(r.body) for r in entry.requests if r.status == 422]
    assert [b["records"][0]["globalUserId"] for b in refused if len(b["records"]) == 1] == ["bad"]


async def test_an_attempt_stops_between_requests_when_the_relay_is_being_stopped(
    services: tuple[ScriptedService, ScriptedService],
) -> None:
    entry, campaigns = services
    f = forwarder(entry.url, campaigns.url)
    parcels = parcels_of(f, [fan_record(n, f"g{n}") for n in range(700)])
    answers = iter([True, False])
    attempt = await f.deliver("c1", parcels, lambda: next(answers))
    assert attempt.wait is None and attempt.done == parcels[:500]
