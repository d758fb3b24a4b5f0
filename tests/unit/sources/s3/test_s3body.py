"""The blocking S3 body the parser thread reads (issue #12: reads past the end)."""

from __future__ import annotations

import asyncio
import gzip
import io
import threading
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from tests.support.aws import client_error
from vfstream.retry import Backoff
from vfstream.sources.s3.faults import ObjectReplaced, S3Unavailable
from vfstream.sources.s3.s3body import (
    BlockingS3Body,
    FileTooLarge,
    open_text,
    retry_while_s3_fails,
)


class CountingBody:
    """An aiohttp-like streaming body that counts the reads it gets after its end."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.reads_past_end = 0

    async def read(self, size: int) -> bytes:
        chunk = self._data.read(size)
        if not chunk:
            self.reads_past_end += 1
        return chunk


def read_in_thread(body: CountingBody, gzipped: bool, max_bytes: int | None = None) -> str:
    async def scenario() -> str:
        loop = asyncio.get_running_loop()
        result: list[str] = []
        errors: list[BaseException] = []

        def parse() -> None:
            try:
                text = open_text(BlockingS3Body(body, loop), gzipped, max_bytes)
                while line := text.readline(1000):
                    result.append(line)
                for _ in range(50):  # the layers above ask again and again at the end
                    text.readline(1000)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=parse)
        thread.start()
        while thread.is_alive():
            await asyncio.sleep(0.01)
        if errors:
            raise errors[0]
        return "".join(result)

    return asyncio.run(scenario())


def test_the_body_is_asked_past_its_end_only_once() -> None:
    # aiohttp logs a warning with a stack trace for every read past the end after five.
    body = CountingBody(gzip.compress(b"x" * 100_000))
    assert read_in_thread(body, gzipped=True) == "x" * 100_000
    assert body.reads_past_end == 1


def test_a_file_past_the_byte_limit_fails_when_the_limit_is_passed() -> None:
    body = CountingBody(gzip.compress(b"row\n" * 1_000_000))  # 4 MB of text in ~10 KB
    with pytest.raises(FileTooLarge, match="larger than 100,000 bytes"):
        read_in_thread(body, gzipped=True, max_bytes=100_000)


def test_a_gzip_past_the_ratio_is_refused_after_the_first_bytes_and_a_real_file_is_not() -> None:
    import gzip

    class Counted(io.BytesIO):
        def __init__(self, data: bytes) -> None:
            super().__init__(data)
            self.bytes_read = 0

        def read(self, size: int | None = -1) -> bytes:
            chunk = super().read(size)
            self.bytes_read += len(chunk)
            return chunk

        def readinto(self, buffer: Any) -> int:
            size = super().readinto(buffer)
            self.bytes_read += size
            return size

    bomb = gzip.compress(b"a,b,c\n" * 5_000_000)
    text = open_text(Counted(bomb), True, 1 << 30, max_ratio=50, ratio_from=1 << 20)
    with pytest.raises(FileTooLarge, match="50 times its compressed size"):
        while text.read(1 << 16):
            pass
    varied = "".join(f"u{n},u{n}000,c1,ev{n % 7},{n / 7e6:.6f},true\n" for n in range(200_000))
    packed = gzip.compress(varied.encode())
    text = open_text(Counted(packed), True, 1 << 30, max_ratio=50, ratio_from=1 << 20)
    assert text.read() == varied


# -- Reads S3 breaks off (issue #21 item 1) ------------------------------------------------


RESET = ConnectionResetError(104, "Connection reset by peer")


class BreakingBody:
    """A streaming body of ``data[start:]`` that raises ``error`` once ``fail_at`` bytes of
    the object are out (None: never), or ends early there when ``error`` is None."""

    def __init__(
        self,
        data: bytes,
        start: int = 0,
        fail_at: int | None = None,
        error: BaseException | None = RESET,
    ) -> None:
        self._data = data
        self._at = start
        self._fail_at = fail_at
        self._error = error
        self.closed = False

    async def read(self, size: int) -> bytes:
        end = len(self._data) if self._fail_at is None else self._fail_at
        if self._at >= end and self._fail_at is not None:
            if self._error is not None:
                raise self._error
            return b""  # the connection closed quietly: fewer bytes than ContentLength
        chunk = self._data[self._at : min(self._at + size, end)]
        self._at += len(chunk)
        return chunk

    def close(self) -> None:
        self.closed = True


def parse_in_thread(make_body: Any, *, gzipped: bool = True) -> tuple[bytes, BlockingS3Body]:
    """Read a whole file through ``BlockingS3Body`` in a thread, as the ingestor does."""

    async def scenario() -> tuple[bytes, BlockingS3Body]:
        body = make_body(asyncio.get_running_loop())
        binary = gzip.GzipFile(fileobj=io.BufferedReader(body, 1 << 16)) if gzipped else body
        read = await asyncio.to_thread(binary.read)
        return read, body

    return asyncio.run(scenario())


PLAIN = "".join(f"u{n},u{n}000,c1,ev{n % 7},{n / 7e6:.6f},true\n" for n in range(60_000)).encode()
PACKED = gzip.compress(PLAIN)


def resuming(breaks: list[int], *, error: BaseException | None = RESET, within: float = 5) -> Any:
    """A body that breaks at each offset of ``breaks`` in turn, resumed by ranged reads."""
    opened: list[int] = []

    def make(loop: asyncio.AbstractEventLoop) -> BlockingS3Body:
        async def reopen(offset: int) -> BreakingBody:
            opened.append(offset)
            fail_at = breaks[len(opened)] if len(opened) < len(breaks) else None
            return BreakingBody(PACKED, start=offset, fail_at=fail_at, error=error)

        first = BreakingBody(PACKED, fail_at=breaks[0] if breaks else None, error=error)
        body = BlockingS3Body(
            first,
            loop,
            content_length=len(PACKED),
            reopen=reopen,
            resume_within=within,
            backoff=Backoff(0.001, 0.002),
        )
        body.opened = opened  # type: ignore[attr-defined]
        return body

    return make


@pytest.mark.parametrize(
    "breaks",
    [[100_000], [1, 50_000, 50_001, 200_000], [len(PACKED) - 1]],
    ids=["once", "four-times", "at-the-last-byte"],
)
def test_a_read_s3_resets_resumes_at_the_byte_reached_and_the_gzip_never_notices(
    breaks: list[int],
) -> None:
    read, body = parse_in_thread(resuming(breaks))
    assert read == PLAIN
    assert body.resumes == len(breaks)
    assert body.opened == breaks  # type: ignore[attr-defined]


def test_a_body_ending_before_its_content_length_is_resumed_not_taken_as_truncated() -> None:
    read, body = parse_in_thread(resuming([300_000], error=None))
    assert read == PLAIN and body.resumes == 1


def test_s3_away_past_the_resume_time_raises_s3_unavailable_never_a_gzip_error() -> None:
    def make(loop: asyncio.AbstractEventLoop) -> BlockingS3Body:
        async def reopen(offset: int) -> Any:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1/b/k")

        return BlockingS3Body(
            BreakingBody(PACKED, fail_at=100_000),
            loop,
            content_length=len(PACKED),
            reopen=reopen,
            resume_within=0.05,
            backoff=Backoff(0.001, 0.002),
            describe="s3://b/k",
        )

    with pytest.raises(S3Unavailable, match=r"S3 broke off s3://b/k at byte 100,000") as caught:
        parse_in_thread(make)
    assert not isinstance(caught.value, OSError | EOFError)


def test_without_reopen_a_reset_is_s3_unavailable_at_once() -> None:
    def make(loop: asyncio.AbstractEventLoop) -> BlockingS3Body:
        return BlockingS3Body(BreakingBody(PACKED, fail_at=10), loop)

    with pytest.raises(S3Unavailable, match="ConnectionResetError"):
        parse_in_thread(make)


def test_an_object_replaced_while_read_is_read_again_from_its_start() -> None:
    def make(loop: asyncio.AbstractEventLoop) -> BlockingS3Body:
        async def reopen(offset: int) -> Any:
            raise client_error("PreconditionFailed", 412, "GetObject")

        return BlockingS3Body(
            BreakingBody(PACKED, fail_at=100_000), loop, reopen=reopen, resume_within=5
        )

    with pytest.raises(ObjectReplaced):
        parse_in_thread(make)


def test_a_truly_truncated_gzip_still_fails_as_the_files_fault() -> None:
    cut = PACKED[: len(PACKED) // 2]

    def make(loop: asyncio.AbstractEventLoop) -> BlockingS3Body:
        async def reopen(offset: int) -> Any:
            raise AssertionError("an object that is whole as stored is never read again")

        return BlockingS3Body(
            BreakingBody(cut), loop, content_length=len(cut), reopen=reopen, resume_within=5
        )

    with pytest.raises(EOFError):
        parse_in_thread(make)


def test_abort_stops_a_read_waiting_on_s3() -> None:
    async def scenario() -> BaseException:
        loop = asyncio.get_running_loop()
        waiting = asyncio.Event()

        class Hanging:
            async def read(self, size: int) -> bytes:
                waiting.set()
                await asyncio.sleep(3600)
                return b""

        body = BlockingS3Body(Hanging(), loop)
        reading = asyncio.ensure_future(asyncio.to_thread(body.read, 10))
        await waiting.wait()
        body.abort()
        try:
            await asyncio.wait_for(reading, 5)
        except S3Unavailable as exc:
            return exc
        raise AssertionError("the read went on")

    assert "stopped" in str(asyncio.run(scenario()))


def test_a_file_s3_fails_is_started_again_until_it_reads_and_given_up_after_the_bound() -> None:
    async def scenario() -> tuple[str, list[str]]:
        tries: list[str] = []
        restarts: list[int] = []

        async def attempt() -> str:
            tries.append("try")
            if len(tries) < 3:
                raise S3Unavailable("reset")
            return "done"

        result = await retry_while_s3_fails(
            attempt,
            object_url="s3://b/k",
            within=None,
            on_restart=lambda: restarts.append(1),
            backoff=Backoff(0.001, 0.002),
        )
        assert len(restarts) == 2
        return result, tries

    result, tries = asyncio.run(scenario())
    assert (result, len(tries)) == ("done", 3)

    async def never() -> None:
        raise S3Unavailable("reset")

    with pytest.raises(S3Unavailable, match=r"S3 unavailable: s3://b/k could not be read"):
        asyncio.run(
            retry_while_s3_fails(
                never, object_url="s3://b/k", within=0.05, backoff=Backoff(0.01, 0.01)
            )
        )
