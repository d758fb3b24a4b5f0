"""``vfstream ingest s3://bucket/key [--force]`` and ``vfstream fanlist s3://bucket/key``:
one file, a JSON summary on stdout."""

from __future__ import annotations

import asyncio
import sys

import orjson

from vfstream.ingest.ingestor import ScoringFileIngestor
from vfstream.settings import get_settings


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


def run_ingest(url: str, *, force: bool = False, progress: bool = True) -> int:
    try:
        bucket, key = parse_s3_url(url)
    except ValueError as exc:
        print(f"vfstream ingest: {exc}", file=sys.stderr)
        return 2
    ingestor = ScoringFileIngestor(get_settings(), progress=progress)
    summary = asyncio.run(ingestor.ingest(bucket, key, force=force))
    sys.stdout.write(orjson.dumps(summary.as_dict()).decode() + "\n")
    if summary.status == "failed":
        print(f"vfstream ingest: {summary.error}", file=sys.stderr)
        return 1
    return 0


# Exit statuses of `vfstream fanlist`, so a script can tell a bad file from a partial store.
EXIT_STORED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3


def run_fanlist(url: str) -> int:
    from vfstream.ingest.fanlist import FanlistIngestor

    try:
        bucket, key = parse_s3_url(url)
    except ValueError as exc:
        print(f"vfstream fanlist: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        summary = asyncio.run(FanlistIngestor(get_settings()).ingest(bucket, key))
    except Exception as exc:
        # S3, DynamoDB or Kafka unreachable: nothing to summarise, only the cause to name.
        print(f"vfstream fanlist: could not process {url}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    sys.stdout.write(orjson.dumps(summary.as_dict()).decode() + "\n")
    if summary.status == "failed":
        print(f"vfstream fanlist: {summary.error}", file=sys.stderr)
        return EXIT_FAILED
    if summary.status == "incomplete":
        counts = summary.counts
        print(
            f"vfstream fanlist: {counts.dynamo.failed} item(s) not stored in DynamoDB and "
            f"{counts.stream.failed} record(s) not streamed; see the log for each",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    return EXIT_STORED
