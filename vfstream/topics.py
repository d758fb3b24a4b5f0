"""Kafka topics the pipeline owns, created up front with the configured partition count.

Faust creates its own internal topics (changelogs, repartitions); the score-record topic
must exist with the same partition count as the state table's changelog before any
producer touches it, or an auto-created one-partition topic breaks co-partitioning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError, TopicAuthorizationFailedError

from vfstream import kafka
from vfstream.errors import DependencyUnavailable
from vfstream.kafka.access import denied
from vfstream.settings import Settings


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
        # Stamped by the broker: fencing measures silence on its clock alone (inflight.py).
        TopicSpec(
            settings.ingest_inflight_topic,
            1,
            # Heartbeats and probes overwrite their keys every few seconds; compaction only
            # cleans rolled segments, so roll one an hour (Kafka's default: a week or 1 GiB).
            {
                "cleanup.policy": "compact",
                "message.timestamp.type": "LogAppendTime",
                "segment.ms": "3600000",
            },
        ),
        TopicSpec(settings.partials_topic, settings.topic_partitions, {}),
        TopicSpec(settings.reports_topic, settings.topic_partitions, {}),
        # One partition: the bridge reads all of it on start, and it holds one key per shard.
        TopicSpec(settings.bridge_checkpoints_topic, 1, {"cleanup.policy": "compact"}),
    ]


async def ensure_topics(settings: Settings) -> list[str]:
    """Create missing pipeline topics; returns the names created."""
    admin = kafka.admin(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [spec for spec in pipeline_topics(settings) if spec.name not in existing]
        if not wanted:
            return []
        response = await admin.create_topics(
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
        for name, code, message in topic_errors(response):
            if code == TopicAuthorizationFailedError.errno:
                # A topic the principal may not even see is missing from list_topics too.
                raise denied(settings, "topic", name, "Create (or Describe)")
            if code not in (0, TopicAlreadyExistsError.errno):
                raise DependencyUnavailable(f"creating topic {name!r} failed: {code} {message}")
        return [spec.name for spec in wanted]
    finally:
        await admin.close()


def topic_errors(response: Any) -> list[tuple[str, int, str]]:
    """(topic, error code, message) of each topic in a CreateTopics response."""
    found = response.to_object().get("topic_errors") or response.to_object().get("topics", [])
    return [
        (entry.get("topic") or entry.get("name"), entry["error_code"], entry.get("error_message"))
        for entry in found
    ]


async def partition_counts(settings: Settings, topics: list[str]) -> dict[str, int]:
    """How many partitions each topic has; 0 when it does not exist. A topic the principal
    may not see is refused (``AccessRefused``), not "missing": an unauthorised consumer
    would otherwise wait on it silently, logging an error a few times a second."""
    admin = kafka.admin(settings)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    counts = dict.fromkeys(topics, 0)
    for entry in described:
        name = entry.get("topic")
        if name not in counts:
            continue
        if entry.get("error_code") == TopicAuthorizationFailedError.errno:
            raise denied(settings, "topic", name, "Describe")
        if entry.get("error_code", 0) == 0:
            counts[name] = len(entry.get("partitions", []))
    return counts


async def partition_count(settings: Settings, topic: str) -> int:
    """How many partitions ``topic`` has; 0 when it does not exist."""
    return (await partition_counts(settings, [topic]))[topic]
