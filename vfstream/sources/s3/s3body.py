"""A blocking file object over an aioboto3 streaming body, for parsing in a worker thread.

The CSV and gzip modules are synchronous; the S3 body is asynchronous. The parser runs in
a thread and pulls chunks from the event loop, so the object is streamed, never held whole.
"""

from __future__ import annotations

import asyncio
import gzip
import io
from collections.abc import Callable
from typing import Any, TextIO

from vfstream.errors import FileRejected


class BlockingS3Body(io.RawIOBase):
    def __init__(
        self,
        body: Any,
        loop: asyncio.AbstractEventLoop,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self._body = body
        self._loop = loop
        self._on_bytes = on_bytes
        self.bytes_read = 0
        self._at_end = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        # The layers above (buffer, gzip, text) ask again after the end; the body is not
        # asked twice: aiohttp warns, with a stack trace, on every read past its end (a 1 GiB
        # single-line gzip printed 1,019 of them).
        if self._at_end:
            return 0
        future = asyncio.run_coroutine_threadsafe(self._body.read(len(buffer)), self._loop)
        chunk: bytes = future.result()
        size = len(chunk)
        if size == 0:
            self._at_end = True
        buffer[:size] = chunk
        self.bytes_read += size
        if self._on_bytes is not None and size:
            self._on_bytes(size)
        return size


class FileTooLarge(FileRejected):
    """The decompressed file passed the byte limit (``Limits.file_bytes``)."""


class _BoundedReader(io.RawIOBase):
    """Passes bytes through, failing once more than ``limit`` have been read: a 3 MB gzip
    that decompresses to 1 GiB stops at the limit instead of filling the broker's disk.

    With ``compressed`` (how many bytes of the compressed object were read so far) it also
    fails once the file grows past ``ratio`` times what it was compressed to, after the first
    ``ratio_from`` bytes: real scoring files compress 5-10 times, a bomb hundreds of times,
    so a bomb is refused after a few MB instead of after the whole byte limit (each of whose
    rows becomes about twice its size as JSON in the broker, in an aborted transaction).
    """

    def __init__(
        self,
        inner: io.BufferedIOBase,
        limit: int,
        compressed: Callable[[], int] | None = None,
        ratio: float | None = None,
        ratio_from: int = 0,
    ) -> None:
        self._inner = inner
        self._limit = limit
        self._compressed = compressed
        self._ratio = ratio
        self._ratio_from = ratio_from
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = self._inner.readinto(buffer)
        self.bytes_read += size
        if self.bytes_read > self._limit:
            raise FileTooLarge(
                f"the file is larger than {self._limit:,} bytes (decompressed); "
                "raise VFSTREAM_LIMIT_FILE_BYTES to take it"
            )
        if self._compressed is not None and self._ratio and self.bytes_read > self._ratio_from:
            compressed = max(self._compressed(), 1)
            if self.bytes_read > self._ratio * compressed:
                raise FileTooLarge(
                    f"the file decompresses to more than {self._ratio:g} times its compressed "
                    f"size ({self.bytes_read:,} bytes from {compressed:,}): a compression bomb, "
                    "or raise VFSTREAM_LIMIT_COMPRESSION_RATIO"
                )
        return size


def open_text(
    raw: io.RawIOBase | io.BufferedIOBase,
    gzipped: bool,
    max_bytes: int | None = None,
    *,
    max_ratio: float | None = None,
    ratio_from: int = 0,
) -> TextIO:
    """Decode a scoring file: optional gzip, UTF-8 with an optional BOM, bytes kept intact.

    ``surrogateescape`` keeps invalid UTF-8 as lone surrogates so that one bad row can be
    dead-lettered with its bytes while the rest of the file goes on; ``newline=""`` leaves
    CRLF and quoted line breaks to the csv module. Past ``max_bytes`` (decompressed), or a
    gzip past ``max_ratio`` times its compressed size once ``ratio_from`` bytes are out, a
    read raises ``FileTooLarge``.
    """
    binary: io.BufferedIOBase = (
        io.BufferedReader(raw, 1 << 20) if isinstance(raw, io.RawIOBase) else raw
    )
    compressed: Callable[[], int] | None = None
    if gzipped:
        binary = gzip.GzipFile(fileobj=binary, mode="rb")  # type: ignore[assignment]
        if max_ratio is not None and hasattr(raw, "bytes_read"):

            def compressed() -> int:
                return int(raw.bytes_read)  # type: ignore[union-attr]

    if max_bytes is not None:
        bounded = _BoundedReader(
            binary, max_bytes, compressed=compressed, ratio=max_ratio, ratio_from=ratio_from
        )
        binary = io.BufferedReader(bounded, 1 << 20)
    return io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="")
