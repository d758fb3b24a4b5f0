"""The campaign service (not ours): campaigns of an event, markets of a campaign.

One client, one place for timeouts, retries with backoff and a short cache.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import aiohttp
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from vfstream.metrics import SINK_FAILURES, SINK_RETRIES


class CampaignServiceError(RuntimeError):
    """The campaign service could not answer; ``status`` is what to tell our caller."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Retryable(Exception):
    pass


class CampaignService:
    def __init__(
        self,
        base_url: str,
        *,
        cache_seconds: float = 30.0,
        attempts: int = 3,
        timeout: float = 5.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.cache_seconds = cache_seconds
        self.attempts = attempts
        self.timeout = timeout
        self._cache: dict[str, tuple[float, Any]] = {}

    async def campaigns_for_event(self, event_id: str) -> Any:
        return await self._get(f"/campaigns?eventId={quote(event_id, safe='')}")

    async def markets(self, campaign_id: str) -> Any:
        return await self._get(f"/campaigns/{quote(campaign_id, safe='')}/markets")

    async def _get(self, path: str) -> Any:
        cached = self._cache.get(path)
        if cached is not None and time.monotonic() - cached[0] < self.cache_seconds:
            return cached[1]
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.attempts),
                wait=wait_exponential_jitter(multiplier=0.2, max=2.0),
                retry=retry_if_exception_type(_Retryable),
                reraise=True,
            ):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        SINK_RETRIES.labels("campaign-service").inc()
                    body = await self._fetch(path)
        except _Retryable as exc:
            SINK_FAILURES.labels("campaign-service").inc()
            raise CampaignServiceError(
                f"campaign service unavailable after {self.attempts} attempts: {exc}", 503
            ) from exc
        self._cache[path] = (time.monotonic(), body)
        return body

    async def _fetch(self, path: str) -> Any:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self.base_url + path) as resp,
            ):
                if resp.status >= 500:
                    raise _Retryable(f"HTTP {resp.status} from the campaign service")
                if resp.status == 404:
                    raise CampaignServiceError("the campaign service knows no such thing", 404)
                if resp.status >= 400:
                    raise CampaignServiceError(
                        f"the campaign service refused the request (HTTP {resp.status})", 502
                    )
                try:
                    return await resp.json(content_type=None)
                except ValueError as exc:
                    raise CampaignServiceError(
                        "the campaign service answered with something that is not JSON", 502
                    ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Retryable(str(exc) or type(exc).__name__) from exc
