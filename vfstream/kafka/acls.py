"""What a secured cluster must grant vfstream's principal, and nothing more.

``required_acls(settings)`` is the table README "Connecting to a production cluster" shows;
the secured local stack grants exactly these to its ``vfstream`` principal, so the suite
proves the list is enough. ``grant`` creates ACLs through the Kafka protocol (CreateAcls),
for the local stack and for operators who want to apply the list with a super user.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import IntEnum

from vfstream.settings import Settings
from vfstream.topics import pipeline_topics


class ResourceType(IntEnum):
    # Kafka's protocol values (org.apache.kafka.common.resource.ResourceType).
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class PatternType(IntEnum):
    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):
    # org.apache.kafka.common.acl.AclOperation
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    DESCRIBE = 8
    DESCRIBE_CONFIGS = 10
    IDEMPOTENT_WRITE = 12

    @property
    def title(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("_"))


ALLOW = 3
CLUSTER_NAME = "kafka-cluster"
# A shared prefix shorter than this is no prefix: the topics get one literal rule each.
MIN_TOPIC_PREFIX = 3


@dataclass(frozen=True)
class AclRule:
    resource: ResourceType
    pattern: PatternType
    name: str
    operations: tuple[Operation, ...]
    why: str


def shared_topic_prefix(names: list[str]) -> str:
    """The longest prefix every name shares, cut after its last ``-``, ``.`` or ``_``."""
    # Character by character on purpose: topic names are not paths.
    prefix = os.path.commonprefix(names)  # noqa: RUF071
    cut = max(prefix.rfind(sep) for sep in "-._")
    return prefix[: cut + 1]


def required_acls(settings: Settings) -> list[AclRule]:
    """Every ACL vfstream's principal needs, for these settings' names."""
    app = settings.app_id
    topics = [spec.name for spec in pipeline_topics(settings)]
    pipeline_ops = (
        Operation.DESCRIBE,
        Operation.READ,
        Operation.WRITE,
        Operation.CREATE,
        Operation.DESCRIBE_CONFIGS,
    )
    why_pipeline = "the pipeline's topics: created at start, read and written"
    prefix = shared_topic_prefix(topics)
    if len(prefix) >= MIN_TOPIC_PREFIX:
        rules = [
            AclRule(ResourceType.TOPIC, PatternType.PREFIXED, prefix, pipeline_ops, why_pipeline)
        ]
    else:
        rules = [
            AclRule(ResourceType.TOPIC, PatternType.LITERAL, name, pipeline_ops, why_pipeline)
            for name in topics
        ]
    return [
        *rules,
        AclRule(
            ResourceType.TOPIC,
            PatternType.LITERAL,
            settings.partials_topic,
            (Operation.DELETE,),
            "replay --rebuild deletes the partials topic",
        ),
        AclRule(
            ResourceType.TOPIC,
            PatternType.PREFIXED,
            f"{app}-",
            (*pipeline_ops, Operation.DELETE),
            "Faust's changelog and leader topics; replay --rebuild deletes the changelogs",
        ),
        AclRule(
            ResourceType.GROUP,
            PatternType.PREFIXED,
            app,
            (Operation.READ, Operation.DESCRIBE),
            "the worker group and each relay's group; status and replay describe them",
        ),
        AclRule(
            ResourceType.TRANSACTIONAL_ID,
            PatternType.PREFIXED,
            f"{app}-",
            (Operation.WRITE, Operation.DESCRIBE),
            "a transaction per ingested file and per bridge stream",
        ),
        AclRule(
            ResourceType.CLUSTER,
            PatternType.LITERAL,
            CLUSTER_NAME,
            (Operation.IDEMPOTENT_WRITE,),
            "idempotent producers (the changelog writer, the in-flight announcer)",
        ),
    ]


def acl_table(rules: list[AclRule]) -> str:
    """The rules as a Markdown table (README "Connecting to a production cluster")."""
    lines = ["| resource | pattern | name | operations | why |", "|---|---|---|---|---|"]
    for rule in rules:
        ops = ", ".join(op.title for op in rule.operations)
        resource = rule.resource.name.title().replace("_", "")
        lines.append(
            f"| {resource} | {rule.pattern.name.title()} | `{rule.name}` | {ops} | {rule.why} |"
        )
    return "\n".join(lines)


async def grant(admin_settings: Settings, principal: str, rules: list[AclRule]) -> int:
    """Create ``rules`` for ``principal`` (``User:<name>``), connecting as a principal
    allowed to alter ACLs. Creating an ACL that exists is a no-op; returns how many were
    asked for."""
    from aiokafka.protocol.admin import CreateAclsRequest

    from vfstream.kafka.clients import protocol_client

    client = await protocol_client(admin_settings)
    try:
        node = client.get_random_node()
        count = 0
        for rule in rules:
            for operation in rule.operations:
                request = CreateAclsRequest(
                    int(rule.resource),
                    rule.name,
                    int(rule.pattern),
                    principal,
                    "*",
                    int(operation),
                    ALLOW,
                )
                response = await client.send(node, request)
                for error_code, message in response.creation_responses:
                    if error_code:
                        raise RuntimeError(
                            f"CreateAcls {rule.resource.name} {rule.name} {operation.name} "
                            f"for {principal}: error {error_code} {message}"
                        )
                count += 1
        return count
    finally:
        await client.close()
