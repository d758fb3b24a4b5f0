"""Kafka topics the pipeline owns, created up front with the configured partition count.

Faust creates its own internal topics (changelogs, repartitions); the score-record topic
must exist with the same partition count as the state table's changelog before any
producer touches it, or an auto-created one-partition topic breaks co-partitioning.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import murmur2

from vfstream.settings import Settings


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a key (murmur2, as producers use)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def changelog_topic(settings: Settings, table: str) -> str:
    """The changelog Faust keeps for one of the worker's tables."""
    return f"{settings.app_id}-{table}-changelog"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def pipeline_topics(settings: Settings) -> list[TopicSpec]:
    return [
        TopicSpec(settings.score_records_topic, settings.topic_partitions, {}),
        TopicSpec(settings.dead_letter_topic, settings.topic_partitions, {}),
        TopicSpec(settings.ingested_files_topic, 1, {"cleanup.policy": "compact"}),
        TopicSpec(settings.ingest_inflight_topic, 1, {"cleanup.policy": "compact"}),
        TopicSpec(settings.partials_topic, settings.topic_partitions, {}),
        TopicSpec(settings.reports_topic, settings.topic_partitions, {}),
        # One partition: the bridge reads all of it on start, and it holds one key per shard.
        TopicSpec(settings.bridge_checkpoints_topic, 1, {"cleanup.policy": "compact"}),
    ]


async def ensure_topics(settings: Settings) -> list[str]:
    """Create missing pipeline topics; returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [spec for spec in pipeline_topics(settings) if spec.name not in existing]
        if not wanted:
            return []
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(
                [
                    NewTopic(
                        spec.name,
                        spec.partitions,
                        settings.topic_replication_factor,
                        topic_configs=spec.config,
                    )
                    for spec in wanted
                ]
            )
        return [spec.name for spec in wanted]
    finally:
        await admin.close()


async def partition_count(settings: Settings, topic: str) -> int:
    """How many partitions ``topic`` has; 0 when it does not exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    for entry in described:
        if entry.get("topic") == topic and entry.get("error_code", 0) == 0:
            return len(entry.get("partitions", []))
    return 0
