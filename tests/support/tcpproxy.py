"""A loopback TCP proxy that can be cut and restored, to take a real endpoint "down"
(connections refused, open ones dropped) without losing the state behind it.

It can also reset a connection in the middle of an answer (``reset_after``: a TCP RST once
an answer has carried so many bytes, as a load balancer or a flaky network does to a long
S3 GET), and slow every answer down (``throttle``)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

from vfstream.dev.stack import free_port


class _Reset(Exception):
    """The proxy reset this connection on purpose."""


class _Connection:
    """How many bytes the answer in flight on one connection has carried so far."""

    def __init__(self) -> None:
        self.answer_bytes = 0


class TcpProxy:
    def __init__(self, target_port: int, listen_port: int | None = None) -> None:
        self.target_port = target_port
        self.port = listen_port or free_port()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._reset_after: int | None = None
        self._resets_left = 0
        self._down_for = 0.0
        self._rate: float | None = None
        self._outages: set[asyncio.Task[None]] = set()
        self.resets = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        current = asyncio.current_task()
        pipes = [task for task in self._pipes if task is not current]
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)

    async def restore(self) -> None:
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        """Cut for good: a pending outage's restore is cancelled too."""
        for task in list(self._outages):
            task.cancel()
        await asyncio.gather(*self._outages, return_exceptions=True)
        await self.cut()

    def reset_after(self, answer_bytes: int, *, times: int = 1, down_for: float = 0.0) -> None:
        """Reset (TCP RST) the next ``times`` connections whose answer passes
        ``answer_bytes`` (the bytes sent to the client since its last request), right
        there; with ``down_for``, the endpoint then refuses connections that long."""
        self._reset_after = answer_bytes
        self._resets_left = times
        self._down_for = down_for

    def throttle(self, bytes_per_second: float | None) -> None:
        """Send every answer at most this fast, per connection (None: full speed)."""
        self._rate = bytes_per_second

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            self._pipes.discard(task)
            return
        connection = _Connection()
        try:
            # cut() cancels the pipes: that is how open connections are dropped.
            with contextlib.suppress(asyncio.CancelledError, _Reset):
                await asyncio.gather(
                    self._upstream(reader, up_writer, connection),
                    self._downstream(up_reader, writer, connection),
                )
        finally:
            for end in (writer, up_writer):
                with contextlib.suppress(Exception):
                    end.close()
            self._pipes.discard(task)

    async def _upstream(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, connection: _Connection
    ) -> None:
        try:
            while data := await source.read(65536):
                connection.answer_bytes = 0  # a new request: a new answer follows
                sink.write(data)
                await sink.drain()
        finally:
            with contextlib.suppress(Exception):
                sink.close()

    async def _downstream(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, connection: _Connection
    ) -> None:
        try:
            while data := await source.read(16384 if self._rate else 65536):
                limit = self._reset_after
                if (
                    limit is not None
                    and self._resets_left > 0
                    and connection.answer_bytes + len(data) > limit
                ):
                    self._resets_left -= 1
                    sink.write(data[: max(limit - connection.answer_bytes, 0)])
                    with contextlib.suppress(Exception):
                        await sink.drain()
                    self._reset(sink)
                    raise _Reset
                sink.write(data)
                await sink.drain()
                connection.answer_bytes += len(data)
                if self._rate:
                    await asyncio.sleep(len(data) / self._rate)
        finally:
            with contextlib.suppress(Exception):
                sink.close()

    def _reset(self, sink: asyncio.StreamWriter) -> None:
        self.resets += 1
        raw = sink.get_extra_info("socket")
        if raw is not None:
            with contextlib.suppress(OSError):
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sink.transport.abort()
        if self._down_for > 0:
            if self._server is not None:  # refuse the very next connection already
                self._server.close()
                self._server = None
            outage = asyncio.get_running_loop().create_task(self._down(self._down_for))
            self._outages.add(outage)
            outage.add_done_callback(self._outages.discard)

    async def _down(self, seconds: float) -> None:
        await self.cut()
        await asyncio.sleep(seconds)
        await self.restore()
