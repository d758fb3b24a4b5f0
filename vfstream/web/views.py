"""Read-only HTTP views on every worker; a key owned by another worker is proxied to it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import aiohttp
import orjson
from aiohttp.http_exceptions import HttpProcessingError
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from vfstream.domain.fans import decode_envelope
from vfstream.domain.keys import fan_key
from vfstream.domain.ledger import CampaignTotals
from vfstream.domain.reports import ReportBook
from vfstream.domain.windows import parse_window_bounds, shown
from vfstream.services.campaigns import CampaignService, CampaignServiceError
from vfstream.sinks.relays.base import relay_statuses
from vfstream.stream import layout
from vfstream.stream.tables import campaign_windows
from vfstream.web.ports import Worker
from vfstream.web.shared import SharedAnswers, UnchangedAnswers

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


async def add_security_headers(request: Any, response: Any) -> None:
    """Every response, errors and proxied answers included, carries the security headers."""
    response.headers.update(SECURITY_HEADERS)


# The windowed changes of a campaign, shared by every console asking within this long.
WINDOWS_SECONDS = 1.0


def bounded_int(text: str | None, *, default: int, most: int) -> int:
    """A positive count from a query parameter, at most ``most``; ``default`` if unreadable."""
    try:
        value = int(text) if text else default
    except ValueError:
        return default
    return max(1, min(value, most))


def json_response(view: View, body: Any, status: int = 200) -> Response:
    return view.bytes(orjson.dumps(body), content_type="application/json", status=status)


ROUTED_HEADER = "X-Vfstream-Routed"


def owner_url(stream: Worker, table: Any, key: str) -> str | None:
    """The web URL of the worker owning ``key`` in ``table``: the one the assignment gave the
    partition the one hash picks (``domain.keys.partition_for``), as every producer does."""
    return layout.owner_url(stream.app, table, stream.partition_of(key.encode()))


async def routed(
    stream: Worker,
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
    me = layout.own_url(stream.app)
    if owner == me:
        return await local()
    if owner is None or request.headers.get(ROUTED_HEADER):
        # Unknown owner, or proxied here by a worker whose assignment was older than ours.
        return unavailable(view, reason if owner is None else "the assignment is moving")
    headers = {ROUTED_HEADER: "1"}
    # The owner asks for a token as this worker did: the caller's credential goes along.
    if (authorization := request.headers.get("Authorization")) is not None:
        headers["Authorization"] = authorization
    try:
        async with stream.app.http_client.get(
            owner + request.raw_path,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=5),
        ) as answer:
            body = await answer.read()
            return view.bytes(body, content_type=answer.content_type, status=answer.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return unavailable(view, f"{type(exc).__name__}")


async def campaign_view(
    stream: Worker,
    view: View,
    request: Request,
    campaign_id: str,
    answer: Callable[[CampaignTotals], Any],
    memo: UnchangedAnswers | None = None,
) -> Response:
    """One campaign's totals as ``answer`` shows them, from the worker that owns them;
    404 for a campaign no worker has counts of. With ``memo`` the answer is decoded again
    only when the stored value changed (polled routes: exact, and cheap)."""

    async def local() -> Response:
        key = campaign_id.encode()
        raw = stream.campaign_counts.get(key)
        if not raw:
            return json_response(view, {"error": f"unknown campaign {shown(campaign_id)}"}, 404)
        if memo is None:
            return json_response(view, answer(CampaignTotals.from_bytes(raw)))
        body = memo.get(key, raw, lambda: orjson.dumps(answer(CampaignTotals.from_bytes(raw))))
        return view.bytes(body, content_type="application/json")

    return await routed(stream, view, request, stream.campaign_counts, campaign_id, local)


def unavailable(view: View, reason: str) -> Response:
    return json_response(
        view,
        {"error": f"the worker owning this key is unavailable: {reason}", "retryAfter": 2},
        status=503,
    )


def register_table_views(stream: Worker) -> None:
    """A campaign's counts, progress, reports and windows, a fan's state, and the campaign
    service's answer; a key another worker owns is proxied there."""
    app = stream.app
    counts_memo = UnchangedAnswers()
    windows: SharedAnswers[bytes] = SharedAnswers(ttl=WINDOWS_SECONDS, maxsize=256)

    @app.page(f"/campaigns/{CAMPAIGN}/counts")
    class CampaignCounts(View):
        async def get(self, request: Request, campaignId: str) -> Response:
            return await campaign_view(
                stream, self, request, campaignId, lambda totals: totals.as_public(), counts_memo
            )

    @app.page(f"/campaigns/{CAMPAIGN}/progress")
    class CampaignProgress(View):
        async def get(self, request: Request, campaignId: str) -> Response:
            def progress(totals: CampaignTotals) -> dict[str, Any]:
                runs = {run: totals.run_applied(run) for run in totals.runs}
                return {"campaignId": campaignId, "runs": runs}

            return await campaign_view(stream, self, request, campaignId, progress)

    @app.page(f"/campaigns/{CAMPAIGN}/reports")
    class CampaignReports(View):
        async def get(self, request: Request, campaignId: str) -> Response:
            async def local() -> Response:
                raw = stream.report_books.get(campaignId.encode())
                if not raw:
                    error = f"no reports for campaign {shown(campaignId)}"
                    return json_response(self, {"error": error}, 404)
                return json_response(self, ReportBook.from_bytes(raw).model_dump(mode="json"))

            return await routed(stream, self, request, stream.report_books, campaignId, local)

    @app.page(f"/campaigns/{CAMPAIGN}/counts/windows")
    class CampaignWindows(View):
        async def get(self, request: Request, campaignId: str) -> Response:
            async def local() -> Response:
                try:
                    bounds = parse_window_bounds(
                        request.query.get("since"), request.query.get("until")
                    )
                except ValueError as exc:
                    return json_response(self, {"error": str(exc)}, 400)
                if not stream.campaign_counts.get(campaignId.encode()):
                    return json_response(
                        self, {"error": f"unknown campaign {shown(campaignId)}"}, 404
                    )

                async def series() -> bytes:
                    return orjson.dumps(window_series(stream, campaignId, *bounds))

                body = await windows.get((campaignId, *bounds), series)
                return self.bytes(body, content_type="application/json")

            return await routed(stream, self, request, stream.campaign_counts, campaignId, local)

    @app.page(f"/campaigns/{CAMPAIGN}/fans/{FAN}")
    class FanState(View):
        async def get(self, request: Request, campaignId: str, globalUserId: str) -> Response:
            key = fan_key(campaignId, globalUserId)

            async def local() -> Response:
                raw = stream.fan_states.get(key.encode())
                if not raw:
                    error = f"no state for fan {shown(globalUserId)} of {shown(campaignId)}"
                    return json_response(self, {"error": error}, 404)
                return json_response(self, decode_envelope(raw).state.public_json())

            return await routed(stream, self, request, stream.fan_states, key, local)

    campaign_service = CampaignService(stream.settings.campaign_service_url)

    @app.page("/campaigns")
    class CampaignsOfEvent(View):
        async def get(self, request: Request) -> Response:
            event_id = request.query.get("eventId", "").strip()
            if not event_id:
                return json_response(
                    self, {"error": "the eventId query parameter is required"}, 400
                )
            if len(event_id) > MAX_EVENT_ID_CHARS:
                return json_response(
                    self, {"error": f"eventId: longer than {MAX_EVENT_ID_CHARS} characters"}, 400
                )
            try:
                body = await campaign_service.campaigns_for_event(event_id)
            except CampaignServiceError as exc:
                answer: dict[str, Any] = {"error": str(exc)}
                if exc.status == 503:
                    answer["retryAfter"] = 5
                return json_response(self, answer, exc.status)
            return json_response(self, body)


