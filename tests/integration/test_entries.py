"""Rank-0 fans to the entry service, with local aiohttp servers playing the entry service and
the campaign service; real broker for the worker and the dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from tests.support.kafka import read_committed
from tests.support.services import Answer, ScriptedService, scripted_service
from tests.support.states import sample_state
from tests.support.waiting import eventually
from vfstream import kafka
from vfstream.dev.generator import GeneratorConfig, expected_counts, generate_run, global_user_id
from vfstream.dev.scenario import upload_run, wait_for_counts
from vfstream.dev.workers import WorkerProcess
from vfstream.domain.records import EventPreference
from vfstream.settings import Settings
from vfstream.sinks.clients.entry_service import EntryService
from vfstream.sinks.relays.entry_forwarder import EntryForwarder
from vfstream.sources.campaigns import CampaignService
from vfstream.sources.s3.ingestor import ScoringFileIngestor

pytestmark = pytest.mark.integration

MARKETS = [{"id": "m-chi", "name": "chicago"}, {"id": "m-det", "name": "detroit"},
           {"id": "m-ny", "name": "new-york"}, {"id": "m-la", "name": "los-angeles"}]  # fmt: skip
IDS = {market["name"]: market["id"] for market in MARKETS}  # toronto is unknown on purpose


@pytest.fixture
async def services() -> AsyncIterator[tuple[ScriptedService, ScriptedService]]:
    async with scripted_service() as entry, scripted_service() as campaigns:
        entry.fallback = Answer.json(200, {"inserted": 1, "updated": 0})
        yield entry, campaigns


def fan(campaign: str, gid: str, market: str) -> object:
    return sample_state(
        campaignId=campaign, globalUserId=gid, events=[EventPreference(eventId="e", market=market)]
    )


async def dead_letters(settings: Settings, kind: str) -> list[dict]:
    found = [
        orjson.loads(m.value) for m in await read_committed(settings, settings.dead_letter_topic)
    ]
    return [letter for letter in found if letter.get("kind") == kind]


async def test_a_failing_campaign_is_reported_and_does_not_block_another(
    isolated: Settings, services: tuple[ScriptedService, ScriptedService]
) -> None:
    entry, campaigns = services
    campaigns.script["/campaigns/ok/markets"] = [Answer.json(200, MARKETS)]
    campaigns.script["/campaigns/broken/markets"] = [Answer.json(200, MARKETS)]
    campaigns.script["/campaigns/gone/markets"] = [Answer(404, "{}")]
    entry.script["/campaigns/broken/scoring"] = [Answer(500, "down")]
    forwarder = EntryForwarder(
        isolated,
        entry_service=EntryService(entry.url, attempts=3, max_wait=0.05),
        campaign_service=CampaignService(campaigns.url, attempts=2),
    )
    forwarder._producer = kafka.producer(isolated)
    await forwarder._producer.start()
    try:
        states = [
            fan("broken", "b1", "chicago"),
            fan("gone", "g1", "chicago"),
            fan("ok", "o1", "detroit"),
            fan("ok", "o2", "toronto"),
            fan("ok", "o3", "new-york"),
        ]
        sent = await forwarder.forward(states)
    finally:
        await forwarder._producer.stop()
    assert sent == 2
    assert entry.hits("/campaigns/broken/scoring") == 3  # retried, then given up
    ok = entry.bodies("/campaigns/ok/scoring")
    assert [[(r["globalUserId"], r["marketId"]) for r in body["records"]] for body in ok] == [
        [("o1", "m-det"), ("o3", "m-ny")]
    ]
    failed = await dead_letters(isolated, "entry-failed")
    assert [r["globalUserId"] for letter in failed for r in letter["records"]] == ["b1"]
    unknown = await dead_letters(isolated, "entry-unknown-market")
    assert [letter["records"][0]["globalUserId"] for letter in unknown] == ["o2"]
    assert "toronto" in unknown[0]["reasons"][0]
    missing = await dead_letters(isolated, "entry-no-markets")
    assert [letter["records"][0]["globalUserId"] for letter in missing] == ["g1"]


async def test_worker_sends_exactly_the_rank_0_fans_with_their_market_ids(
    isolated: Settings, services: tuple[ScriptedService, ScriptedService], tmp_path: Path
) -> None:
    entry, campaigns = services
    campaigns.script["/campaigns/centry/markets"] = [Answer.json(200, MARKETS)]
    settings = isolated.model_copy(
        update={
            "entry_service_url": entry.url,
            "campaign_service_url": campaigns.url,
            "forward_to_entry_service": True,
        }
    )
    run = generate_run(GeneratorConfig(campaign_id="centry", campaign_name="T", fans=700))
    rank0 = {global_user_id(n) for n in range(run.fans) if run.masks[n] & 1}
    worker = WorkerProcess(settings, "entries", tmp_path / "logs")
    worker.start()
    try:
        await worker.wait_ready()
        key = await upload_run(settings, run, tmp_path)
        summary = await ScoringFileIngestor(settings).ingest(settings.scoring_bucket, key)
        assert summary.status == "ingested"
        await wait_for_counts(worker, "centry", expected_counts([run])["centry"], 180)

        def received() -> dict[str, str]:
            bodies = entry.bodies("/campaigns/centry/scoring", succeeded=True)
            return {r["globalUserId"]: r["marketId"] for b in bodies for r in b["records"]}

        async def accounted() -> tuple[dict[str, str], set[str]]:
            unknown = await dead_letters(settings, "entry-unknown-market")
            return received(), {r["globalUserId"] for u in unknown for r in u["records"]}

        sent, unknown = await eventually(
            accounted, lambda seen: set(seen[0]) | seen[1] == rank0, timeout=120, interval=1
        )
        assert not set(sent) & unknown and unknown, "toronto fans must be reported"
        assert all(len(b["records"]) <= 500 for b in entry.bodies("/campaigns/centry/scoring"))
        for gid, market_id in sent.items():
            _, state = await worker.get_json(f"/campaigns/centry/fans/{gid}")
            assert state["rank0"] and IDS[state["events"][0]["market"]] == market_id
        for gid in unknown:
            _, state = await worker.get_json(f"/campaigns/centry/fans/{gid}")
            assert state["events"][0]["market"] == "toronto"
        assert campaigns.hits("/campaigns/centry/markets") == 1  # looked up once, cached
        await asyncio.sleep(0)
    finally:
        worker.stop()
