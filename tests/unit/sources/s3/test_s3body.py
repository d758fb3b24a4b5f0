"""The blocking S3 body the parser thread reads (issue #12: reads past the end)."""

from __future__ import annotations

import asyncio
import gzip
import io
import threading
from typing import Any

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
