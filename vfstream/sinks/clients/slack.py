"""Posting verdict reports to a Slack incoming webhook, or to the log when none is configured.

One loop, here, retries a report until it is delivered or ``give_up_seconds`` have passed
since its first attempt (``deliver``). Each attempt is one request through ``slack_sdk``'s
async webhook client, without its retry handlers, bounded by ``request_timeout_seconds``
(and by the time left). What is retried: no answer in time (a timeout is transient, like a
5xx or a connection error), 5xx, connection errors, and 429 after what ``Retry-After``
says; other 4xx answers are final. Between attempts the wait is vfstream's backoff
(``vfstream.retry.Backoff``: exponential with full jitter, capped so a recovered Slack is
noticed soon), never past the give-up time. Giving up is counted and logged with what is
true: the attempts, the time they took, the last error.

The webhook URL is a secret: it is never logged, not even by ``slack_sdk``'s debug output,
and errors are described by their type, as an exception's text may carry the URL.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from pydantic import SecretStr
from slack_sdk.webhook.async_client import AsyncWebhookClient

from vfstream.metrics import SINK_FAILURES, SINK_RETRIES
from vfstream.retry import Backoff

log = logging.getLogger(__name__)

# slack_sdk logs the URL at debug level whenever its logger's own level is unset; a
# dedicated logger pinned above DEBUG keeps the secret out of any worker's log.
_client_log = logging.getLogger("vfstream.sinks.clients.slack.client")
_client_log.setLevel(logging.WARNING)

# Waits between attempts: up to 0.5 s doubling, never more than 15 s.
SLACK_BACKOFF = Backoff(first=0.5, cap=15.0)


def retry_after_seconds(headers: Any, default: float = 1.0) -> float:
    """Seconds a 429 asks us to wait; header values may be strings or lists of strings."""
    for name in headers:
        if name.lower() == "retry-after":
            value = headers.get(name)
            if isinstance(value, list | tuple):
                value = value[0] if value else None
            try:
                return max(0.0, float(str(value).strip()))
            except ValueError:
                return default
    return default


@dataclass(frozen=True)
class Attempt:
    """What one request came to."""

    delivered: bool = False
    status: int | None = None
    error: str | None = None  # what went wrong, never with the URL
    transient: bool = False  # worth another attempt
    retry_after: float | None = None  # a 429's wait; None: the backoff's


@dataclass(frozen=True)
class PostResult:
    delivered: bool
    destination: str  # "slack" or "log"
    status: int | None = None
    error: str | None = None  # the last error when not delivered
    attempts: int = 0
    seconds: float = 0.0  # from the first attempt to the outcome


def _seconds(value: float) -> str:
    return f"{value:.1f}s"


async def deliver(
    attempt: Callable[[float], Awaitable[Attempt]],
    *,
    request_timeout_seconds: float,
    give_up_seconds: float,
    backoff: Backoff = SLACK_BACKOFF,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> PostResult:
    """``attempt(bound)`` (one request, answering within ``bound`` seconds) again until it
    delivers, fails for good, or ``give_up_seconds`` have passed since the first one (less
    than a tenth of the shorter bound left counts as passed)."""
    started = clock()
    deadline = started + give_up_seconds
    # Less time than this left is not worth an attempt: giving up then is as good as at the
    # give-up time, and "no answer within 0.0004s" helps nobody.
    least = min(request_timeout_seconds, give_up_seconds) / 10
    tries = 0
    last = Attempt(error="not attempted")
    while True:
        left = deadline - clock()
        if tries and left < least:
            break
        tries += 1
        last = await attempt(min(request_timeout_seconds, left))
        if last.delivered:
            if tries > 1:
                log.info(
                    "Slack took the report on attempt %d, %s after the first",
                    tries,
                    _seconds(clock() - started),
                )
            return PostResult(True, "slack", last.status, None, tries, clock() - started)
        if not last.transient:
            return _failed(last, tries, clock() - started, final=True)
        left = deadline - clock()
        if left < least:
            break
        if tries == 1:
            log.warning(
                "Slack did not take the report (%s); retrying until %s after the first attempt",
                last.error,
                _seconds(give_up_seconds),
            )
        else:
            log.debug("Slack attempt %d failed (%s)", tries, last.error)
        wait = last.retry_after if last.retry_after is not None else backoff.seconds(tries)
        SINK_RETRIES.labels("slack").inc()
        await sleep(min(max(wait, 0.0), left))
    return _failed(last, tries, clock() - started, final=False)


def _failed(last: Attempt, tries: int, seconds: float, *, final: bool) -> PostResult:
    SINK_FAILURES.labels("slack").inc()
    if final:
        log.error(
            "Slack report not delivered: %s is final (after %d attempt%s in %s)",
            last.error,
            tries,
            "" if tries == 1 else "s",
            _seconds(seconds),
        )
    else:
        log.error(
            "Slack report given up: no success in %d attempt%s over %s; last error: %s",
            tries,
            "" if tries == 1 else "s",
            _seconds(seconds),
            last.error,
        )
    return PostResult(False, "slack", last.status, last.error, tries, seconds)


class SlackNotifier:
    """One job: deliver a report's text, retrying within a time bound."""

    def __init__(
        self,
        webhook_url: SecretStr | None,
        *,
        request_timeout_seconds: float = 10.0,
        give_up_seconds: float = 300.0,
        backoff: Backoff = SLACK_BACKOFF,
    ) -> None:
        self._url = webhook_url
        self.request_timeout_seconds = request_timeout_seconds
        self.give_up_seconds = give_up_seconds
        self._backoff = backoff

    @property
    def configured(self) -> bool:
        return self._url is not None and bool(self._url.get_secret_value())

    async def post(self, text: str) -> PostResult:
        if not self.configured:
            log.info("verdict report (no Slack webhook configured):\n%s", text)
            return PostResult(delivered=True, destination="log")

        async def attempt(bound: float) -> Attempt:
            return await self.attempt(text, bound)

        return await deliver(
            attempt,
            request_timeout_seconds=self.request_timeout_seconds,
            give_up_seconds=self.give_up_seconds,
            backoff=self._backoff,
        )

    async def attempt(self, text: str, bound: float) -> Attempt:
        """One request, given ``bound`` seconds to be answered."""
        assert self._url is not None
        client = AsyncWebhookClient(
            self._url.get_secret_value(),
            timeout=max(1, math.ceil(bound)),  # aiohttp's own bound; wait_for is the exact one
            logger=_client_log,
            retry_handlers=[],  # the retries are deliver's
        )
        try:
            response = await asyncio.wait_for(client.send(text=text), bound)
        except TimeoutError:  # asyncio's, and aiohttp's timeouts, which derive from it
            return Attempt(error=f"no answer within {bound:g}s", transient=True)
        except aiohttp.InvalidURL:
            return Attempt(error="InvalidURL")
        except (aiohttp.ClientError, OSError) as exc:  # refused, reset, DNS, TLS, ...
            # The exception text may carry the URL; its type says enough.
            return Attempt(error=type(exc).__name__, transient=True)
        except Exception as exc:
            return Attempt(error=type(exc).__name__)
        status = response.status_code
        if 200 <= status < 300:
            return Attempt(delivered=True, status=status)
        if status == 429:
            wait = retry_after_seconds(response.headers) + random.random() * 0.2
            return Attempt(status=status, error="HTTP 429", transient=True, retry_after=wait)
        return Attempt(status=status, error=f"HTTP {status}", transient=status >= 500)
