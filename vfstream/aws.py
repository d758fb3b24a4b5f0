"""aioboto3 clients pointed at the configured AWS endpoint (moto server locally)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aioboto3
from botocore.config import Config

from vfstream.settings import Settings

_SESSION = aioboto3.Session()


@asynccontextmanager
async def aws_client(settings: Settings, service: str, **config: Any) -> AsyncIterator[Any]:
    retries = config.pop("retries", {"max_attempts": 5, "mode": "adaptive"})
    client_config = Config(retries=retries, **config)
    async with _SESSION.client(
        service, config=client_config, **settings.aws_client_kwargs()
    ) as client:
        yield client
