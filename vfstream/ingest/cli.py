"""``vfstream ingest s3://bucket/key [--force]``: one file, a JSON summary on stdout."""

from __future__ import annotations

import asyncio
import sys
from urllib.parse import urlparse

import orjson

from vfstream.ingest.ingestor import ScoringFileIngestor
from vfstream.settings import get_settings


def parse_s3_url(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        raise ValueError(f"expected s3://<bucket>/<key>, got {url!r}")
    return parsed.netloc, parsed.path.lstrip("/")


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
