"""Who may ask the worker's HTTP API: one of the configured tokens (VFSTREAM_WEB_AUTH_TOKENS),
as ``Authorization: Bearer <token>`` or as the password of HTTP Basic (a browser prompts).

The decision is ``decide`` (pure, testable without a server); ``install_auth`` puts it in
front of every route of the worker's aiohttp application, Faust's own included, as one
middleware. ``/health`` and ``/ready`` stay open (probes), and ``/metrics`` too when
VFSTREAM_WEB_METRICS_PUBLIC says so. Without tokens the API is open, as before, and the
worker says so once at start.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from vfstream.metrics import HTTP_UNAUTHORIZED
from vfstream.web.views import SECURITY_HEADERS

if TYPE_CHECKING:
    from vfstream.settings import Settings
    from vfstream.web.ports import Worker

log = logging.getLogger(__name__)

# Routes answered without a token: the orchestrator's probes carry none.
OPEN_ROUTES = frozenset({"/health", "/ready"})
# vfstream's metrics and Faust's (setup_prometheus_sensors): open only when the setting says.
METRICS_ROUTES = frozenset({"/metrics", "/metrics/faust"})

REALM = "vfstream"
CHALLENGES = (f'Basic realm="{REALM}", charset="UTF-8"', f'Bearer realm="{REALM}"')
REFUSAL_BODY = orjson.dumps(
    {
        "error": "a token is required: send 'Authorization: Bearer <token>', "
        "or HTTP Basic with any user name and the token as the password"
    }
)


class Verdict(Enum):
    OPEN = "open"  # no tokens configured, or a route that needs none
    ALLOWED = "allowed"  # one of the tokens
    MISSING = "missing"  # no Authorization header
    WRONG = "wrong"  # a readable credential that is none of the tokens
    MALFORMED = "malformed"  # an Authorization header that cannot be read

    @property
    def passes(self) -> bool:
        return self in (Verdict.OPEN, Verdict.ALLOWED)


def needs_token(route: str | None, *, metrics_public: bool) -> bool:
    """Whether the route (its pattern; None for a path no route matches) asks for a token."""
    if route in OPEN_ROUTES:
        return False
    return not (metrics_public and route in METRICS_ROUTES)


def presented_token(authorization: str | None) -> tuple[Verdict, str | None]:
    """The credential in an Authorization header: the Bearer token, or Basic's password
    (the user name is not looked at), with WRONG until ``decide`` finds it among the tokens;
    MISSING or MALFORMED, and None, when there is none to read."""
    if authorization is None or not authorization.strip():
        return Verdict.MISSING, None
    scheme, _, rest = authorization.strip().partition(" ")
    rest = rest.strip()
    if not rest:
        return Verdict.MALFORMED, None
    if scheme.lower() == "bearer":
        return (Verdict.MALFORMED, None) if " " in rest else (Verdict.WRONG, rest)
    if scheme.lower() == "basic":
        try:
            pair = base64.b64decode(rest, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return Verdict.MALFORMED, None
        _, colon, password = pair.partition(":")
        return (Verdict.WRONG, password) if colon else (Verdict.MALFORMED, None)
    return Verdict.MALFORMED, None


def _digest(text: str) -> bytes:
    # Equal-length digests: compare_digest then takes the same time whatever the lengths.
    return hashlib.sha256(text.encode("utf-8")).digest()


def token_matches(presented: str, tokens: Sequence[str]) -> bool:
    """Whether ``presented`` is one of ``tokens``, compared in constant time against every
    one of them (no early exit that would tell which token, or how many, came first)."""
    digest = _digest(presented)
    found = False
    for token in tokens:
        found |= hmac.compare_digest(digest, _digest(token))
    return found


def decide(
    route: str | None,
    authorization: str | None,
    tokens: Sequence[str],
    *,
    metrics_public: bool = False,
) -> Verdict:
    """Whether a request for ``route`` carrying ``authorization`` is served."""
    if not tokens or not needs_token(route, metrics_public=metrics_public):
        return Verdict.OPEN
    verdict, presented = presented_token(authorization)
    if presented is None:
        return verdict
    return Verdict.ALLOWED if token_matches(presented, tokens) else Verdict.WRONG


def peer_headers(settings: Settings) -> dict[str, str]:
    """Headers a worker sends another worker's API: its own first token as a Bearer token."""
    tokens = settings.web_tokens
    return {"Authorization": f"Bearer {tokens[0]}"} if tokens else {}


