"""The operator's console: the page, and the JSON behind it gathered from every worker
(runs, workers' activity, dead letters, campaigns)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
from cachetools import TTLCache
from faust.web import Request, Response, View

from vfstream.domain.ledger import CampaignTotals
from vfstream.domain.reports import ReportBook
from vfstream.domain.runs import newest_first, run_rows
from vfstream.ops.reads import recent_dead_letters
from vfstream.web.auth import peer_headers
from vfstream.web.views import (
    CAMPAIGN,
    DEAD_LETTER_CACHE_SECONDS,
    STATIC_FILES,
    STATIC_TYPES,
    bounded_int,
    campaign_view,
    json_response,
    unavailable,
)

if TYPE_CHECKING:
    from vfstream.stream.app import VfStream


def register_console_views(stream: VfStream) -> None:
    app = stream.app

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
            return json_response(self, {"runs": local_runs(stream, campaign)})

    @app.page("/dashboard/runs")
    class AllRuns(View):
        async def get(self, request: Request) -> Response:
            campaign = request.query.get("campaign") or None
            limit = bounded_int(request.query.get("limit"), default=100, most=500)
            return json_response(self, {"runs": await all_runs(stream, campaign, limit)})

    @app.page("/worker/activity")
    class WorkerActivity(View):
        async def get(self, request: Request) -> Response:
            return json_response(self, worker_activity(stream))

    @app.page("/dashboard/workers")
    class AllWorkers(View):
        async def get(self, request: Request) -> Response:
            others = await from_other_workers(stream, "/worker/activity")
            workers = sorted([worker_activity(stream), *others], key=lambda w: w["worker"])
            return json_response(self, {"workers": workers})

    dead_letter_cache: TTLCache[tuple[str | None, str | None, int], Any] = TTLCache(
        maxsize=64, ttl=DEAD_LETTER_CACHE_SECONDS
    )

    @app.page("/dashboard/dead-letters")
    class DeadLetters(View):
        async def get(self, request: Request) -> Response:
            campaign = request.query.get("campaign") or None
            kind = request.query.get("kind") or None
            limit = bounded_int(request.query.get("limit"), default=20, most=200)
            query = (campaign, kind, limit)
            if query not in dead_letter_cache:
                try:
                    dead_letter_cache[query] = await recent_dead_letters(
                        stream.settings, campaign=campaign, kind=kind, limit=limit
                    )
                except Exception as exc:  # the broker away: say so, keep serving
                    return unavailable(self, type(exc).__name__)
            return json_response(self, {"deadLetters": dead_letter_cache[query]})

    @app.page("/campaigns/local")
    class LocalCampaigns(View):
        async def get(self, request: Request) -> Response:
            return json_response(self, {"campaigns": local_campaigns(stream)})

    @app.page("/dashboard/campaigns")
    class AllCampaigns(View):
        async def get(self, request: Request) -> Response:
            return json_response(self, {"campaigns": await all_campaigns(stream)})


def local_campaigns(stream: VfStream) -> list[dict[str, Any]]:
    """Counts of the campaigns whose counts this worker owns."""
    out = []
    for value in stream.campaign_counts.values():
        if value:
            out.append(CampaignTotals.from_bytes(value).as_public())
    return out


async def from_other_workers(stream: VfStream, path: str) -> list[Any]:
    """Every other worker's JSON answer to ``path`` (the workers the assignment knows)."""
    me = str(stream.app.conf.canonical_url).rstrip("/")
    try:
        hosts = {str(host).rstrip("/") for host in stream.app.router.tables_metadata()}
    except Exception:
        hosts = set()
    answers: list[Any] = []
    # Another worker asks for a token as this one does: this worker's own first token.
    headers = peer_headers(stream.settings)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
        for url in sorted(hosts - {me}):
            try:
                async with session.get(url + path, headers=headers) as resp:
                    if resp.status != 200:  # refused (another token) or failing: left out
                        continue
                    answers.append(await resp.json())
            except (aiohttp.ClientError, TimeoutError, ValueError):
                continue
    return answers


async def all_campaigns(stream: VfStream) -> list[dict[str, Any]]:
    """Every worker's local campaigns, gathered through the table's routing metadata."""
    merged = {item["campaignId"]: item for item in local_campaigns(stream)}
    for answer in await from_other_workers(stream, "/campaigns/local"):
        for item in answer.get("campaigns", []):
            merged[item["campaignId"]] = item
    return sorted(merged.values(), key=lambda item: item["campaignId"])


def local_runs(stream: VfStream, campaign: str | None = None) -> list[dict[str, Any]]:
    """The scoring runs of the campaigns this worker holds counts of."""
    rows: list[dict[str, Any]] = []
    for key, value in stream.campaign_counts.items():
        if not value or (campaign is not None and key != campaign.encode()):
            continue
        totals = CampaignTotals.from_bytes(value)
        raw_book = stream.report_books.get(key)
        rows.extend(run_rows(totals, ReportBook.from_bytes(raw_book) if raw_book else None))
    return rows


async def all_runs(stream: VfStream, campaign: str | None, limit: int) -> list[dict[str, Any]]:
    """Every worker's runs, newest first (a standby copy and its owner agree: one row a run)."""
    query = f"?campaign={quote(campaign, safe='')}" if campaign else ""
    merged = {row["runId"]: row for row in local_runs(stream, campaign)}
    for answer in await from_other_workers(stream, "/runs/local" + query):
        for row in answer.get("runs", []):
            merged.setdefault(row["runId"], row)
    return newest_first(list(merged.values()))[:limit]


def worker_activity(stream: VfStream) -> dict[str, Any]:
    """This worker: its URL, the score partitions it owns, its rate and lag series."""
    return {
        "worker": str(stream.app.conf.canonical_url).rstrip("/"),
        "partitions": sorted(stream.owned_score_partitions()),
        **stream.activity.as_json(),
    }
