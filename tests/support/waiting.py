"""Polling for an eventually consistent condition, with the last observation in the failure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(
    probe: Callable[[], Awaitable[Any]],
    accept: Callable[[Any], bool],
    timeout: float = 60.0,
    interval: float = 0.5,
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await probe()
        except Exception as exc:  # the service may still be starting
            last = exc
        if not isinstance(last, Exception) and accept(last):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout:.0f}s; last seen: {last!r}")
        await asyncio.sleep(interval)
