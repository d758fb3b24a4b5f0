"""The operator's console: the page, and the JSON behind it gathered from every worker
(runs, workers' activity, dead letters, campaigns).

Every open page asks every route every 2 s, so no route does work per request (issue #20):
each answer is kept ``CONSOLE_SECONDS`` and computed once for everyone asking meanwhile
(``SharedAnswers``); this worker's campaigns and runs come from one summary of its tables,
refreshed at most that often in a thread of its own and decoding only the values that
changed; other workers are asked once for everyone, in parallel, through the app's one HTTP
session; dead letters come from the worker's one tail of their topic (``web.letters``).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from faust.web import Request, Response, View
from prometheus_client import REGISTRY
from pydantic import ValidationError

from vfstream.domain.ledger import CampaignTotals
from vfstream.domain.reports import ReportBook
from vfstream.domain.runs import newest_first, run_rows
from vfstream.domain.windows import shown
from vfstream.sinks.relays.base import relay_statuses
from vfstream.stream import layout
from vfstream.web.auth import peer_headers
from vfstream.web.letters import DeadLetterTail
from vfstream.web.ports import Worker
from vfstream.web.shared import SharedAnswers
from vfstream.web.views import (
    CAMPAIGN,
    STATIC_FILES,
    STATIC_TYPES,
    bounded_int,
    campaign_view,
    json_response,
    owner_url,
    unavailable,
    window_series,
)

log = logging.getLogger(__name__)

CONSOLE_SECONDS = 1.0  # how long any console answer is kept for everyone asking
PEER_TIMEOUT_SECONDS = 3.0
RUNS_KEPT = 500  # the newest runs a worker keeps ready (the most /dashboard/runs shows)
CAMPAIGNS_SHOWN = 50  # /dashboard/campaigns without a limit
CAMPAIGNS_MOST = 500
SCAN_ATTEMPTS = 3


def worker_alarms(app_id: str) -> dict[str, Any]:
    """What the console shows about this worker beside its rate: what it could not do and
    will not retry (DynamoDB mirror items refused for good: an item over 400 KB, a number
    DynamoDB cannot hold, each a fan counted but missing from the table), and the relays
    waiting for their destination (what for, since when, the last error, the age of the
    oldest record not yet delivered)."""
    refused = REGISTRY.get_sample_value("vfstream_mirror_items_total", {"outcome": "refused"})
    waiting = [
        {
            "relay": name,
            "waitingFor": status["waitingFor"],
            "since": status["since"],
            "lanesWaiting": status["lanesWaiting"],
            "laneKind": status["laneKind"],
            "error": status["error"],
            "oldestUndeliveredSeconds": status["oldestUndeliveredSeconds"],
            "held": status["held"],
            "paused": status["paused"],
        }
        for name, status in sorted(relay_statuses(app_id).items())
        if status["state"] == "waiting"
    ]
    return {"mirrorRefused": int(refused or 0), "relaysWaiting": waiting}


def register_console_views(stream: Worker) -> Console:
    app = stream.app
    console = Console(stream)

    # The web server's cleanup (the worker stopping) stops the tail and the scan thread.
    async def stop_console(_: Any) -> None:
        await console.stop()

    app.web.web_app.on_cleanup.append(stop_console)

    @app.page("/")
    class Dashboard(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(STATIC_FILES["dashboard.html"], content_type="text/html")

    @app.page("/static/{name}")
    class Static(View):
        async def get(self, request: Request, name: str) -> Response:
            body = STATIC_FILES.get(name)
            if body is None or name.endswith(".html"):
                return json_response(self, {"error": "no such file"}, 404)
            return self.bytes(body, content_type=STATIC_TYPES[name.rsplit(".", 1)[-1]])

    def json_bytes(view: View, body: bytes) -> Response:
        return view.bytes(body, content_type="application/json")

    @app.page(f"/campaigns/{CAMPAIGN}/runs")
    class CampaignRuns(View):
        async def get(self, request: Request, campaignId: str) -> Response:
            def runs(totals: CampaignTotals) -> dict[str, Any]:
                book = stream.report_books.get(campaignId.encode())
                rows = run_rows(totals, ReportBook.from_bytes(book) if book else None)
                return {"campaignId": campaignId, "runs": rows}

            return await campaign_view(stream, self, request, campaignId, runs)

    @app.page("/runs/local")
    class LocalRuns(View):
        async def get(self, request: Request) -> Response:
            campaign = request.query.get("campaign") or None
            return json_bytes(self, await console.local_runs(campaign))

    @app.page("/dashboard/runs")
    class AllRuns(View):
        async def get(self, request: Request) -> Response:
            campaign = request.query.get("campaign") or None
            limit = bounded_int(request.query.get("limit"), default=100, most=RUNS_KEPT)
            return json_bytes(self, await console.all_runs(campaign, limit))

    @app.page("/worker/activity")
    class WorkerActivity(View):
        async def get(self, request: Request) -> Response:
            return json_bytes(self, await console.worker_activity())

    @app.page("/dashboard/workers")
    class AllWorkers(View):
        async def get(self, request: Request) -> Response:
            return json_bytes(self, await console.all_workers())

    @app.page("/dashboard/dead-letters")
    class DeadLetters(View):
        async def get(self, request: Request) -> Response:
            campaign = request.query.get("campaign") or None
            kind = request.query.get("kind") or None
            limit = bounded_int(request.query.get("limit"), default=20, most=200)
            try:
                body = await console.letters.answer(campaign, kind, limit)
            except Exception as exc:  # the broker away: say so, keep serving
                return unavailable(self, type(exc).__name__)
            return json_bytes(self, body)

    @app.page("/campaigns/local")
    class LocalCampaigns(View):
        async def get(self, request: Request) -> Response:
            limit = bounded_int(
                request.query.get("limit"), default=CAMPAIGNS_MOST, most=CAMPAIGNS_MOST
            )
            return json_bytes(self, await console.local_campaigns(limit))

    @app.page("/dashboard/console")
    class Everything(View):
        async def get(self, request: Request) -> Response:
            return json_bytes(self, await console.everything(ConsoleQuery.of(request.query)))

    @app.page("/dashboard/campaigns")
    class AllCampaigns(View):
        async def get(self, request: Request) -> Response:
            limit = bounded_int(
                request.query.get("limit"), default=CAMPAIGNS_SHOWN, most=CAMPAIGNS_MOST
            )
            return json_bytes(self, await console.all_campaigns(limit))

    return console


@dataclass
class Summary:
    """This worker's campaigns (counts, newest run first) and its newest runs."""

    campaigns: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)


