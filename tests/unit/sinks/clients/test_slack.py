"""The Slack webhook client against a small local aiohttp server playing Slack."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from tests.support.services import Answer, ScriptedService, scripted_service
from vfstream.dev.stack import free_port
from vfstream.metrics import SINK_FAILURES
from vfstream.sinks.clients.slack import CappedBackoff, SlackNotifier, retry_after_seconds

HOOK = "/services/T000/B000/very-secret-token"


@pytest.fixture
async def slack() -> AsyncIterator[ScriptedService]:
    async with scripted_service() as service:
        service.fallback = Answer(200, "ok")
        yield service


def notifier(service: ScriptedService, give_up: float = 20.0) -> SlackNotifier:
    return SlackNotifier(
        SecretStr(service.url + HOOK),
        request_timeout_seconds=2,
        give_up_seconds=give_up,
        backoff=CappedBackoff(first=0.01, cap=0.05),
    )


def failures() -> float:
    return SINK_FAILURES.labels("slack")._value.get()


async def test_a_report_is_posted_as_the_webhook_text(slack: ScriptedService) -> None:
    result = await notifier(slack).post("hello *world*")
    assert result.delivered and result.destination == "slack" and result.status == 200
    assert slack.bodies(HOOK) == [{"text": "hello *world*"}]


async def test_429_waits_what_retry_after_says_then_posts_once(slack: ScriptedService) -> None:
    slack.script[HOOK] = [Answer(429, "rate_limited", {"Retry-After": "2"}), Answer(200, "ok")]
    started = time.monotonic()
    result = await notifier(slack).post("r")
    assert result.delivered
    assert time.monotonic() - started >= 2.0
    assert slack.hits(HOOK) == 2


async def test_server_errors_are_retried_until_success(slack: ScriptedService) -> None:
    slack.script[HOOK] = [Answer(500, "x"), Answer(502, "x"), Answer(503, "x"), Answer(200, "ok")]
    result = await notifier(slack).post("r")
    assert result.delivered and slack.hits(HOOK) == 4


async def test_a_permanently_failing_webhook_gives_up_in_bounded_time(
    slack: ScriptedService,
) -> None:
    slack.script[HOOK] = [Answer(500, "down")]
    before = failures()
    started = time.monotonic()
    result = await notifier(slack, give_up=1.5).post("r")
    assert not result.delivered and "no success within" in (result.error or "")
    assert 1.4 <= time.monotonic() - started < 10
    assert slack.hits(HOOK) > 2
    assert failures() == before + 1


async def test_a_client_error_is_not_retried(slack: ScriptedService) -> None:
    slack.script[HOOK] = [Answer(404, "no_service")]
    result = await notifier(slack).post("r")
    assert not result.delivered and result.status == 404 and slack.hits(HOOK) == 1


async def test_an_unreachable_webhook_is_retried_then_given_up() -> None:
    url = SecretStr(f"http://127.0.0.1:{free_port()}{HOOK}")
    result = await SlackNotifier(
        url, give_up_seconds=1.0, backoff=CappedBackoff(first=0.05, cap=0.1)
    ).post("r")
    assert not result.delivered


async def test_without_a_webhook_the_report_goes_to_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="vfstream.sinks.clients.slack"):
        result = await SlackNotifier(None).post("42 verified (+42)")
    assert result.delivered and result.destination == "log"
    assert "42 verified (+42)" in caplog.text


async def test_the_webhook_url_is_never_logged(
    slack: ScriptedService, caplog: pytest.LogCaptureFixture
) -> None:
    slack.script[HOOK] = [Answer(429, "x", {"Retry-After": "0"}), Answer(500, "x"), Answer(200, "")]
    with caplog.at_level(logging.DEBUG):
        assert (await notifier(slack).post("r")).delivered
        slack.script[HOOK] = [Answer(403, "invalid_token")]
        assert not (await notifier(slack).post("r")).delivered
    ours = [r.getMessage() for r in caplog.records if r.name != "aiohttp.access"]  # Slack's side
    assert any("HTTP 403" in message for message in ours), "the failure must be logged"
    assert not [message for message in ours if "very-secret-token" in message]
    assert "very-secret-token" not in repr(notifier(slack).__dict__)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "30"}, 30.0),
        ({"retry-after": ["7"]}, 7.0),
        ({"Retry-After": "soon"}, 1.0),
        ({}, 1.0),
    ],
)
def test_retry_after_is_read_whole(headers: dict[str, object], seconds: float) -> None:
    assert retry_after_seconds(headers) == seconds
