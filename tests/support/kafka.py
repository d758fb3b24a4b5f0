"""Reading what the pipeline committed to Kafka (shared with the reconcile command)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vfstream.domain.batches import decode_batch
from vfstream.domain.keys import fan_key
from vfstream.kafka.reads import latest_values, read_committed
from vfstream.settings import Settings

__all__ = ["CommittedRecord", "latest_values", "read_committed", "score_records"]


@dataclass(frozen=True)
class CommittedRecord:
    """One score record of the score-record topic: where its batch sits, and the record."""

    partition: int
    offset: int
    index: int
    record: dict[str, Any]

    @property
    def key(self) -> str:
        return fan_key(self.record["campaignId"], self.record["globalUserId"])


async def score_records(settings: Settings) -> list[CommittedRecord]:
    """Every committed score record, batches opened, in order per partition."""
    out: list[CommittedRecord] = []
    for message in await read_committed(settings, settings.score_records_topic):
        for index, record in enumerate(decode_batch(message.value)):
            out.append(CommittedRecord(message.partition, message.offset, index, record))
    return out
