"""The campaign service (not ours): campaigns of an event, markets of a campaign.

One client, one place for timeouts, retries with backoff and a short cache.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import aiohttp
from cachetools import TTLCache

from vfstream.errors import DependencyUnavailable, describe_error
from vfstream.metrics import SINK_FAILURES, SINK_RETRIES
from vfstream.retry import Backoff, retrying

log = logging.getLogger(__name__)


class CampaignServiceError(DependencyUnavailable):
    """The campaign service could not answer; ``status`` is what to tell our caller."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Retryable(DependencyUnavailable):
    pass


class CampaignService:
    def __init__(
        self,
        base_url: str,
        *,
        cache_seconds: float = 30.0,
        cache_entries: int = 1024,
        attempts: int = 3,
        timeout: float = 5.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.cache_seconds = cache_seconds
        self.attempts = attempts
        self.timeout = timeout
        # Bounded and expiring: callers choose the paths (any eventId), so a plain dict grew
        # with every distinct one and never shrank.
        self._cache: TTLCache[str, Any] = TTLCache(maxsize=cache_entries, ttl=cache_seconds)

    @property
    def cached_answers(self) -> int:
        return len(self._cache)

    async def campaigns_for_event(self, event_id: str) -> Any:
        return await self._get(f"/campaigns?eventId={quote(event_id, safe='')}")

    async def markets(self, campaign_id: str) -> Any:
        return await self._get(f"/campaigns/{quote(campaign_id, safe='')}/markets")

    async def _get(self, path: str) -> Any:
        if path in self._cache:
            return self._cache[path]
        try:
            async for attempt in retrying(
                _Retryable, attempts=self.attempts, backoff=Backoff(0.2, 2.0)
            ):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        SINK_RETRIES.labels("campaign-service").inc()
                    body = await self._fetch(path)
        except _Retryable as exc:
            SINK_FAILURES.labels("campaign-service").inc()
            log.warning("campaign service failed %s attempts for %s: %s", self.attempts, path, exc)
            raise CampaignServiceError(
                f"campaign service unavailable after {self.attempts} attempts", 503
            ) from exc
        self._cache[path] = body
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
        except TimeoutError as exc:
            raise _Retryable(f"no answer within {self.timeout:g} s") from exc
        except aiohttp.ClientError as exc:
            raise _Retryable(describe_error(exc)) from exc
