"""An HTTP front to the local AWS endpoint (moto) that forwards every request, and can make
DynamoDB throttle as it does under load: ``BatchWriteItem`` answered 200 with every item of
the call left in ``UnprocessedItems``, nothing written. A TCP proxy cannot do this (it sees
bytes, not calls), and a cut endpoint is retried by botocore for tens of seconds a call,
where unprocessed items are left to the caller at once."""

from __future__ import annotations

import json

import aiohttp
from aiohttp import web

from vfstream.dev.stack import free_port

# Hop-by-hop and length headers aiohttp sets itself.
_DROPPED = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


class AwsFront:
    def __init__(self, target_url: str) -> None:
        self.target_url = target_url.rstrip("/")
        self.port = free_port()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._writes_before_throttling: int | None = None
        self.batch_writes = 0  # BatchWriteItem calls forwarded to moto
        self.unprocessed = 0  # items answered as unprocessed

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def throttle_after(self, batch_writes: int) -> None:
        """Once this many BatchWriteItem calls went through, leave every item unprocessed."""
        self._writes_before_throttling = self.batch_writes + batch_writes

    def stop_throttling(self) -> None:
        self._writes_before_throttling = None

    @property
    def throttling(self) -> bool:
        limit = self._writes_before_throttling
        return limit is not None and self.batch_writes >= limit

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        target = request.headers.get("X-Amz-Target", "")
        if target.endswith(".BatchWriteItem"):
            if self.throttling:
                return self._all_unprocessed(body)
            self.batch_writes += 1
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROPPED}
        async with self._session.request(
            request.method,
            f"{self.target_url}{request.rel_url}",
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as answer:
            payload = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _DROPPED}
            if "Content-Encoding" in answer.headers:
                kept["Content-Encoding"] = answer.headers["Content-Encoding"]
            return web.Response(status=answer.status, headers=kept, body=payload)

    def _all_unprocessed(self, body: bytes) -> web.Response:
        requests = json.loads(body)["RequestItems"]
        self.unprocessed += sum(len(puts) for puts in requests.values())
        return web.Response(
            status=200,
            content_type="application/x-amz-json-1.0",
            text=json.dumps({"UnprocessedItems": requests}),
        )
