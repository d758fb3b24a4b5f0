"""What every file ingestion reports: the object, its campaign, how it ended and how long
it took. The scoring and fanlist ingestors add their own counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class FileSummary:
    bucket: str
    key: str
    etag: str | None = None
    campaignId: str | None = None
    status: str = "pending"
    error: str | None = None
    seconds: float = 0.0

    @property
    def settled(self) -> bool:
        """Done with, as far as the notification naming the file is concerned: ingested,
        skipped, or refused for a reason in the file. Not while another run could do more."""
        return self.status not in ("pending", "incomplete")

    def file_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "etag": self.etag,
            "campaignId": self.campaignId,
            "status": self.status,
            "error": self.error,
            "seconds": round(self.seconds, 3),
        }
