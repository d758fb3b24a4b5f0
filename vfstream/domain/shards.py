"""Which shards of a resharded Kinesis stream may be read now (SPEC 2.3). No I/O here.

A split closes a shard and opens two children; a merge closes two adjacent shards and opens
one child with a ``ParentShardId`` and an ``AdjacentParentShardId``. A partition key's
records move from parent to child at the reshard, so a child read before its parents are
drained could deliver a fan's newer record before an older one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True)
class ShardInfo:
    """One entry of a ListShards answer, as much of it as ordering needs."""

    shard_id: str
    parents: tuple[str, ...] = ()
    starting_sequence: str | None = None
    # Set once the shard is closed: no record of it can have a higher sequence number.
    ending_sequence: str | None = None

    @property
    def closed(self) -> bool:
        return self.ending_sequence is not None

    @classmethod
    def from_listing(cls, entry: Mapping[str, Any]) -> ShardInfo:
        parents = tuple(
            parent
            for parent in (entry.get("ParentShardId"), entry.get("AdjacentParentShardId"))
            if parent
        )
        sequence_range = entry.get("SequenceNumberRange") or {}
        return cls(
            shard_id=entry["ShardId"],
            parents=parents,
            starting_sequence=sequence_range.get("StartingSequenceNumber"),
            ending_sequence=sequence_range.get("EndingSequenceNumber"),
        )


def readable_shards(shards: Iterable[ShardInfo], finished: Set[str]) -> list[str]:
    """Shards that may be read now, in shard-id order.

    A shard may be read when it is not finished and each of its parents is finished or no
    longer listed: a parent past the retention period has no records left to come first.
    """
    shards = list(shards)
    listed = {shard.shard_id for shard in shards}
    return sorted(
        shard.shard_id
        for shard in shards
        if shard.shard_id not in finished
        and all(parent in finished or parent not in listed for parent in shard.parents)
    )


def waiting_shards(shards: Iterable[ShardInfo], finished: Set[str]) -> list[str]:
    """Shards not finished and not yet readable: children of parents still being read."""
    shards = list(shards)
    readable = set(readable_shards(shards, finished))
    return sorted(
        shard.shard_id
        for shard in shards
        if shard.shard_id not in finished and shard.shard_id not in readable
    )


def drained_by_position(shard: ShardInfo, position: str | None) -> bool:
    """Whether a closed shard has nothing left after ``position``.

    ``position`` is the last sequence number read from the shard, taken just after a read
    from there, or None when a read from its start found nothing. Kinesis also says a shard
    is drained by answering GetRecords without a NextShardIterator; this is the same fact
    from ListShards, and the only one an emulator that never ends an iterator (moto) gives.
    """
    if shard.ending_sequence is None:
        return False
    ending = int(shard.ending_sequence)
    if position is not None:
        return int(position) >= ending
    # Nothing was ever read: only a shard closed without a sequence number past its start
    # can be empty for good.
    return shard.starting_sequence is not None and ending <= int(shard.starting_sequence)


class ShardCheckpoint(BaseModel):
    """How far one shard has been copied: the value of its key in the checkpoints topic."""

    model_config = ConfigDict(frozen=True)

    stream: str
    shardId: str
    # The last record copied; None for a shard finished without ever holding a record.
    sequenceNumber: str | None = None
    finished: bool = False
    updated: datetime

    @property
    def key(self) -> str:
        return checkpoint_key(self.stream, self.shardId)

    def to_json(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self)


def checkpoint_key(stream: str, shard_id: str) -> str:
    return f"{stream}/{shard_id}"