class RefusalLog:
    """At most one WARNING line per client per ``period`` for refused requests, the next
    one saying how many were refused in between; it remembers at most ``clients`` clients,
    and past them one line a period speaks for all the others. Never the credential."""

    OTHERS = "other clients"

    def __init__(
        self,
        period: float = 60.0,
        clients: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.period = period
        self.clients = clients
        self.clock = clock
        # client -> (when its last line was written, refusals not written since)
        self._seen: dict[str, tuple[float, int]] = {}

    def refused(self, client: str, verdict: Verdict, method: str, path: str) -> bool:
        """Count one refusal; True when it was written to the log."""
        now = self.clock()
        if client not in self._seen and len(self._seen) >= self.clients:
            self._seen = {c: e for c, e in self._seen.items() if now - e[0] < self.period}
            if len(self._seen) >= self.clients:
                client = self.OTHERS
        last = self._seen.get(client)
        if last is not None and now - last[0] < self.period:
            self._seen[client] = (last[0], last[1] + 1)
            return False
        self._seen[client] = (now, 0)
        unwritten = last[1] if last is not None else 0
        log.warning(
            "refused an HTTP request from %s: %s %s (%s credentials)%s",
            client,
            method,
            path[:80].encode("unicode_escape").decode("ascii"),
            verdict.value,
            f"; {unwritten} more refused since the last line" if unwritten else "",
        )
        return True


def refusal(verdict: Verdict) -> web.Response:
    """401 with both challenges, a small JSON body and the security headers."""
    headers: CIMultiDict[str] = CIMultiDict(SECURITY_HEADERS)
    for challenge in CHALLENGES:
        headers.add("WWW-Authenticate", challenge)
    headers["Cache-Control"] = "no-store"
    return web.Response(
        body=REFUSAL_BODY, status=401, content_type="application/json", headers=headers
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def auth_middleware(
    tokens: Sequence[str], *, metrics_public: bool, refusals: RefusalLog | None = None
) -> Any:
    """The aiohttp middleware that asks ``decide`` about every request."""
    refusals = refusals or RefusalLog()
    tokens = tuple(tokens)

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        # The route's pattern, not the path: no spelling of a path reaches a protected
        # view as if it were /health; a path no route matches (404) needs a token too.
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else None
        verdict = decide(
            route, request.headers.get("Authorization"), tokens, metrics_public=metrics_public
        )
        if verdict.passes:
            return await handler(request)
        HTTP_UNAUTHORIZED.labels(verdict.value).inc()
        refusals.refused(request.remote or "unknown", verdict, request.method, request.path)
        return refusal(verdict)

    return require_token


def install_auth(stream: Worker) -> None:
    """Put the token check in front of every route of the worker's web server; without
    tokens, leave it open and say so once when the server starts."""
    settings = stream.settings
    web_app = stream.app.web.web_app
    tokens = settings.web_tokens
    if tokens:
        web_app.middlewares.append(
            auth_middleware(tokens, metrics_public=settings.web_metrics_public)
        )
        return

    async def warn_open(_: web.Application) -> None:
        log.warning(
            "the HTTP API on port %s is open to anyone who reaches the port (fan data "
            "included): set VFSTREAM_WEB_AUTH_TOKENS to require a token",
            settings.web_port,
        )

    web_app.on_startup.append(warn_open)
