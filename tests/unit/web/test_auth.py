"""Who may ask the HTTP API (vfstream.web.auth): the decision without a server, then the
middleware on a bare aiohttp application."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from vfstream.metrics import HTTP_UNAUTHORIZED
from vfstream.settings import Settings
from vfstream.web.auth import (
    RefusalLog,
    Verdict,
    auth_middleware,
    decide,
    peer_headers,
    presented_token,
    token_matches,
)
from vfstream.web.views import SECURITY_HEADERS

OLD, NEW = "old-Token-1f9a-52c0e1", "new-Token-77c2-a7e3b9"
TOKENS = (OLD, NEW)
ROUTE = "/campaigns/{campaignId}/counts"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_a_bearer_token_is_accepted() -> None:
    assert decide(ROUTE, f"Bearer {OLD}", TOKENS) is Verdict.ALLOWED
    assert decide(ROUTE, f"bearer   {NEW}  ", TOKENS) is Verdict.ALLOWED


def test_basic_takes_any_user_name_and_the_token_as_password() -> None:
    assert decide(ROUTE, basic("operator", OLD), TOKENS) is Verdict.ALLOWED
    assert decide(ROUTE, basic("", NEW), TOKENS) is Verdict.ALLOWED
    # A colon in the password is the password's.
    assert decide(ROUTE, basic("me", "a:b"), ("a:b",)) is Verdict.ALLOWED
    # The token as the user name is not the token as the password.
    assert decide(ROUTE, basic(OLD, "x"), TOKENS) is Verdict.WRONG


def test_a_wrong_token_is_refused() -> None:
    assert decide(ROUTE, "Bearer nope", TOKENS) is Verdict.WRONG
    assert decide(ROUTE, f"Bearer {OLD}x", TOKENS) is Verdict.WRONG
    assert decide(ROUTE, f"Bearer {OLD[:-1]}", TOKENS) is Verdict.WRONG
    assert decide(ROUTE, f"Bearer {OLD.lower()}", TOKENS) is Verdict.WRONG
    assert decide(ROUTE, basic("operator", "nope"), TOKENS) is Verdict.WRONG
    assert decide(ROUTE, basic("operator", ""), TOKENS) is Verdict.WRONG


def test_no_or_a_malformed_header_is_refused() -> None:
    assert decide(ROUTE, None, TOKENS) is Verdict.MISSING
    assert decide(ROUTE, "   ", TOKENS) is Verdict.MISSING
    for header in (
        "Bearer",
        "Bearer ",
        f"Bearer {OLD} {NEW}",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
        f"Token {OLD}",
        OLD,
        f"Digest {OLD}",
    ):
        assert decide(ROUTE, header, TOKENS) is Verdict.MALFORMED, header
        assert not decide(ROUTE, header, TOKENS).passes


def test_two_tokens_at_once_let_a_token_be_rotated() -> None:
    assert decide(ROUTE, f"Bearer {OLD}", TOKENS).passes
    assert decide(ROUTE, f"Bearer {NEW}", TOKENS).passes
    assert decide(ROUTE, f"Bearer {OLD}", (NEW,)) is Verdict.WRONG  # the old one retired
    # Read from the setting the way the worker reads it.
    settings = Settings(web_auth_tokens=f" {OLD} , {NEW},, ")  # type: ignore[arg-type]
    assert settings.web_tokens == TOKENS
    assert decide(ROUTE, basic("x", NEW), settings.web_tokens).passes


def test_every_token_is_compared() -> None:
    """No early exit: a match on the first token compares the rest too."""
    compared: list[str] = []

    class Spy(str):
        def encode(self, *args: Any, **kwargs: Any) -> bytes:
            compared.append(str(self))
            return str.encode(self, *args, **kwargs)

    assert token_matches(OLD, [Spy(OLD), Spy(NEW), Spy("third")])
    assert compared == [OLD, NEW, "third"]


def test_probes_stay_open_and_everything_else_asks() -> None:
    for route in ("/health", "/ready"):
        assert decide(route, None, TOKENS) is Verdict.OPEN
    for route in ("/", "/static/{name}", "/statuses", "/dashboard/workers", ROUTE, None):
        assert decide(route, None, TOKENS) is Verdict.MISSING, route
    # Close spellings are other routes.
    for route in ("/health/", "/healthz", "/ready/x", "/Health"):
        assert decide(route, None, TOKENS) is Verdict.MISSING, route


def test_metrics_are_open_only_when_the_setting_says_so() -> None:
    for route in ("/metrics", "/metrics/faust"):
        assert decide(route, None, TOKENS) is Verdict.MISSING
        assert decide(route, None, TOKENS, metrics_public=True) is Verdict.OPEN
        assert decide(route, f"Bearer {OLD}", TOKENS).passes
    assert decide("/statuses", None, TOKENS, metrics_public=True) is Verdict.MISSING


def test_no_tokens_means_open() -> None:
    for route in ("/", ROUTE, "/metrics", None):
        assert decide(route, None, ()) is Verdict.OPEN
        assert decide(route, "Bearer anything", ()) is Verdict.OPEN
    assert Settings(web_auth_tokens=None).web_tokens == ()
    assert Settings(web_auth_tokens=" , ").web_tokens == ()  # type: ignore[arg-type]


def test_the_credential_read_from_a_header() -> None:
    assert presented_token(f"Bearer {OLD}") == (Verdict.WRONG, OLD)
    assert presented_token(basic("u", NEW)) == (Verdict.WRONG, NEW)
    assert presented_token(None) == (Verdict.MISSING, None)


def test_a_worker_asks_its_peers_with_its_first_token() -> None:
    settings = Settings(web_auth_tokens=f"{NEW},{OLD}")  # type: ignore[arg-type]
    assert peer_headers(settings) == {"Authorization": f"Bearer {NEW}"}
    assert peer_headers(Settings(web_auth_tokens=None)) == {}


def test_refusals_are_logged_once_per_client_and_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    refusals = RefusalLog(period=60, clients=2, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="vfstream.web.auth")
    written = [refusals.refused("10.0.0.1", Verdict.WRONG, "GET", "/x") for _ in range(50)]
    assert written == [True] + [False] * 49
    assert refusals.refused("10.0.0.2", Verdict.MISSING, "GET", "/y")
    # Past the clients it remembers, one line a period speaks for all the others.
    assert refusals.refused("10.0.0.3", Verdict.MISSING, "GET", "/z")
    assert not refusals.refused("10.0.0.4", Verdict.MISSING, "GET", "/z")
    assert len(caplog.records) == 3
    now[0] += 61
    assert refusals.refused("10.0.0.1", Verdict.WRONG, "GET", "/x\n\x1b[31mforged")
    last = caplog.records[-1].getMessage()
    assert "49 more refused" in last and "\n" not in last and "\x1b" not in last
    assert "10.0.0.3" not in caplog.text


async def answer(request: web.Request) -> web.Response:
    return web.json_response({"route": request.path})


async def serve(metrics_public: bool = False) -> TestClient[Any, Any]:
    app = web.Application(middlewares=[auth_middleware(TOKENS, metrics_public=metrics_public)])
    for path in ("/", "/health", "/ready", "/metrics", "/metrics/faust", "/campaigns/{c}/x"):
        app.router.add_get(path, answer)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_the_middleware_refuses_with_a_challenge_and_never_echoes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="vfstream.web.auth")
    before = HTTP_UNAUTHORIZED.labels("wrong")._value.get()
    client = await serve()
    try:
        resp = await client.get("/campaigns/c1/x", headers={"Authorization": "Bearer leaked-guess"})
        body = await resp.text()
        assert resp.status == 401
        assert resp.headers.getall("WWW-Authenticate") == [
            'Basic realm="vfstream", charset="UTF-8"',
            'Bearer realm="vfstream"',
        ]
        assert resp.content_type == "application/json" and "token" in body
        for name, value in SECURITY_HEADERS.items():
            assert resp.headers[name] == value
        assert "leaked-guess" not in body and "leaked-guess" not in str(resp.headers)
        assert "leaked-guess" not in caplog.text and "refused an HTTP request" in caplog.text
        assert HTTP_UNAUTHORIZED.labels("wrong")._value.get() == before + 1

        assert (await client.get("/", headers={"Authorization": f"Bearer {NEW}"})).status == 200
        assert (await client.get("/", headers={"Authorization": basic("op", OLD)})).status == 200
        assert (await client.get("/")).status == 401
        assert (await client.get("/nowhere")).status == 401  # no route: asks too
        authorized = {"Authorization": f"Bearer {OLD}"}
        assert (await client.get("/nowhere", headers=authorized)).status == 404
        assert (await client.get("/health")).status == 200
        assert (await client.get("/ready")).status == 200
        assert (await client.get("/metrics")).status == 401
        assert (await client.get("/metrics/faust")).status == 401
    finally:
        await client.close()


async def test_the_middleware_serves_metrics_openly_when_asked() -> None:
    client = await serve(metrics_public=True)
    try:
        assert (await client.get("/metrics")).status == 200
        assert (await client.get("/metrics/faust")).status == 200
        assert (await client.get("/")).status == 401
    finally:
        await client.close()
