"""Rank-0 fans to the entry service, with local aiohttp servers playing the entry service and
the campaign service; real broker for the worker and the dead letters.

Outages (issue #21 item 3): the entry service or the campaign service down for minutes, and
one campaign's requests failing, are waited out (nothing dead-lettered, every rank-0 fan
delivered once when the service is back) and shown on ``/statuses`` meanwhile; a campaign
that fails holds up no other, and its records are not committed past (a restart while it
fails still delivers them)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.kafka import read_committed
from tests.support.services import Answer, ScriptedService, scripted_service
from tests.support.tcpproxy import TcpProxy
from tests.support.waiting import eventually
from vfstream.dev.generator import (
    GeneratorConfig,
    ScoringRun,
    expected_counts,
    generate_run,
    global_user_id,
)
from vfstream.dev.scenario import upload_run, wait_for_counts
from vfstream.dev.workers import WorkerProcess
from vfstream.settings import Settings
from vfstream.sources.s3.ingestor import ScoringFileIngestor

pytestmark = pytest.mark.integration

MARKETS = [{"id": "m-chi", "name": "chicago"}, {"id": "m-det", "name": "detroit"},
           {"id": "m-ny", "name": "new-york"}, {"id": "m-la", "name": "los-angeles"}]  # fmt: skip
IDS = {market["name"]: market["id"] for market in MARKETS}  # toronto is unknown on purpose
# Every market the generator's fans prefer: no fan is an unknown-market dead letter.
ALL_MARKETS = [*MARKETS, {"id": "m-tor", "name": "toronto"}]
ACCEPTED = Answer.json(200, {"inserted": 1, "updated": 0})


@pytest.fixture
async def services() -> AsyncIterator[tuple[ScriptedService, ScriptedService]]:
    async with scripted_service() as entry, scripted_service() as campaigns:
        entry.fallback = Answer.json(200, {"inserted": 1, "updated": 0})
        yield entry, campaigns


async def dead_letters(settings: Settings, kind: str) -> list[dict]:
    found = [
        orjson.loads(m.value) for m in await read_committed(settings, settings.dead_letter_topic)
    ]
    return [letter for letter in found if letter.get("kind") == kind]


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


# --- outages (issue #21 item 3) ---------------------------------------------------------------


def rank0_fans(run: ScoringRun) -> set[str]:
    return {global_user_id(n) for n in range(run.fans) if run.masks[n] & 1}


def delivered(entry: ScriptedService, campaign: str) -> list[str]:
    """Every globalUserId the entry service took for ``campaign``, repeats included."""
    bodies = entry.bodies(f"/campaigns/{campaign}/scoring", succeeded=True)
    return [record["globalUserId"] for body in bodies for record in body["records"]]


async def entry_letters(settings: Settings) -> list[dict]:
    found = [
        orjson.loads(m.value) for m in await read_committed(settings, settings.dead_letter_topic)
    ]
    return [letter for letter in found if str(letter.get("kind", "")).startswith("entry-")]


async def forwarder_status(worker: WorkerProcess) -> dict[str, Any]:
    _, body = await worker.get_json("/statuses")
    return body["relays"]["entry-forwarder"]


async def says(
    worker: WorkerProcess, accept: Callable[[dict[str, Any]], bool], timeout: float = 60
) -> None:
    """``/statuses`` shows the entry forwarder as ``accept`` wants it, within ``timeout``.
    (Every check of what the worker says goes through here, so the delivery checks alone
    can be run against code that says nothing.)"""
    await eventually(lambda: forwarder_status(worker), accept, timeout=timeout)


async def console_says(worker: WorkerProcess, accept: Callable[[list[Any]], bool]) -> None:
    """The console's workers table holds the relays waiting, as ``accept`` wants them."""

    async def waiting() -> list[Any]:
        _, body = await worker.get_json("/dashboard/workers")
        return body["workers"][0]["alarms"]["relaysWaiting"]

    await eventually(waiting, accept, timeout=10)


def forwarding(settings: Settings, entry_url: str, campaigns_url: str) -> Settings:
    return settings.model_copy(
        update={
            "entry_service_url": entry_url,
            "campaign_service_url": campaigns_url,
            "forward_to_entry_service": True,
        }
    )


