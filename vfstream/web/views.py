"""Read-only HTTP views on every worker; a key owned by another worker is proxied to it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp.http_exceptions import HttpProcessingError
from cachetools import TTLCache
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from vfstream.domain.fans import decode_envelope
from vfstream.domain.keys import fan_key
from vfstream.domain.ledger import CampaignTotals
from vfstream.domain.reports import ReportBook
from vfstream.domain.runs import newest_first, run_rows
from vfstream.domain.windows import parse_window_bounds, shown
from vfstream.ops.reads import recent_dead_letters
from vfstream.sources.campaigns import CampaignService, CampaignServiceError

if TYPE_CHECKING:
    from vfstream.stream.app import VfStream


MAX_EVENT_ID_CHARS = 256
# Ids may hold any character: aiohttp's default pattern refuses "{" and "}" (an id with
# them answered a bare 404); an encoded "/" (%2F) stays inside the segment.
CAMPAIGN = "{campaignId:[^/]+}"
FAN = "{globalUserId:[^/]+}"

# Served from memory: the dashboard's page, script and style sheet, read once.
STATIC_TYPES = {"html": "text/html", "js": "text/javascript", "css": "text/css"}
STATIC_FILES = {
    name: resources.files("vfstream.web.static").joinpath(name).read_bytes()
    for name in ("dashboard.html", "dashboard.js", "dashboard.css")
}
# Campaign ids, names and keys come from S3 keys and Kinesis records: hostile text. The page
# builds its DOM with textContent only; this policy also refuses any inline or foreign script.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class MalformedRequestLog(logging.Filter):
    """aiohttp logs every malformed request (a bad request line, header or URL) at ERROR
    with a full traceback; anyone who can reach the port can fill the log that way. Such a
    request is the client's fault and already answered 400: one WARNING line says so."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "refused a malformed HTTP request (%s): %s"
            record.args = (exc.code, str(exc.message)[:200])
            record.exc_info = record.exc_text = None
            record.stack_info = None
        return True


def quiet_malformed_requests() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestLog) for f in server_log.filters):
        server_log.addFilter(MalformedRequestLog())


async def _security_headers(request: Any, response: Any) -> None:
    """Every response, errors and proxied answers included, carries the security headers."""
    response.headers.update(SECURITY_HEADERS)


DEAD_LETTER_CACHE_SECONDS = 3.0


def _bounded_int(text: str | None, *, default: int, most: int) -> int:
    """A positive count from a query parameter, at most ``most``; ``default`` if unreadable."""
    try:
        value = int(text) if text else default
    except ValueError:
        return default
    return max(1, min(value, most))


def _json(view: View, body: Any, status: int = 200) -> Response:
    return view.bytes(orjson.dumps(body), content_type="application/json", status=status)


ROUTED_HEADER = "X-Vfstream-Routed"


def owner_url(stream: VfStream, table: Any, key: str) -> str | None:
    """The web URL of the worker owning ``key`` in ``table``: the one the assignment gave the
    partition the one hash picks (``domain.keys.partition_for``), as every producer does."""
    partition = stream.partition_of(key.encode())
    topic = table.changelog_topic.get_topic_name()
    for host, topics in stream.app.router.table_metadata(table.name).items():
        if partition in topics.get(topic, ()):
            return str(host).rstrip("/")
    return None


