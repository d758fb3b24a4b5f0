"""The entry service (not ours): ``POST /campaigns/{id}/scoring`` with up to 500 records.

One client, one place for timeouts and retries (``attempts`` calls, jittered backoff between
them). A 400, 413 or 422 says the request itself is bad: ``EntryServiceRefused``, final.
Anything else that is not a success (a 5xx, 429, 404, a refused or reset connection, no
answer within ``timeout``) is the service's trouble: retried, then ``EntryServiceError``,
which the entry forwarder waits out. Error texts never name the service's address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from vfstream.errors import DependencyUnavailable, describe_error
from vfstream.metrics import SINK_FAILURES, SINK_RETRIES
from vfstream.retry import Backoff, retrying


class EntryServiceError(DependencyUnavailable):
    """The entry service did not take the request; a later try may."""


class EntryServiceRefused(EntryServiceError):
    """The entry service refused the request for what it holds: sending it again cannot help."""


# Answers that blame the request: malformed, too large, or records the service cannot accept.
REFUSALS = frozenset({400, 413, 422})


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
            tries = f" ({self.attempts} attempts)" if self.attempts > 1 else ""
            raise EntryServiceError(f"{exc}{tries}") from exc
        except EntryServiceError:
            SINK_FAILURES.labels("entry-service").inc()
            raise
        counts = answer if isinstance(answer, dict) else {}
        return EntryResult(
            sent=len(records),
            inserted=_count(counts.get("inserted")),
            updated=_count(counts.get("updated")),
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
                text = await resp.text(errors="replace")
                if resp.status in REFUSALS:
                    said = f": {text.strip()[:200]}" if text.strip() else ""
                    raise EntryServiceRefused(f"HTTP {resp.status}{said}")
                if not 200 <= resp.status < 300:
                    raise _Retryable(f"HTTP {resp.status}")
                try:
                    return orjson.loads(text) if text else {}
                except orjson.JSONDecodeError:
                    return {}
        except TimeoutError as exc:
            raise _Retryable(f"no answer within {self.timeout:g} s") from exc
        except aiohttp.ClientError as exc:
            raise _Retryable(describe_error(exc)) from exc


def _count(value: Any) -> int:
    """A count the service answered; 0 for anything that is not one (the records were taken:
    an odd answer must not make them look undelivered)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(int(value), 0) if value == value and abs(value) < 2**53 else 0
