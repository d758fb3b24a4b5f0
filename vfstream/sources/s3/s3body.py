"""A blocking file object over an aioboto3 streaming body, for parsing in a worker thread.

The CSV and gzip modules are synchronous; the S3 body is asynchronous. The parser runs in
a thread and pulls chunks from the event loop, so the object is streamed, never held whole.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gzip
import io
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TextIO, TypeVar

from vfstream.errors import FileRejected
from vfstream.metrics import S3_READ_FAULTS
from vfstream.retry import Backoff
from vfstream.sources.s3.faults import (
    ObjectReplaced,
    S3Unavailable,
    is_object_replaced,
    is_s3_fault,
)

log = logging.getLogger(__name__)

# Between tries to resume a read S3 broke off: quick, S3 usually answers the next request.
RESUME_BACKOFF = Backoff(0.2, 2.0)
# Between starts of a file S3 failed (nothing of the file held open meanwhile).
RESTART_BACKOFF = Backoff(1.0, 30.0)

T = TypeVar("T")


async def get_object_version(
    s3: Any, bucket: str, key: str, etag: str, *, offset: int = 0
) -> dict[str, Any]:
    """GET the version whose ``etag`` was read first (``IfMatch``), from ``offset`` on.

    A fault S3 may heal raises ``S3Unavailable``; another version, or none, raises
    ``ObjectReplaced`` (the caller reads the object again from its start)."""
    extra = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        answer: dict[str, Any] = await s3.get_object(Bucket=bucket, Key=key, IfMatch=etag, **extra)
    except Exception as exc:
        if is_object_replaced(exc):
            raise ObjectReplaced(
                f"s3://{bucket}/{key} changed while it was read ({exc}); it is read again"
            ) from exc
        raise_if_s3_fault(exc)
        raise
    return answer


def raise_if_s3_fault(exc: BaseException) -> None:
    """Raise ``S3Unavailable`` for what S3 may heal; other errors are the caller's to raise."""
    if isinstance(exc, S3Unavailable):
        raise exc
    if is_s3_fault(exc):
        raise S3Unavailable(_describe(exc)) from exc


async def retry_while_s3_fails(
    attempt: Callable[[], Awaitable[T]],
    *,
    object_url: str,
    within: float | None,
    on_restart: Callable[[], None] | None = None,
    aborted: str = "nothing of it was kept",
    backoff: Backoff = RESTART_BACKOFF,
) -> T:
    """``attempt()`` again, after a backoff, while it raises ``S3Unavailable`` (SPEC 2
    "Transient is not invalid"); after ``within`` seconds of failing (None: never) the last
    fault is raised as ``S3Unavailable`` saying so. The file is never refused for it."""
    first_fault: float | None = None
    faults = 0
    while True:
        try:
            return await attempt()
        except S3Unavailable as exc:
            now = time.monotonic()
            first_fault = now if first_fault is None else first_fault
            faults += 1
            if on_restart is not None:
                on_restart()
            if within is not None and now - first_fault >= within:
                raise S3Unavailable(
                    f"S3 unavailable: {object_url} could not be read in "
                    f"{now - first_fault:.0f}s ({faults} tries); {aborted}; the last error: {exc}"
                ) from exc
            wait = 0.0 if isinstance(exc, ObjectReplaced) else backoff.seconds(faults)
            if within is not None:
                wait = min(wait, max(within - (now - first_fault), 0.0))
            log.warning(
                "S3 unavailable while reading %s: %s; %s, and the file starts again in %.1fs "
                "(try %d)",
                object_url,
                exc,
                aborted,
                wait,
                faults + 1,
            )
            S3_READ_FAULTS.labels("restarted").inc()
            await asyncio.sleep(wait)