def last_run_at(totals: CampaignTotals) -> str:
    """When the campaign's newest run was announced (settled, for a run announced before
    the time was kept): the key ``newest_first`` orders its rows by; "" without runs."""
    times = [run.announcedAt.isoformat() for run in totals.announced.values() if run.announcedAt]
    for settled in totals.history:
        at = settled.run.announcedAt or settled.settledAt
        times.append(at.isoformat())
    return max(times, default="")


class LocalSummary:
    """One summary of this worker's campaign-counts and report tables for every console
    route, at most ``CONSOLE_SECONDS`` old. The scan runs in a thread of its own, so the
    event loop (and the counting) never waits for it; a value that did not change since the
    last scan is not decoded again. A scan that meets a rebalance (the store's partitions
    changing under it) is tried again, and at worst the last summary is kept."""

    def __init__(self, stream: Worker) -> None:
        self.stream = stream
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vfstream-console")
        self._shared: SharedAnswers[Summary] = SharedAnswers(ttl=CONSOLE_SECONDS, maxsize=1)
        # key -> ((len, hash) of the value, its public counts or None when damaged, last run)
        self._memo: dict[bytes, tuple[tuple[int, int], dict[str, Any] | None, str]] = {}
        # key -> (its memo digest, its report book's, its run rows): the campaigns whose runs
        # the last summary read.
        self._rows: dict[bytes, tuple[tuple[int, int], tuple[int, int], list[Any]]] = {}
        self._last = Summary()
        self.scans = 0

    async def current(self) -> Summary:
        return await self._shared.get("summary", self._refresh)

    async def _refresh(self) -> Summary:
        loop = asyncio.get_running_loop()
        for _ in range(SCAN_ATTEMPTS):
            try:
                self._last = await loop.run_in_executor(self._executor, self._scan)
                return self._last
            except RuntimeError:  # "changed size during iteration": a rebalance moved stores
                await asyncio.sleep(0.1)
        return self._last

    def stop(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _scan(self) -> Summary:
        """In the scan thread: only iterations of the stores (``items``), never a keyed
        read, which would touch the store's key index the event loop uses unguarded."""
        self.scans += 1
        memo: dict[bytes, tuple[tuple[int, int], dict[str, Any] | None, str]] = {}
        # The campaigns with the newest runs (enough of them to hold the newest runs), and
        # their values: (last run, key, value), a heap, the oldest on top.
        newest: list[tuple[str, bytes, bytes]] = []
        for key, raw in self.stream.campaign_counts.data.items():
            if not raw:
                continue
            digest = (len(raw), hash(raw))
            entry = self._memo.get(key)
            if entry is None or entry[0] != digest:
                try:
                    totals = CampaignTotals.from_bytes(raw)
                except ValidationError:
                    log.warning("campaign-counts value of %r is damaged: left out", key[:40])
                    entry = (digest, None, "")
                else:
                    entry = (digest, totals.as_public(), last_run_at(totals))
            memo[key] = entry
            if entry[1] is not None and entry[2]:
                if len(newest) < RUNS_KEPT:
                    heapq.heappush(newest, (entry[2], key, raw))
                elif (entry[2], key) > newest[0][:2]:
                    heapq.heapreplace(newest, (entry[2], key, raw))
        self._memo = memo
        ordered = [(key, entry[1], entry[2]) for key, entry in memo.items() if entry[1]]
        ordered.sort(key=lambda item: item[1]["campaignId"])
        ordered.sort(key=lambda item: item[2], reverse=True)
        campaigns = [{**public, "lastRunAt": at or None} for _, public, at in ordered]
        values = {key: raw for _, key, raw in newest}
        books = {
            key: book
            for key, book in self.stream.report_books.data.items()
            if key in values and book
        }
        runs = self._newest_runs([(key, at) for key, _, at in ordered], values, books)
        return Summary(campaigns, runs)

    def _newest_runs(
        self, ordered: list[tuple[bytes, str]], values: dict[bytes, bytes], books: dict
    ) -> list[dict[str, Any]]:
        """The newest ``RUNS_KEPT`` runs: campaigns are taken newest run first, so the
        reading stops at the first campaign whose newest run is older than them all; the
        rows of a campaign whose counts and report book did not change are not made again
        (kept for the campaigns read last time only)."""
        rows: list[dict[str, Any]] = []
        kept: dict[bytes, tuple[tuple[int, int], tuple[int, int], list[dict[str, Any]]]] = {}
        for key, at in ordered:
            if not at or key not in values:
                break
            if len(rows) >= RUNS_KEPT and run_time(rows[-1]) >= at:
                break
            digest = self._memo[key][0]
            raw_book = books.get(key)
            book_digest = (len(raw_book), hash(raw_book)) if raw_book else (0, 0)
            entry = self._rows.get(key)
            if entry is None or entry[:2] != (digest, book_digest):
                entry = (digest, book_digest, self._runs_of(values[key], raw_book))
            kept[key] = entry
            rows = newest_first(rows + entry[2])[:RUNS_KEPT]
        self._rows = kept
        return rows

    @staticmethod
    def _runs_of(raw: bytes | None, raw_book: bytes | None) -> list[dict[str, Any]]:
        if not raw:
            return []
        try:
            totals = CampaignTotals.from_bytes(raw)
            book = ReportBook.from_bytes(raw_book) if raw_book else None
        except ValidationError:
            return []
        return run_rows(totals, book)

    def runs_of(self, campaign: str) -> list[dict[str, Any]]:
        """One campaign's runs when this worker owns its counts (not a standby copy); read
        in the event loop (one value)."""
        key = campaign.encode()
        if self.stream.partition_of(key) not in self.stream.owned_partitions(
            self.stream.settings.partials_topic
        ):
            return []
        return self._runs_of(
            self.stream.campaign_counts.data.get(key), self.stream.report_books.data.get(key)
        )


def run_time(row: dict[str, Any]) -> str:
    return row["announcedAt"] or row["settledAt"] or ""


class Console:
    """What the console's routes answer from, one per worker."""

    def __init__(self, stream: Worker) -> None:
        self.stream = stream
        self.letters = DeadLetterTail(stream.settings)
        self.summary = LocalSummary(stream)
        self._answers: SharedAnswers[bytes] = SharedAnswers(ttl=CONSOLE_SECONDS, maxsize=512)
        self._peers: SharedAnswers[list[Any]] = SharedAnswers(ttl=CONSOLE_SECONDS, maxsize=512)

    async def stop(self) -> None:
        await self.letters.stop()
        self.summary.stop()

    # --- other workers -------------------------------------------------------------------

    async def from_other_workers(self, path: str) -> list[Any]:
        """Every other worker's JSON answer to ``path`` (the workers the assignment knows),
        asked once for everyone who wants it within ``CONSOLE_SECONDS``."""
        return await self._peers.get(path, lambda: self._ask_other_workers(path))

    async def _ask_other_workers(self, path: str) -> list[Any]:
        stream = self.stream
        me = layout.own_url(stream.app)
        try:
            hosts = layout.worker_urls(stream.app)
        except Exception:
            hosts = set()
        answers = await asyncio.gather(*(self._ask(url + path) for url in sorted(hosts - {me})))
        return [answer for answer in answers if answer is not None]

    async def _ask(self, url: str) -> Any:
        # Another worker asks for a token as this one does: this worker's own first token.
        headers = peer_headers(self.stream.settings)
        timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT_SECONDS)
        try:
            async with self.stream.app.http_client.get(
                url, headers=headers, timeout=timeout
            ) as resp:
                if resp.status != 200:  # refused (another token) or failing: left out
                    return None
                return await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    # --- routes --------------------------------------------------------------------------

    async def local_campaigns(self, limit: int) -> bytes:
        async def compute() -> bytes:
            summary = await self.summary.current()
            body = {"campaigns": summary.campaigns[:limit], "total": len(summary.campaigns)}
            return orjson.dumps(body)

        return await self._answers.get(("campaigns/local", limit), compute)

    async def all_campaigns(self, limit: int) -> bytes:
        """The ``limit`` campaigns with the newest runs of all workers, and how many there are
        (each worker's own; a campaign moving in a rebalance may count twice meanwhile)."""

        async def compute() -> bytes:
            summary = await self.summary.current()
            merged = {item["campaignId"]: item for item in summary.campaigns[:limit]}
            total = len(summary.campaigns)
            for answer in await self.from_other_workers(f"/campaigns/local?limit={limit}"):
                total += int(answer.get("total", 0))
                for item in answer.get("campaigns", []):
                    merged.setdefault(item["campaignId"], item)
            items = sorted(merged.values(), key=lambda item: item["campaignId"])
            items.sort(key=lambda item: item.get("lastRunAt") or "", reverse=True)
            shown = [{k: v for k, v in item.items() if k != "lastRunAt"} for item in items[:limit]]
            return orjson.dumps({"campaigns": shown, "total": total})

        return await self._answers.get(("campaigns", limit), compute)

    async def _local_runs(self, campaign: str | None) -> list[dict[str, Any]]:
        if campaign is None:
            return (await self.summary.current()).runs
        return self.summary.runs_of(campaign)

    async def local_runs(self, campaign: str | None) -> bytes:
        async def compute() -> bytes:
            return orjson.dumps({"runs": await self._local_runs(campaign)})

        return await self._answers.get(("runs/local", campaign), compute)

    async def all_runs(self, campaign: str | None, limit: int) -> bytes:
        """Every worker's runs, newest first (a standby copy and its owner agree: one row a
        run)."""

        async def compute() -> bytes:
            query = f"?campaign={quote(campaign, safe='')}" if campaign else ""
            merged = {row["runId"]: row for row in await self._local_runs(campaign)}
            for answer in await self.from_other_workers("/runs/local" + query):
                for row in answer.get("runs", []):
                    merged.setdefault(row["runId"], row)
            return orjson.dumps({"runs": newest_first(list(merged.values()))[:limit]})

        return await self._answers.get(("runs", campaign, limit), compute)

    def _activity(self) -> dict[str, Any]:
        """This worker: its URL, the score partitions it owns, its rate and lag series."""
        stream = self.stream
        return {
            "worker": layout.own_url(stream.app),
            "partitions": sorted(stream.owned_score_partitions()),
            "alarms": worker_alarms(stream.settings.app_id),
            **stream.activity.as_json(),
        }

    async def worker_activity(self) -> bytes:
        async def compute() -> bytes:
            return orjson.dumps(self._activity())

        return await self._answers.get("activity", compute)

    async def all_workers(self) -> bytes:
        async def compute() -> bytes:
            others = await self.from_other_workers("/worker/activity")
            workers = sorted([self._activity(), *others], key=lambda w: w["worker"])
            return orjson.dumps({"workers": workers})

        return await self._answers.get("workers", compute)

    async def windows_of(self, campaign: str) -> bytes:
        """The windowed changes of one campaign as ``/campaigns/{id}/counts/windows`` answers,
        from its owner (this worker's store, or the owner asked through the one session)."""

        async def compute() -> bytes:
            stream = self.stream
            try:
                owner = owner_url(stream, stream.campaign_counts, campaign)
            except Exception:  # no assignment yet (starting, rebalancing)
                owner = None
            if owner is None:
                return orjson.dumps({"error": "no worker owns its partition yet"})
            if owner == layout.own_url(stream.app):
                if not stream.campaign_counts.get(campaign.encode()):
                    return orjson.dumps({"error": f"unknown campaign {shown(campaign)}"})
                return orjson.dumps(window_series(stream, campaign, None, None))
            answer = await self._ask(f"{owner}/campaigns/{quote(campaign, safe='')}/counts/windows")
            if answer is None:
                return orjson.dumps({"error": "the worker owning this campaign did not answer"})
            return orjson.dumps(answer)

        return await self._answers.get(("windows", campaign), compute)

    async def everything(self, query: ConsoleQuery) -> bytes:
        """One answer for one refresh of the page: the campaigns, the windows of the selected
        one (the first listed unless it names one), the runs, the dead letters and the
        workers, each as its own route answers it. One request a refresh instead of five:
        the worker's cost of a request is mostly the request itself."""

        async def compute() -> bytes:
            campaigns, runs, workers = await asyncio.gather(
                self.all_campaigns(query.campaigns),
                self.all_runs(query.runs_campaign, query.runs),
                self.all_workers(),
            )
            try:
                letters = await self.letters.answer(
                    query.letters_campaign, query.kind, query.letters
                )
            except Exception as exc:  # the broker away: this part says so
                letters = orjson.dumps({"error": f"dead letters unavailable: {type(exc).__name__}"})
            selected = query.selected
            if selected is None:
                listed = orjson.loads(campaigns)["campaigns"]
                selected = listed[0]["campaignId"] if listed else None
            windows = await self.windows_of(selected) if selected is not None else b"null"
            return b"".join(
                [
                    b'{"selected":',
                    orjson.dumps(selected),
                    b',"campaigns":',
                    campaigns,
                    b',"windows":',
                    windows,
                    b',"runs":',
                    runs,
                    b',"deadLetters":',
                    letters,
                    b',"workers":',
                    workers,
                    b"}",
                ]
            )

        return await self._answers.get(("console", query), compute)


@dataclass(frozen=True)
class ConsoleQuery:
    """What one refresh of the page asks for (``/dashboard/console``)."""

    selected: str | None = None
    runs_campaign: str | None = None
    letters_campaign: str | None = None
    kind: str | None = None
    campaigns: int = CAMPAIGNS_SHOWN
    runs: int = 100
    letters: int = 20

    @classmethod
    def of(cls, query: Any) -> ConsoleQuery:
        return cls(
            selected=query.get("campaign") or None,
            runs_campaign=query.get("runsCampaign") or None,
            letters_campaign=query.get("lettersCampaign") or None,
            kind=query.get("kind") or None,
            campaigns=bounded_int(
                query.get("campaigns"), default=CAMPAIGNS_SHOWN, most=CAMPAIGNS_MOST
            ),
            runs=bounded_int(query.get("runs"), default=100, most=RUNS_KEPT),
            letters=bounded_int(query.get("letters"), default=20, most=200),
        )
