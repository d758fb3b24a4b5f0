"""Posting verdict reports to a Slack incoming webhook, or to the log when none is configured.

Retries live in ``slack_sdk``'s retry handlers (429 honours ``Retry-After``; 5xx and
connection errors back off exponentially with jitter); the whole post is bounded in time.
The webhook URL is a secret: it is never logged, not even by ``slack_sdk``'s debug output.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.interval_calculator import RetryIntervalCalculator
from slack_sdk.webhook.async_client import AsyncWebhookClient

from vfstream.metrics import SINK_FAILURES, SINK_RETRIES
from vfstream.retry import Backoff

log = logging.getLogger(__name__)

# slack_sdk logs the URL at debug level whenever its logger's own level is unset; a
# dedicated logger pinned above DEBUG keeps the secret out of any worker's log.
_client_log = logging.getLogger("vfstream.sinks.clients.slack.client")
_client_log.setLevel(logging.WARNING)

UNBOUNDED_RETRIES = 10_000  # the time bound (give_up_seconds) is what ends retrying


class CappedBackoff(RetryIntervalCalculator):
    """vfstream's backoff (``vfstream.retry``) as slack-sdk's retry handlers ask for it,
    capped so a recovered Slack is noticed soon."""

    def __init__(self, first: float = 0.5, cap: float = 15.0) -> None:
        self.backoff = Backoff(first, cap)

    def calculate_sleep_duration(self, current_attempt: int) -> float:
        return self.backoff.seconds(current_attempt + 1)


class _Counted:
    """Counts every retry a handler grants in the sink metrics."""

    async def prepare_for_next_attempt_async(self, **kwargs: Any) -> None:
        SINK_RETRIES.labels("slack").inc()
        await super().prepare_for_next_attempt_async(**kwargs)  # type: ignore[misc]


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


class _RateLimited(AsyncRateLimitErrorRetryHandler):
    # slack_sdk's own handler reads only the first character of a string header
    # ("30" -> 3 s); this one waits what the header says.
    async def prepare_for_next_attempt_async(
        self, *, state: Any, response: Any = None, **kwargs: Any
    ) -> None:
        SINK_RETRIES.labels("slack").inc()
        state.next_attempt_requested = True
        wait = retry_after_seconds(response.headers if response is not None else {})
        await asyncio.sleep(wait + random.random() * 0.2)
        state.increment_current_attempt()


class _ServerError(_Counted, AsyncServerErrorRetryHandler):
    async def _can_retry_async(self, *, response: Any = None, **kwargs: Any) -> bool:
        return response is not None and response.status_code >= 500


class _ConnectionError(_Counted, AsyncConnectionErrorRetryHandler):
    pass


def retry_handlers(backoff: RetryIntervalCalculator) -> list[AsyncRetryHandler]:
    return [
        _RateLimited(max_retry_count=UNBOUNDED_RETRIES),
        _ServerError(max_retry_count=UNBOUNDED_RETRIES, interval_calculator=backoff),
        _ConnectionError(max_retry_count=UNBOUNDED_RETRIES, interval_calculator=backoff),
    ]


@dataclass(frozen=True)
class PostResult:
    delivered: bool
    destination: str  # "slack" or "log"
    status: int | None = None
    error: str | None = None


class SlackNotifier:
    """One job: deliver a report's text, retrying within a time bound."""

    def __init__(
        self,
        webhook_url: SecretStr | None,
        *,
        request_timeout_seconds: float = 10.0,
        give_up_seconds: float = 300.0,
        backoff: RetryIntervalCalculator | None = None,
    ) -> None:
        self._url = webhook_url
        self.request_timeout_seconds = request_timeout_seconds
        self.give_up_seconds = give_up_seconds
        self._backoff = backoff or CappedBackoff()

    @property
    def configured(self) -> bool:
        return self._url is not None and bool(self._url.get_secret_value())

    async def post(self, text: str) -> PostResult:
        if not self.configured:
            log.info("verdict report (no Slack webhook configured):\n%s", text)
            return PostResult(delivered=True, destination="log")
        assert self._url is not None
        client = AsyncWebhookClient(
            self._url.get_secret_value(),
            timeout=max(1, int(self.request_timeout_seconds)),
            logger=_client_log,
            retry_handlers=retry_handlers(self._backoff),
        )
        try:
            response = await asyncio.wait_for(client.send(text=text), self.give_up_seconds)
        except TimeoutError:
            return self._failed(None, f"no success within {self.give_up_seconds:.0f}s")
        except Exception as exc:  # connection errors past their retries, TLS, ...
            # The exception text may carry the URL; its type says enough.
            return self._failed(None, f"{type(exc).__name__}")
        if 200 <= response.status_code < 300:
            return PostResult(delivered=True, destination="slack", status=response.status_code)
        return self._failed(response.status_code, f"HTTP {response.status_code}")

    def _failed(self, status: int | None, error: str) -> PostResult:
        SINK_FAILURES.labels("slack").inc()
        log.error("Slack report not delivered: %s", error)
        return PostResult(delivered=False, destination="slack", status=status, error=error)
