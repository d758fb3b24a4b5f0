"""The Slack webhook client: its retry loop on a fake clock, and the client against a small
local aiohttp server playing Slack (a slow one too)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from tests.support.services import Answer, ScriptedService, scripted_service
from vfstream.dev.stack import free_port
from vfstream.metrics import SINK_FAILURES, SINK_RETRIES
from vfstream.retry import Backoff
from vfstream.sinks.clients.slack import Attempt, SlackNotifier, deliver, retry_after_seconds

HOOK = "/services/T000/B000/very-secret-token"


@pytest.fixture
async def slack() -> AsyncIterator[ScriptedService]:
    async with scripted_service() as service:
        service.fallback = Answer(200, "ok")
        yield service


def notifier(service: ScriptedService, give_up: float = 20.0, timeout: float = 2) -> SlackNotifier:
    return SlackNotifier(
        SecretStr(service.url + HOOK),
        request_timeout_seconds=timeout,
        give_up_seconds=give_up,
        backoff=Backoff(first=0.01, cap=0.05),
    )


def failures() -> float:
    return SINK_FAILURES.labels("slack")._value.get()


def retries() -> float:
    return SINK_RETRIES.labels("slack")._value.get()


class FakeClock:
    """Time that passes only when an attempt or a sleep says so."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ScriptedAttempts:
    """Each attempt takes the next outcome; ``None`` is no answer (the whole bound passes)."""

    def __init__(self, clock: FakeClock, outcomes: list[Attempt | None]) -> None:
        self.clock = clock
        self.outcomes = outcomes
        self.bounds: list[float] = []
        self.started: list[float] = []

    async def __call__(self, bound: float) -> Attempt:
        self.bounds.append(bound)
        self.started.append(self.clock.now)
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if outcome is None:
            self.clock.now += bound
            return Attempt(error=f"no answer within {bound:g}s", transient=True)
        self.clock.now += 0.05
        return outcome


OK = Attempt(delivered=True, status=200)


async def run(attempts: ScriptedAttempts, timeout: float, give_up: float) -> object:
    return await deliver(
        attempts,
        request_timeout_seconds=timeout,
        give_up_seconds=give_up,
        backoff=Backoff(first=0.5, cap=15.0),
        clock=attempts.clock,
        sleep=attempts.clock.sleep,
    )


async def test_timeouts_are_retried_each_bounded_by_the_request_timeout() -> None:
    clock = FakeClock()
    attempts = ScriptedAttempts(clock, [None, None, None, OK])
    before = retries()
    result = await run(attempts, timeout=10, give_up=300)
    assert result.delivered and result.attempts == 4  # type: ignore[attr-defined]
    assert attempts.bounds == [10, 10, 10, 10]
    assert len(clock.sleeps) == 3 and all(0 <= s <= 15 for s in clock.sleeps)
    assert retries() == before + 3


async def test_given_up_only_once_the_give_up_time_has_passed_since_the_first_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    attempts = ScriptedAttempts(clock, [None])
    before = failures()
    with caplog.at_level(logging.INFO, logger="vfstream.sinks.clients.slack"):
        result = await run(attempts, timeout=10, give_up=60)
    assert not result.delivered  # type: ignore[attr-defined]
    first = attempts.started[0]
    # Every attempt had at least a tenth of the request timeout and none lasted past the
    # give-up time; it was given up when less than that tenth was left.
    assert all(1 <= bound <= 10 for bound in attempts.bounds)
    assert all(
        start + bound <= first + 60 + 1e-9
        for start, bound in zip(attempts.started, attempts.bounds, strict=True)
    )
    assert first + 59 < clock.now <= first + 60
    took = clock.now - first
    assert result.attempts == len(attempts.bounds) >= 5  # type: ignore[attr-defined]
    assert failures() == before + 1
    line = [r.getMessage() for r in caplog.records if "given up" in r.getMessage()]
    assert line == [
        f"Slack report given up: no success in {len(attempts.bounds)} attempts over {took:.1f}s; "
        f"last error: no answer within {attempts.bounds[-1]:g}s"
    ]