async def ingest(settings: Settings, run: ScoringRun, work: Path) -> None:
    key = await upload_run(settings, run, work)
    summary = await ScoringFileIngestor(settings).ingest(settings.scoring_bucket, key)
    assert summary.status == "ingested", summary.error


async def sleep_until(moment: float) -> None:
    await asyncio.sleep(max(moment - time.monotonic(), 0.0))


async def each_once_when_back(entry: ScriptedService, campaign: str, fans: set[str]) -> None:
    """Every fan of ``fans`` delivered, then (a while later) each exactly once."""
    await eventually(
        lambda: asyncio.sleep(0, set(delivered(entry, campaign))),
        lambda seen: seen == fans,
        timeout=120,
        interval=1,
    )
    await asyncio.sleep(5)  # nothing more comes
    repeats = {gid: n for gid, n in Counter(delivered(entry, campaign)).items() if n > 1}
    assert not repeats and set(delivered(entry, campaign)) == fans


def waiting_for(destination: str, error: str, held: int) -> Callable[[dict[str, Any]], bool]:
    def accept(status: dict[str, Any]) -> bool:
        return (
            status["state"] == "waiting"
            and status["waitingFor"] == destination
            and error in status["error"]
            and "127.0.0.1" not in status["error"]  # the service's address is not shown
            and status["held"] == held
            and bool(status["since"])
        )

    return accept


async def test_the_entry_service_down_for_3_minutes_gets_every_rank_0_fan_once_after(
    isolated: Settings, tmp_path: Path
) -> None:
    """90 s answering 503, then 90 s not listening (connections refused), while a file with
    rank-0 fans is processed: the forwarder waits, says so, dead-letters nothing, and
    delivers each fan once when the service is back."""
    async with scripted_service() as entry, scripted_service() as campaigns:
        proxy = TcpProxy(int(entry.url.rsplit(":", 1)[1]))
        await proxy.start()
        campaigns.script["/campaigns/cwait/markets"] = [Answer.json(200, ALL_MARKETS)]
        entry.fallback = Answer(503, "down for maintenance")
        settings = forwarding(isolated, proxy.url, campaigns.url)
        run = generate_run(GeneratorConfig(campaign_id="cwait", campaign_name="T", fans=700))
        fans = rank0_fans(run)
        worker = WorkerProcess(settings, "entry-outage", tmp_path / "logs")
        worker.start()
        try:
            await worker.wait_ready()
            down_since = time.monotonic()
            await ingest(settings, run, tmp_path)
            await wait_for_counts(worker, "cwait", expected_counts([run])["cwait"], 180)
            await says(worker, waiting_for("entry service", "HTTP 503", len(fans)))
            await says(worker, lambda s: [lane["lane"] for lane in s["lanes"]] == ["cwait"])
            await console_says(
                worker,
                lambda relays: (
                    [(r["relay"], r["waitingFor"], r["error"]) for r in relays]
                    == [("entry-forwarder", "entry service", "HTTP 503")]
                ),
            )

            await sleep_until(down_since + 90)
            await proxy.cut()  # not listening now
            refused = waiting_for("entry service", "Connection refused", len(fans))
            await says(worker, refused, timeout=30)
            await sleep_until(down_since + 180)
            await says(worker, lambda s: refused(s) and s["oldestUndeliveredSeconds"] > 120)
            assert delivered(entry, "cwait") == []
            assert entry.hits("/campaigns/cwait/scoring") > 5  # kept trying

            entry.fallback = ACCEPTED
            await proxy.restore()
            await each_once_when_back(entry, "cwait", fans)
            assert await entry_letters(settings) == []
            await says(
                worker,
                lambda s: (
                    s["state"] == "delivering"
                    and s["held"] == 0
                    and s["oldestUndeliveredSeconds"] is None
                    and s["lastError"]["destination"] == "entry service"
                ),
                timeout=30,
            )
            await console_says(worker, lambda relays: relays == [])
        finally:
            worker.stop()
            await proxy.cut()


