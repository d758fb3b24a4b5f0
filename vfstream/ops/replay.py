"""``vfstream replay``: move the worker group's committed offsets, like Kafka's reset tool.

Workers must be stopped: committing offsets for a group with live members would be
overwritten by them (and Kafka refuses it). Replaying keeps counts exact because the state
remembers the offset of every fan's last change (see ``vfstream.domain.ledger``): records at
or below it are ``unchanged``. ``--rebuild`` instead forgets all state and recomputes it.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import GroupCoordinatorNotAvailableError
from aiokafka.structs import OffsetAndMetadata

from vfstream import kafka
from vfstream.domain.keys import partition_for
from vfstream.domain.records import parse_iso_datetime
from vfstream.errors import OperatorError
from vfstream.retry import Backoff, retrying
from vfstream.settings import Settings
from vfstream.stream.layout import Table, changelog_topic, local_table_stores
from vfstream.topics import ensure_topics, partition_count

COORDINATOR_WAIT_SECONDS = 30.0
# The tables a rebuild recomputes; the reporter's (its memory of reports sent) is kept.
CHANGELOG_TABLES = (Table.FAN_STATE, Table.CAMPAIGN_COUNTS, Table.COUNT_WINDOWS)


class ReplayError(OperatorError):
    """The offsets cannot be moved (group active, unknown topic, bad target)."""


@dataclass(frozen=True)
class ReplayTarget:
    earliest: bool = False
    moment: datetime | None = None
    offset: int | None = None

    @classmethod
    def parse(cls, text: str) -> ReplayTarget:
        value = text.strip()
        if value.lower() == "earliest":
            return cls(earliest=True)
        if value.isdigit():
            return cls(offset=int(value))
        try:
            return cls(moment=parse_iso_datetime(value))
        except ValueError:
            raise ReplayError(
                f"--to takes earliest, an ISO datetime or an offset; got {text!r}"
            ) from None


def changelog_topics(settings: Settings) -> list[str]:
    return [changelog_topic(settings, table) for table in CHANGELOG_TABLES]


async def group_members(settings: Settings) -> tuple[str, int]:
    admin = kafka.admin(settings)
    await admin.start()
    try:
        # A broker that never had a consumer group creates its offsets topic on the first
        # lookup and answers "coordinator not available" until that is done.
        async for attempt in retrying(
            GroupCoordinatorNotAvailableError,
            within=COORDINATOR_WAIT_SECONDS,
            backoff=Backoff(0.2, 2.0),
        ):
            with attempt:
                described = await admin.describe_consumer_groups([settings.app_id])
    finally:
        await admin.close()
    for response in described:
        for group in _groups_of(response):
            return str(group[2]), len(group[5])
    return "Dead", 0


def _groups_of(response: Any) -> list[Any]:
    groups = response.groups if hasattr(response, "groups") else response.get("groups", [])
    return list(groups)


async def _target_offsets(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], target: ReplayTarget
) -> dict[TopicPartition, int]:
    begin = await consumer.beginning_offsets(partitions)
    end = await consumer.end_offsets(partitions)
    if target.earliest:
        return dict(begin)
    if target.offset is not None:
        return {tp: min(max(target.offset, begin[tp]), end[tp]) for tp in partitions}
    assert target.moment is not None
    stamp = int(target.moment.timestamp() * 1000)
    found = await consumer.offsets_for_times({tp: stamp for tp in partitions})
    return {tp: (found[tp].offset if found.get(tp) else end[tp]) for tp in partitions}


async def replay(settings: Settings, to: str, topic: str | None = None) -> dict[str, Any]:
    target = ReplayTarget.parse(to)
    state, members = await group_members(settings)
    if members:
        raise ReplayError(
            f"consumer group {settings.app_id!r} has {members} live member(s) (state {state}); "
            "stop every worker first"
        )
    source = topic or settings.score_records_topic
    count = await partition_count(settings, source)
    if count == 0:
        raise ReplayError(f"topic {source!r} does not exist")
    partitions = [TopicPartition(source, p) for p in range(count)]
    consumer = kafka.consumer(
        settings,
        group_id=settings.app_id,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        previous = {tp: await consumer.committed(tp) for tp in partitions}
        offsets = await _target_offsets(consumer, partitions, target)
        await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()})
    finally:
        await consumer.stop()
    return {
        "group": settings.app_id,
        "topic": source,
        "partitions": [
            {"partition": tp.partition, "from": previous[tp], "to": offsets[tp]}
            for tp in partitions
        ],
    }


async def rebuild(settings: Settings) -> dict[str, Any]:
    """Forget all derived state, then replay every score record from the beginning."""
    state, members = await group_members(settings)
    if members:
        raise ReplayError(f"consumer group {settings.app_id!r} is active (state {state})")
    doomed = [*changelog_topics(settings), settings.partials_topic]
    admin = kafka.admin(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        present = [name for name in doomed if name in existing]
        if present:
            await admin.delete_topics(present)
        for _ in range(100):  # deletion is asynchronous on the broker
            if not set(present) & set(await admin.list_topics()):
                break
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    await ensure_topics(settings)
    wiped = wipe_local_stores(settings)
    announced = await reannounce_runs(settings)
    moved = await replay(settings, "earliest")
    return {
        "deleted": present,
        "wipedStores": wiped,
        "reannouncedRuns": announced,
        **moved,
    }


def wipe_local_stores(settings: Settings) -> list[str]:
    """Delete this machine's RocksDB stores of the rebuilt tables, and only those.

    The reporter's store stays: it is not rebuilt, and keeping it spares the start a restore.
    """
    wiped: list[str] = []
    for path in local_table_stores(settings, CHANGELOG_TABLES):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        wiped.append(path.name)
    return wiped


async def reannounce_runs(settings: Settings) -> int:
    """Announce every committed file's run again on the new partials topic.

    The announcements went down with the old topic; without them rebuilt runs would never
    settle. The reporter's memory (its own changelog, kept) stops a second report.
    """
    from vfstream.sources.s3.ingested import IngestedFiles, run_announcement

    markers = await IngestedFiles(settings).load()
    messages = [m for m in (run_announcement(marker) for marker in markers.values()) if m]
    producer = kafka.producer(settings, acks="all")
    await producer.start()
    try:
        for key, value in messages:
            partition = partition_for(key, settings.topic_partitions)
            await producer.send(settings.partials_topic, value, key=key, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()
    return len(messages)