async def test_retry_after_is_waited_but_never_past_the_give_up_time() -> None:
    clock = FakeClock()
    limited = Attempt(status=429, error="HTTP 429", transient=True, retry_after=30)
    attempts = ScriptedAttempts(clock, [limited, limited, OK])
    result = await run(attempts, timeout=10, give_up=300)
    assert result.delivered and clock.sleeps == [30, 30]  # type: ignore[attr-defined]

    clock = FakeClock()
    attempts = ScriptedAttempts(clock, [Attempt(status=429, transient=True, retry_after=500)])
    result = await run(attempts, timeout=10, give_up=100)
    assert not result.delivered and len(attempts.bounds) == 1  # type: ignore[attr-defined]
    assert clock.sleeps == [pytest.approx(100 - 0.05)]


async def test_a_final_answer_ends_the_loop_at_once() -> None:
    clock = FakeClock()
    attempts = ScriptedAttempts(clock, [None, Attempt(status=404, error="HTTP 404"), OK])
    result = await run(attempts, timeout=10, give_up=300)
    assert not result.delivered and result.status == 404  # type: ignore[attr-defined]
    assert len(attempts.bounds) == 2 and result.error == "HTTP 404"  # type: ignore[attr-defined]


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
    assert not result.delivered and result.error == "HTTP 500"
    # Given up when less than a tenth of the shorter of the two bounds was left.
    assert 1.35 <= time.monotonic() - started < 10 and result.seconds >= 1.35
    assert slack.hits(HOOK) == result.attempts > 2
    assert failures() == before + 1


async def test_a_slack_that_does_not_answer_for_a_while_gets_the_report_once_it_does(
    slack: ScriptedService, caplog: pytest.LogCaptureFixture
) -> None:
    slack.hang = lambda path, body: slack.unanswered(HOOK) < 2
    with caplog.at_level(logging.INFO, logger="vfstream.sinks.clients.slack"):
        result = await notifier(slack, timeout=0.3).post("late but there")
    assert result.delivered and result.attempts == 3
    assert slack.unanswered(HOOK) == 2 and slack.bodies(HOOK, succeeded=True) == [
        {"text": "late but there"}
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert (
        "Slack did not take the report (no answer within 0.3s); retrying until 20.0s"
        in (messages[0])
    )
    assert re.fullmatch(
        r"Slack took the report on attempt 3, [\d.]+s after the first", messages[-1]
    )
    assert not [m for m in messages if "given up" in m or "not delivered" in m]


async def test_a_slack_that_never_answers_is_given_up_after_the_give_up_time(
    slack: ScriptedService, caplog: pytest.LogCaptureFixture
) -> None:
    slack.hang = lambda path, body: True
    before = failures()
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="vfstream.sinks.clients.slack"):
        result = await notifier(slack, give_up=1.2, timeout=0.3).post("r")
    took = time.monotonic() - started
    assert not result.delivered and 1.2 - 0.03 <= took < 3
    assert (
        result.attempts == slack.unanswered(HOOK) >= 3 and slack.bodies(HOOK, succeeded=True) == []
    )
    assert failures() == before + 1
    [line] = [r.getMessage() for r in caplog.records]
    assert re.fullmatch(
        rf"Slack report given up: no success in {result.attempts} attempts over 1\.[1-9]s; "
        r"last error: no answer within 0?\.\d+s",
        line,
    ), line


async def test_a_client_error_is_not_retried(slack: ScriptedService) -> None:
    slack.script[HOOK] = [Answer(404, "no_service")]
    result = await notifier(slack).post("r")
    assert not result.delivered and result.status == 404 and slack.hits(HOOK) == 1


async def test_an_unreachable_webhook_is_retried_then_given_up() -> None:
    url = SecretStr(f"http://127.0.0.1:{free_port()}{HOOK}")
    result = await SlackNotifier(
        url, give_up_seconds=1.0, backoff=Backoff(first=0.05, cap=0.1)
    ).post("r")
    assert not result.delivered and result.attempts > 2
    assert result.error == "ClientConnectorError"


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
