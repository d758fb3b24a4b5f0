"""The entry service (not ours): ``POST /campaigns/{id}/scoring`` with up to 500 records.

One client, one place for timeouts and retries (5xx, 429 and connection errors back off with
jitter, a bounded number of times); a 4xx other than 429 is final.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from vfstream.errors import DependencyUnavailable
from vfstream.metrics import SINK_FAILURES, SINK_RETRIES
from vfstream.retry import Backoff, retrying


class EntryServiceError(DependencyUnavailable):
    pass


class _Retryable(DependencyUnavailable):
    pass


@dataclass(frozen=True)
class EntryResult:
    sent: int
    inserted: int
    updated: int


class EntryService:
    def __init__(
        self, base_url: str, *, attempts: int = 5, timeout: float = 10.0, max_wait: float = 5.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.attempts = attempts
        self.timeout = timeout
        self.max_wait = max_wait

    async def post_scoring(self, campaign_id: str, records: list[dict[str, Any]]) -> EntryResult:
        path = f"/campaigns/{quote(campaign_id, safe='')}/scoring"
        body = orjson.dumps({"records": records})
        try:
            async for attempt in retrying(
                _Retryable, attempts=self.attempts, backoff=Backoff(0.2, self.max_wait)
            ):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        SINK_RETRIES.labels("entry-service").inc()
                    answer = await self._post(path, body)
        except _Retryable as exc:
            SINK_FAILURES.labels("entry-service").inc()
            raise EntryServiceError(
                f"entry service failed for campaign {campaign_id} after {self.attempts} "
                f"attempts: {exc}"
            ) from exc
        except EntryServiceError:
            SINK_FAILURES.labels("entry-service").inc()
            raise
        counts = answer if isinstance(answer, dict) else {}
        return EntryResult(
            sent=len(records),
            inserted=int(counts.get("inserted") or 0),
            updated=int(counts.get("updated") or 0),
        )

    async def _post(self, path: str, body: bytes) -> Any:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(
                    self.base_url + path, data=body, headers={"Content-Type": "application/json"}
                ) as resp,
            ):
                text = await resp.text()
                if resp.status >= 500 or resp.status == 429:
                    raise _Retryable(f"HTTP {resp.status}")
                if resp.status >= 400:
                    raise EntryServiceError(f"entry service refused {path}: HTTP {resp.status}")
                try:
                    return orjson.loads(text) if text else {}
                except orjson.JSONDecodeError:
                    return {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Retryable(str(exc) or type(exc).__name__) from exc
