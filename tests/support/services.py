"""Small local aiohttp servers that play the third-party HTTP services (Slack, entry service,
campaign service) in tests: they answer from a script and record every request."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from vfstream.dev.stack import free_port

NO_ANSWER = 0  # the status recorded for a request the service held and never answered


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
    status: int  # what the service answered; NO_ANSWER for a request it held (``hang``)

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class ScriptedService:
    """Each request to a path takes the next scripted answer; the last one repeats.

    ``fallback`` answers paths without a script. ``requests`` lists what was received.
    ``respond``, asked with a request's path and body first, may answer it instead (None:
    the script answers).
    ``hang``, asked with a request's path and body when it arrives, makes the service a slow
    one: a request it says yes to is accepted and never answered (held open until the
    client gives up; recorded at once with status ``NO_ANSWER``).
    """

    url: str = ""
    script: dict[str, list[Answer]] = field(default_factory=dict)
    fallback: Answer = field(default_factory=lambda: Answer(404, "{}"))
    requests: list[Received] = field(default_factory=list)
    hang: Callable[[str, bytes], bool] | None = None
    respond: Callable[[str, bytes], Answer | None] | None = None
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    def hits(self, path: str) -> int:
        return sum(1 for request in self.requests if request.path == path)

    def bodies(self, path: str | None = None, *, succeeded: bool = False) -> list[Any]:
        return [
            r.json()
            for r in self.requests
            if (path is None or r.path == path) and (not succeeded or 200 <= r.status < 300)
        ]

    def unanswered(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path == path and r.status == NO_ANSWER)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.hang is not None and self.hang(request.path_qs, body):
            self.requests.append(Received(request.method, request.path_qs, body, NO_ANSWER))
            while not self.closing.is_set():
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                await asyncio.sleep(0.05)
            return web.Response(status=504)  # to nobody: the client has gone
        answer = self.respond(request.path_qs, body) if self.respond is not None else None
        if answer is None:
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
        service.closing.set()
        await runner.cleanup()
