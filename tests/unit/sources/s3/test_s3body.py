"""The blocking S3 body the parser thread reads (issue #12: reads past the end)."""

from __future__ import annotations

import asyncio
import gzip
import io
import threading

import pytest

from vfstream.sources.s3.s3body import BlockingS3Body, FileTooLarge, open_text


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
