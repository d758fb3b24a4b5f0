"""Small local aiohttp servers that play the third-party HTTP services (Slack, entry service,
campaign service) in tests: they answer from a script and record every request."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from vfstream.dev.stack import free_port


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/plain"

    @classmethod
    def json(cls, status: int, value: Any) -> Answer:
        return cls(status, orjson.dumps(value).decode(), content_type="application/json")


@dataclass(frozen=True)
class Received:
    method: str
    path: str  # with the query string
    body: bytes
    status: int  # what the service answered

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class ScriptedService:
    """Each request to a path takes the next scripted answer; the last one repeats.

    ``fallback`` answers paths without a script. ``requests`` lists what was received.
    """

    url: str = ""
    script: dict[str, list[Answer]] = field(default_factory=dict)
    fallback: Answer = field(default_factory=lambda: Answer(404, "{}"))
    requests: list[Received] = field(default_factory=list)

    def hits(self, path: str) -> int:
        return sum(1 for request in self.requests if request.path == path)

    def bodies(self, path: str | None = None, *, succeeded: bool = False) -> list[Any]:
        return [
            r.json()
            for r in self.requests
            if (path is None or r.path == path) and (not succeeded or r.status < 300)
        ]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        answers = self.script.get(request.path_qs) or [self.fallback]
        answer = answers[0] if len(answers) == 1 else answers.pop(0)
        self.requests.append(Received(request.method, request.path_qs, body, answer.status))
        return web.Response(
            status=answer.status,
            text=answer.body,
            headers=answer.headers,
            content_type=answer.content_type,
        )


@contextlib.asynccontextmanager
async def scripted_service(port: int | None = None) -> AsyncIterator[ScriptedService]:
    service = ScriptedService()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", service._handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = port or free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    service.url = f"http://127.0.0.1:{port}"
    try:
        yield service
    finally:
        await runner.cleanup()