def register_service_views(stream: Worker) -> None:
    """Metrics, liveness, readiness and the worker's own statuses."""
    app = stream.app

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            body = generate_latest(REGISTRY) + generate_latest(stream.faust_metrics)
            return self.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return json_response(self, {"status": "alive"})

    @app.page("/ready")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            ready = bool(app.tables.recovery.completed.is_set()) and not app.rebalancing
            return json_response(self, {"ready": ready}, 200 if ready else 503)

    @app.page("/statuses")
    class Statuses(View):
        async def get(self, request: Request) -> Response:
            ledger = stream.ledger
            return json_response(
                self,
                {
                    "recordsIn": ledger.records_in,
                    "writeStatuses": dict(ledger.statuses),
                    "staleEvents": ledger.stale_events,
                    "filledRecords": ledger.filled_records,
                    # Holes the stream's fetcher proved empty (markers): no direct read.
                    "knownGaps": ledger.known_gaps,
                    # Each relay this worker runs: delivering, or waiting for what since when.
                    "relays": relay_statuses(stream.settings.app_id),
                },
            )


def window_series(
    stream: Worker, campaign_id: str, since: float | None, until: float | None
) -> dict[str, Any]:
    """The windowed deltas of one campaign, oldest first, from the local window store."""
    table = stream.count_windows.table
    size = stream.settings.window_seconds
    windows: list[dict[str, Any]] = []
    for (item_key, (start, end)), value in campaign_windows(table, campaign_id):
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