async def test_the_campaign_service_down_for_a_while_delays_the_markets_and_loses_no_fan(
    isolated: Settings, tmp_path: Path
) -> None:
    """The campaign service answering 503 for 30 s, then not listening for 30 s: no fan is
    sent (no market id to send it with) nor dead-lettered; each goes once it is back."""
    async with scripted_service() as entry, scripted_service() as campaigns:
        proxy = TcpProxy(int(campaigns.url.rsplit(":", 1)[1]))
        await proxy.start()
        campaigns.script["/campaigns/cmarkets/markets"] = [Answer(503, "down")]
        entry.fallback = ACCEPTED
        settings = forwarding(isolated, entry.url, proxy.url)
        run = generate_run(GeneratorConfig(campaign_id="cmarkets", campaign_name="T", fans=500))
        fans = rank0_fans(run)
        worker = WorkerProcess(settings, "markets-outage", tmp_path / "logs")
        worker.start()
        try:
            await worker.wait_ready()
            down_since = time.monotonic()
            await ingest(settings, run, tmp_path)
            await says(worker, waiting_for("campaign service", "HTTP 503", len(fans)), 120)
            await sleep_until(down_since + 30)
            await proxy.cut()
            refused = waiting_for("campaign service", "Connection refused", len(fans))
            await says(worker, refused, timeout=30)
            await sleep_until(down_since + 60)
            await says(worker, refused)
            assert entry.requests == [] and await entry_letters(settings) == []

            campaigns.script["/campaigns/cmarkets/markets"] = [Answer.json(200, ALL_MARKETS)]
            await proxy.restore()
            await each_once_when_back(entry, "cmarkets", fans)
            assert await entry_letters(settings) == []
            assert campaigns.hits("/campaigns/cmarkets/markets") > 3
        finally:
            worker.stop()
            await proxy.cut()


async def test_one_campaigns_failing_requests_hold_up_no_other_and_lose_none_of_its_own(
    isolated: Settings, tmp_path: Path
) -> None:
    """The entry service answers 503 for one campaign's path only. The other campaign's fans,
    in the same partitions after the failing one's, all go; the failing campaign waits
    (``/statuses`` names it), is not committed past (a worker restarted meanwhile reads its
    fans again), and goes once its path is answered."""
    async with scripted_service() as entry, scripted_service() as campaigns:
        for campaign in ("cstuck", "cflows"):
            campaigns.script[f"/campaigns/{campaign}/markets"] = [Answer.json(200, ALL_MARKETS)]
        entry.fallback = ACCEPTED
        entry.script["/campaigns/cstuck/scoring"] = [Answer(503, "cstuck is busy")]
        settings = forwarding(isolated, entry.url, campaigns.url)
        stuck = generate_run(GeneratorConfig(campaign_id="cstuck", campaign_name="T", fans=600))
        flows = generate_run(GeneratorConfig(campaign_id="cflows", campaign_name="T", fans=600))
        worker = WorkerProcess(settings, "one-campaign-failing", tmp_path / "logs")
        worker.start()
        try:
            await worker.wait_ready()
            await ingest(settings, stuck, tmp_path)
            await ingest(settings, flows, tmp_path)
            await eventually(
                lambda: asyncio.sleep(0, set(delivered(entry, "cflows"))),
                lambda seen: seen == rank0_fans(flows),
                timeout=180,
                interval=1,
            )
            assert delivered(entry, "cstuck") == []
            stuck_and_waiting = waiting_for("entry service", "HTTP 503", len(rank0_fans(stuck)))
            await says(
                worker,
                lambda s: (
                    stuck_and_waiting(s) and [lane["lane"] for lane in s["lanes"]] == ["cstuck"]
                ),
            )

            worker.stop()  # what was committed is all a new run of the relay has
            worker.start()
            await worker.wait_ready()
            await says(worker, stuck_and_waiting, timeout=120)
            assert delivered(entry, "cstuck") == []

            entry.script["/campaigns/cstuck/scoring"] = [ACCEPTED]
            await each_once_when_back(entry, "cstuck", rank0_fans(stuck))
            assert set(delivered(entry, "cflows")) == rank0_fans(flows)
            assert await entry_letters(settings) == []
        finally:
            worker.stop()