class BlockingS3Body(io.RawIOBase):
    """The object's bytes for a parser thread, pulled chunk by chunk from the event loop.

    With ``reopen`` (a coroutine giving the object's body from a byte offset, a ranged GET
    of the same version), a read S3 breaks off (a connection reset, a read timeout, a body
    ending before its ``content_length``) goes on where it stopped: the bytes the layers
    above see are the same stream, so the gzip and CSV state in the thread is untouched.
    Resuming is tried for ``resume_within`` seconds of S3 not answering; after that, or
    without ``reopen``, the read raises ``S3Unavailable``: the caller starts the file again
    later, never blaming the file for it.
    """

    def __init__(
        self,
        body: Any,
        loop: asyncio.AbstractEventLoop,
        on_bytes: Callable[[int], None] | None = None,
        *,
        content_length: int | None = None,
        reopen: Callable[[int], Awaitable[Any]] | None = None,
        resume_within: float = 0.0,
        backoff: Backoff = RESUME_BACKOFF,
        describe: str = "the S3 object",
    ) -> None:
        self._body: Any = body
        self._loop = loop
        self._on_bytes = on_bytes
        self._content_length = content_length
        self._reopen = reopen
        self._resume_within = resume_within
        self._backoff = backoff
        self._describe = describe
        self._pending: concurrent.futures.Future[bytes] | None = None
        self._aborted = False
        self.bytes_read = 0
        self.resumes = 0
        self._at_end = False

    def readable(self) -> bool:
        return True

    def abort(self) -> None:
        """Stop the reader (from any thread): a read waiting on S3 raises at once."""
        self._aborted = True
        pending = self._pending
        if pending is not None:
            pending.cancel()  # thread-safe; the task in the loop is cancelled with it

    def drop(self) -> None:
        """Close the answer being read, a resumed one included (in the event loop's thread,
        once reading is over)."""
        self.abort()
        self._drop_body()

    def readinto(self, buffer: Any) -> int:
        # The layers above (buffer, gzip, text) ask again after the end; the body is not
        # asked twice: aiohttp warns, with a stack trace, on every read past its end (a 1 GiB
        # single-line gzip printed 1,019 of them).
        if self._at_end:
            return 0
        if self._aborted:
            raise S3Unavailable(f"reading {self._describe} was stopped")
        future = asyncio.run_coroutine_threadsafe(self._read(len(buffer)), self._loop)
        self._pending = future
        if self._aborted:  # abort() ran before it could see this read
            future.cancel()
        try:
            chunk: bytes = future.result()
        except concurrent.futures.CancelledError:
            raise S3Unavailable(f"reading {self._describe} was stopped") from None
        finally:
            self._pending = None
        size = len(chunk)
        if size == 0:
            self._at_end = True
        buffer[:size] = chunk
        self.bytes_read += size
        if self._on_bytes is not None and size:
            self._on_bytes(size)
        return size

    async def _read(self, size: int) -> bytes:
        """One chunk (in the event loop), resuming a broken-off read within the budget."""
        faulted_at: float | None = None
        faults = 0
        while True:
            reopening = self._body is None
            try:
                if reopening:
                    assert self._reopen is not None
                    self._body = await self._reopen(self.bytes_read)
                    self.resumes += 1
                    S3_READ_FAULTS.labels("resumed").inc()
                chunk: bytes = await self._body.read(size)
                if not chunk and self._short():
                    raise S3Unavailable(
                        f"the body ended at byte {self.bytes_read:,} of {self._content_length:,}"
                    )
                return chunk
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_object_replaced(exc):
                    raise ObjectReplaced(
                        f"{self._describe} changed while it was read ({exc}); it is read again"
                    ) from exc
                if reopening and not is_s3_fault(exc):
                    raise  # the ranged GET itself refused (access denied): not S3 away
                # A body read fails only by the connection: always S3's fault, never the file's.
                self._drop_body()
                now = time.monotonic()
                faulted_at = now if faulted_at is None else faulted_at
                faults += 1
                if self._reopen is None or now - faulted_at >= self._resume_within:
                    raise S3Unavailable(
                        f"S3 broke off {self._describe} at byte {self.bytes_read:,}: "
                        f"{_describe(exc)}"
                    ) from exc
                wait = min(self._backoff.seconds(faults), self._resume_within - (now - faulted_at))
                log.warning(
                    "S3 broke off %s at byte %s (%s); resuming there in %.1fs",
                    self._describe,
                    f"{self.bytes_read:,}",
                    _describe(exc),
                    wait,
                )
                await asyncio.sleep(max(wait, 0.0))

    def _short(self) -> bool:
        return self._content_length is not None and self.bytes_read < self._content_length

    def _drop_body(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            with contextlib.suppress(Exception):
                body.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, S3Unavailable):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# S3 calls of a file read: few retries inside botocore (each a few seconds at most), since
# the readers retry themselves and keep to their own time limits (s3_resume_seconds,
# s3_retry_seconds); botocore's default of 5 adaptive tries spent 20 s on one refused call.
S3_READ_RETRIES = {"max_attempts": 3, "mode": "standard"}


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
