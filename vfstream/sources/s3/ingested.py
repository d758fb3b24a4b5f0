"""The bookkeeping of ingested scoring files: what an ingestion counts (``IngestSummary``),
which becomes the file's "done" marker in the compacted ``vf-ingested-files`` topic, keyed
``file_id`` (``s3://bucket/key@etag``); the registry of those markers (``IngestedFiles``),
which makes a second ingestion of a file a no-op; and the run a marker announces to its
campaign's tally (``run_announcement``), in the file's transaction and again by
``replay --rebuild``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from vfstream.domain.reports import RunAnnouncement
from vfstream.domain.tally import announce_message
from vfstream.kafka.reads import latest_values
from vfstream.settings import Settings
from vfstream.sources.s3.summary import FileSummary


@dataclass
class IngestSummary(FileSummary):
    status: str = "pending"  # ingested | skipped | failed
    rows_in: int = 0
    valid: int = 0
    invalid: int = 0
    produced: int = 0
    forced: bool = False
    runId: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    def restart(self) -> None:
        """The counts of an attempt whose transaction was aborted: nothing of them counts."""
        self.status = "pending"
        self.rows_in = self.valid = self.invalid = self.produced = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.file_dict(),
            "in": self.rows_in,
            "valid": self.valid,
            "invalid": self.invalid,
            "produced": self.produced,
            "forced": self.forced,
            "runId": self.runId,
        }


def run_announcement(marker: dict[str, Any]) -> tuple[bytes, bytes] | None:
    """The partials-topic message announcing a committed file's run to its campaign's tally."""
    run = RunAnnouncement.from_marker(marker)
    if run is None or not run.campaignId:
        return None
    return run.campaignId.encode(), announce_message(run)


def file_id(bucket: str, key: str, etag: str) -> str:
    return f"s3://{bucket}/{key}@{etag}"


class IngestedFiles:
    """The compacted registry of committed files, read with read_committed isolation."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def load(self) -> dict[str, dict[str, Any]]:
        values = await latest_values(self.settings, self.settings.ingested_files_topic)
        return {key.decode(): orjson.loads(value) for key, (_, value) in values.items()}