async def _routed(
    stream: VfStream,
    view: View,
    request: Request,
    table: Any,
    key: str,
    local: Callable[[], Awaitable[Response]],
) -> Response:
    """Answer from this worker's store when it owns the key, else proxy to the owner."""
    try:
        owner = owner_url(stream, table, key)
    except Exception as exc:  # no assignment yet (starting, rebalancing)
        owner, reason = None, str(exc)
    else:
        reason = "no worker owns its partition yet"
    me = str(stream.app.conf.canonical_url).rstrip("/")
    if owner == me:
        return await local()
    if owner is None or request.headers.get(ROUTED_HEADER):
        # Unknown owner, or proxied here by a worker whose assignment was older than ours.
        return _unavailable(view, reason if owner is None else "the assignment is moving")
    try:
        async with stream.app.http_client.get(
            owner + request.raw_path,
            headers={ROUTED_HEADER: "1"},
            timeout=aiohttp.ClientTimeout(total=5),
        ) as answer:
            body = await answer.read()
            return view.bytes(body, content_type=answer.content_type, status=answer.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _unavailable(view, f"{type(exc).__name__}")


def _unavailable(view: View, reason: str) -> Response:
    return _json(
        view,
        {"error": f"the worker owning this key is unavailable: {reason}", "retryAfter": 2},
        status=503,
    )


def register_views(stream: VfStream) -> None:
    app = stream.app

    @app.page(f"/campaigns/{CAMPAIGN}/counts")
    class CampaignCounts(View):
        async def get(self, request: Request, campaignId: str) -> Response:
            async def local() -> Response:
                raw = stream.campaign_counts.get(campaignId.encode())
                if not raw:
                    return _json(self, {"error": f"unknown campaign {shown(campaignId)}"}, 404)
                return _json(self, CampaignTotals.from_bytes(raw).as_public())

            return await _routed(stream, self, request, stream.campaign_counts, campaignId, local)

    @app.page(f"/campaigns/{CAMPAIGN}/progress")
    class CampaignProgress(View):
        async def get(self, request: Request, campaignId: str) -> Response:
            async def local() -> Response:
                raw = stream.campaign_counts.get(campaignId.encode())
                if not raw:
                    return _json(self, {"error": f"unknown campaign {shown(campaignId)}"}, 404)
                totals = CampaignTotals.from_bytes(raw)
                runs = {run: totals.run_applied(run) for run in totals.runs}
                return _json(self, {"campaignId": campaignId, "runs": runs})

            return await _routed(stream, self, request, stream.campaign_counts, campaignId, local)

    @app.page(f"/campaigns/{CAMPAIGN}/reports")
    class CampaignReports(View):
        async def get(self, request: Request, campaignId: str) -> Response:
            async def local() -> Response:
                raw = stream.report_books.get(campaignId.encode())
                if not raw:
                    error = f"no reports for campaign {shown(campaignId)}"
                    return _json(self, {"error": error}, 404)
                return _json(self, ReportBook.from_bytes(raw).model_dump(mode="json"))

            return await _routed(stream, self, request, stream.report_books, campaignId, local)

    @app.page(f"/campaigns/{CAMPAIGN}/counts/windows")
    class CampaignWindows(View):
        async def get(self, request: Request, campaignId: str) -> Response:
            async def local() -> Response:
                try:
                    bounds = parse_window_bounds(
                        request.query.get("since"), request.query.get("until")
                    )
                except ValueError as exc:
                    return _json(self, {"error": str(exc)}, 400)
                if not stream.campaign_counts.get(campaignId.encode()):
                    return _json(self, {"error": f"unknown campaign {shown(campaignId)}"}, 404)
                return _json(self, window_series(stream, campaignId, *bounds))

            return await _routed(stream, self, request, stream.campaign_counts, campaignId, local)

    @app.page(f"/campaigns/{CAMPAIGN}/fans/{FAN}")
    class FanState(View):
        async def get(self, request: Request, campaignId: str, globalUserId: str) -> Response:
            key = fan_key(campaignId, globalUserId)

            async def local() -> Response:
                raw = stream.fan_states.get(key.encode())
                if not raw:
                    error = f"no state for fan {shown(globalUserId)} of {shown(campaignId)}"
                    return _json(self, {"error": error}, 404)
                return _json(self, decode_envelope(raw).state.public_json())

            return await _routed(stream, self, request, stream.fan_states, key, local)

    @app.page("/")
    class Dashboard(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(STATIC_FILES["dashboard.html"], content_type="text/html")

    @app.page("/static/{name}")
    class Static(View):
        async def get(self, request: Request, name: str) -> Response:
            body = STATIC_FILES.get(name)
            if body is None or name.endswith(".html"):
                return _json(self, {"error": "no such file"}, 404)
            return self.bytes(body, content_type=STATIC_TYPES[name.rsplit(".", 1)[-1]])

    app.web.web_app.on_response_prepare.append(_security_headers)
    quiet_malformed_requests()

    campaign_service = CampaignService(stream.settings.campaign_service_url)

    @app.page("/campaigns")
    class CampaignsOfEvent(View):
        async def get(self, request: Request) -> Response:
            event_id = request.query.get("eventId", "").strip()
            if not event_id:
                return _json(self, {"error": "the eventId query parameter is required"}, 400)
            if len(event_id) > MAX_EVENT_ID_CHARS:
                return _json(
                    self, {"error": f"eventId: longer than {MAX_EVENT_ID_CHARS} characters"}, 400
                )
            try:
                body = await campaign_service.campaigns_for_event(event_id)
            except CampaignServiceError as exc:
                answer: dict[str, Any] = {"error": str(exc)}
                if exc.status == 503:
                    answer["retryAfter"] = 5
                return _json(self, answer, exc.status)
            return _json(self, body)

    @app.page(f"/campaigns/{CAMPAIGN}/runs")
    class CampaignRuns(View):
        async def get(self, request: Request, campaignId: str) -> Response:
            async def local() -> Response:
                if not stream.campaign_counts.get(campaignId.encode()):
                    return _json(self, {"error": f"unknown campaign {shown(campaignId)}"}, 404)
                return _json(
                    self, {"campaignId": campaignId, "runs": local_runs(stream, campaignId)}
                )

            return await _routed(stream, self, request, stream.campaign_counts, campaignId, local)

    @app.page("/runs/local")
    class LocalRuns(View):
        async def get(self, request: Request) -> Response:
            campaign = request.query.get("campaign") or None
            return _json(self, {"runs": local_runs(stream, campaign)})

    @app.page("/dashboard/runs")
    class AllRuns(View):
        async def get(self, request: Request) -> Response:
            campaign = request.query.get("campaign") or None
            limit = _bounded_int(request.query.get("limit"), default=100, most=500)
            return _json(self, {"runs": await all_runs(stream, campaign, limit)})

    @app.page("/worker/activity")
    class WorkerActivity(View):
        async def get(self, request: Request) -> Response:
            return _json(self, worker_activity(stream))

    @app.page("/dashboard/workers")
    class AllWorkers(View):
        async def get(self, request: Request) -> Response:
            others = await from_other_workers(stream, "/worker/activity")
            workers = sorted([worker_activity(stream), *others], key=lambda w: w["worker"])
            return _json(self, {"workers": workers})

    dead_letter_cache: TTLCache[tuple[str | None, str | None, int], Any] = TTLCache(
        maxsize=64, ttl=DEAD_LETTER_CACHE_SECONDS
    )

    @app.page("/dashboard/dead-letters")
    class DeadLetters(View):
        async def get(self, request: Request) -> Response:
            campaign = request.query.get("campaign") or None
            kind = request.query.get("kind") or None
            limit = _bounded_int(request.query.get("limit"), default=20, most=200)
            query = (campaign, kind, limit)
            if query not in dead_letter_cache:
                try:
                    dead_letter_cache[query] = await recent_dead_letters(
                        stream.settings, campaign=campaign, kind=kind, limit=limit
                    )
                except Exception as exc:  # the broker away: say so, keep serving
                    return _unavailable(self, type(exc).__name__)
            return _json(self, {"deadLetters": dead_letter_cache[query]})

    @app.page("/campaigns/local")
    class LocalCampaigns(View):
        async def get(self, request: Request) -> Response:
            return _json(self, {"campaigns": local_campaigns(stream)})

    @app.page("/dashboard/campaigns")
    class AllCampaigns(View):
        async def get(self, request: Request) -> Response:
            return _json(self, {"campaigns": await all_campaigns(stream)})

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            body = generate_latest(REGISTRY) + generate_latest(stream.faust_metrics)
            return self.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return _json(self, {"status": "alive"})

    @app.page("/ready")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            ready = bool(app.tables.recovery.completed.is_set()) and not app.rebalancing
            return _json(self, {"ready": ready}, 200 if ready else 503)

    @app.page("/statuses")
    class Statuses(View):
        async def get(self, request: Request) -> Response:
            ledger = stream.ledger
            return _json(
                self,
                {
                    "recordsIn": ledger.records_in,
                    "writeStatuses": dict(ledger.statuses),
                    "staleEvents": ledger.stale_events,
                    "filledRecords": ledger.filled_records,
                    # Holes the stream's fetcher proved empty (markers): no direct read.
                    "knownGaps": ledger.known_gaps,
                },
            )


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
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
        for url in sorted(hosts - {me}):
            try:
                async with session.get(url + path) as resp:
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


def window_series(
    stream: VfStream, campaign_id: str, since: float | None, until: float | None
) -> dict[str, Any]:
    """The windowed deltas of one campaign, oldest first, from the local window store."""
    table = stream.count_windows.table
    size = stream.settings.window_seconds
    windows: list[dict[str, Any]] = []
    for (item_key, (start, end)), value in table.data.items():
        if item_key != campaign_id or value is None:
            continue
        if since is not None and end < since:
            continue
        if until is not None and start > until:
            continue
        body = orjson.loads(value)
        windows.append({"start": start, "end": start + size, **body})
    windows.sort(key=lambda item: item["start"])
    return {"campaignId": campaign_id, "windowSeconds": size, "windows": windows}
