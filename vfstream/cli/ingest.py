"""``vfstream ingest s3://bucket/key [--force]`` and ``vfstream fanlist s3://bucket/key``:
one file, a JSON summary on stdout."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import orjson
from aiokafka.errors import KafkaError
from botocore.exceptions import BotoCoreError

from vfstream.cli import exit_codes
from vfstream.errors import DependencyUnavailable, Interrupted
from vfstream.settings import Settings
from vfstream.sources.s3.ingestor import ScoringFileIngestor

T = TypeVar("T")


def parse_s3_url(url: str) -> tuple[str, str]:
    """Bucket and key of ``s3://<bucket>/<key>``, the key taken verbatim.

    Not a URL parser: an S3 key may hold ``#``, ``?`` and ``%``, which a URL would read as a
    fragment, a query or an escape (``Tour#1`` was cut at ``#``).
    """
    scheme, separator, rest = url.partition("://")
    bucket, _, key = rest.partition("/")
    if scheme != "s3" or not separator or not bucket or not key.strip("/"):
        raise ValueError(f"expected s3://<bucket>/<key>, got {url!r}")
    return bucket, key.lstrip("/")


async def _until_signalled(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work``; SIGTERM (what a pod gets) cancels it like Ctrl-C does, so the ingestor
    aborts its transaction instead of leaving it open for every worker to wait behind."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def stop(signum: int) -> None:
        received.append(signum)
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, stop, signal.SIGTERM)
    try:
        return await task
    except asyncio.CancelledError:
        if received:
            raise Interrupted(received[0]) from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def run_ingest(settings: Settings, url: str, *, force: bool = False, progress: bool = True) -> int:
    try:
        bucket, key = parse_s3_url(url)
    except ValueError as exc:
        print(f"vfstream ingest: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    ingestor = ScoringFileIngestor(settings, progress=progress)
    try:
        summary = asyncio.run(_until_signalled(ingestor.ingest(bucket, key, force=force)))
    except (Interrupted, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        print(
            f"vfstream ingest: stopped by {signal.Signals(signum).name}; the file's transaction "
            "was aborted and nothing of it was ingested",
            file=sys.stderr,
        )
        return exit_codes.SIGNALLED_BASE + signum
    except (OSError, BotoCoreError, KafkaError, DependencyUnavailable) as exc:
        # S3 or Kafka unreachable (S3 past VFSTREAM_S3_RETRY_SECONDS): nothing to
        # summarise, only the cause to name.
        print(f"vfstream ingest: could not ingest {url}: {exc}", file=sys.stderr)
        return exit_codes.UNAVAILABLE
    sys.stdout.write(orjson.dumps(summary.as_dict()).decode() + "\n")
    if summary.status == "failed":
        print(f"vfstream ingest: {summary.error}", file=sys.stderr)
        return exit_codes.FAILED
    return exit_codes.OK


def run_fanlist(settings: Settings, url: str) -> int:
    from vfstream.sources.s3.fanlist_direct import FanlistIngestor

    try:
        bucket, key = parse_s3_url(url)
    except ValueError as exc:
        print(f"vfstream fanlist: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    try:
        summary = asyncio.run(FanlistIngestor(settings).ingest(bucket, key))
    except Exception as exc:
        # S3, DynamoDB or Kafka unreachable: nothing to summarise, only the cause to name.
        print(f"vfstream fanlist: could not process {url}: {exc}", file=sys.stderr)
        return exit_codes.UNAVAILABLE
    sys.stdout.write(orjson.dumps(summary.as_dict()).decode() + "\n")
    if summary.status == "failed":
        print(f"vfstream fanlist: {summary.error}", file=sys.stderr)
        return exit_codes.FAILED
    if summary.status == "incomplete":
        counts = summary.counts
        print(
            f"vfstream fanlist: {counts.dynamo.failed} item(s) not stored in DynamoDB and "
            f"{counts.stream.failed} record(s) not streamed; see the log for each",
            file=sys.stderr,
        )
        return exit_codes.INCOMPLETE
    return exit_codes.OK
