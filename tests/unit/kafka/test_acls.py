"""What a secured cluster must grant vfstream's principal, derived from the settings."""

from __future__ import annotations

from pathlib import Path

from vfstream.kafka.acls import (
    Operation,
    PatternType,
    ResourceType,
    acl_table,
    required_acls,
    shared_topic_prefix,
)
from vfstream.settings import Settings
from vfstream.topics import pipeline_topics

README = Path(__file__).parents[3] / "README.md"


def covers(settings: Settings, resource: ResourceType, name: str, operation: Operation) -> bool:
    for rule in required_acls(settings):
        if rule.resource != resource or operation not in rule.operations:
            continue
        literal = rule.pattern == PatternType.LITERAL and rule.name == name
        if literal or (rule.pattern == PatternType.PREFIXED and name.startswith(rule.name)):
            return True
    return False


def test_the_shared_prefix_ends_at_a_separator() -> None:
    assert shared_topic_prefix(["vf-a", "vf-b-c"]) == "vf-"
    assert shared_topic_prefix(["team.vf.scores", "team.vf.dead"]) == "team.vf."
    assert shared_topic_prefix(["scores", "scorers"]) == ""


def test_every_topic_group_and_transactional_id_vfstream_uses_is_granted() -> None:
    settings = Settings()
    app = settings.app_id

    for spec in pipeline_topics(settings):
        for operation in (Operation.DESCRIBE, Operation.READ, Operation.WRITE, Operation.CREATE):
            assert covers(settings, ResourceType.TOPIC, spec.name, operation), spec.name
    for table in ("fan-state", "campaign-counts", "campaign-count-windows", "slack-reports"):
        changelog = f"{app}-{table}-changelog"
        assert covers(settings, ResourceType.TOPIC, changelog, Operation.WRITE)
        assert covers(settings, ResourceType.TOPIC, changelog, Operation.DELETE)
    assert covers(settings, ResourceType.TOPIC, f"{app}-__assignor-__leader", Operation.CREATE)
    for group in (app, f"{app}-dynamo-mirror"):
        assert covers(settings, ResourceType.GROUP, group, Operation.READ)
    for transactional in (f"{app}-ingest-0a1b", f"{app}-bridge-vf-score-feed"):
        assert covers(settings, ResourceType.TRANSACTIONAL_ID, transactional, Operation.WRITE)
    assert covers(settings, ResourceType.CLUSTER, "kafka-cluster", Operation.IDEMPOTENT_WRITE)


def test_nothing_outside_vfstreams_names_is_granted() -> None:
    settings = Settings()

    assert not covers(settings, ResourceType.TOPIC, "payments", Operation.READ)
    assert not covers(settings, ResourceType.TOPIC, "__consumer_offsets", Operation.WRITE)
    assert not covers(settings, ResourceType.TOPIC, settings.score_records_topic, Operation.DELETE)
    assert not covers(settings, ResourceType.GROUP, "billing", Operation.READ)
    assert not covers(settings, ResourceType.CLUSTER, "kafka-cluster", Operation.CREATE)


def test_topics_without_a_shared_prefix_get_one_literal_rule_each() -> None:
    settings = Settings(
        score_records_topic="scores",
        dead_letter_topic="refused",
        ingested_files_topic="files",
        ingest_inflight_topic="inflight",
        partials_topic="partials",
        reports_topic="reports",
        bridge_checkpoints_topic="checkpoints",
    )

    assert covers(settings, ResourceType.TOPIC, "scores", Operation.WRITE)
    assert not covers(settings, ResourceType.TOPIC, "scoresheet", Operation.WRITE)


def test_the_readme_shows_the_acls_the_code_requires() -> None:
    assert acl_table(required_acls(Settings())) in README.read_text()
