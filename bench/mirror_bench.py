"""The DynamoDB mirror's items/s for changed states, beside a naive one-UpdateItem-per-record
loop on the same endpoint in the same run (issue #4: target >= 5x the naive loop)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from aiokafka.structs import ConsumerRecord, TopicPartition

from vfstream.aws import aws_client
from vfstream.domain.fans import Envelope, encode_envelope
from vfstream.domain.mirror import fan_item
from vfstream.domain.records import EventPreference
from vfstream.domain.state import VerificationState, fan_state_of
from vfstream.settings import Settings
from vfstream.sinks.clients.dynamo_batch import DynamoBatchWriter, serialise_item
from vfstream.sinks.relays.dynamo_mirror import DynamoMirror

CHANGED_STATES = 200_000
NAIVE_SAMPLE = 3_000  # the naive loop is timed on a sample: it would take ~20 min for 200k
BATCH = 5_000  # changelog records per mirror batch, as the relay hands them over


def _state(number: int, version: int) -> VerificationState:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return VerificationState(
        campaignId="cbench",
        globalUserId=f"{number:010x}",
        memberId=f"m{number}",
        score=0.5,
        localFanscore=0.4,
        isVerified=number % 3 != 0,
        verdict=number % 5 == 0,
        codes=["a"],
        tags=["t"],
        events=[EventPreference(eventId="ev10", market="chicago")],
        scoredAt=now,
        updated=now,
        version=version,
    )


def _records(settings: Settings, start: int, count: int, version: int) -> list[ConsumerRecord]:
    topic = f"{settings.app_id}-fan-state-changelog"
    out = []
    for offset, number in enumerate(range(start, start + count)):
        state = _state(number, version)
        key = f"cbench:{state.globalUserId}".encode()
        body = encode_envelope(Envelope(offset, (0, 0, 0), fan_state_of(state)))
        out.append(ConsumerRecord(topic, 0, offset, 0, 0, key, body, None, len(key), 0, ()))
    return out


async def _mirror_rate(settings: Settings) -> float:
    mirror = DynamoMirror(settings)
    tp = TopicPartition(f"{settings.app_id}-fan-state-changelog", 0)
    async with aws_client(settings, "dynamodb") as dynamo:
        writer = DynamoBatchWriter(dynamo, settings.demand_table)
        started = time.monotonic()
        for start in range(0, CHANGED_STATES, BATCH):
            batch = {tp: _records(settings, start, BATCH, version=2)}
            await mirror.mirror(dynamo, writer, batch, mirror.relay)
        seconds = time.monotonic() - started
    return CHANGED_STATES / seconds


async def _naive_rate(settings: Settings) -> float:
    """One conditional UpdateItem per record, the way a simple worker would write."""
    async with aws_client(settings, "dynamodb") as dynamo:
        started = time.monotonic()
        for number in range(CHANGED_STATES, CHANGED_STATES + NAIVE_SAMPLE):
            item = serialise_item(fan_item(fan_state_of(_state(number, 2))).attributes)
            key = {"PK": item.pop("PK"), "SK": item.pop("SK")}
            names = {f"#a{i}": name for i, name in enumerate(item)}
            values = {f":v{i}": value for i, value in enumerate(item.values())}
            await dynamo.update_item(
                TableName=settings.demand_table,
                Key=key,
                UpdateExpression="SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(item))),
                ConditionExpression="attribute_not_exists(#ver) OR #ver < :newver",
                ExpressionAttributeNames={**names, "#ver": "version"},
                ExpressionAttributeValues={**values, ":newver": {"N": "2"}},
            )
        seconds = time.monotonic() - started
    return NAIVE_SAMPLE / seconds


def mirror_benchmark(settings: Settings) -> dict[str, object]:
    mirror = asyncio.run(_mirror_rate(settings))
    naive = asyncio.run(_naive_rate(settings))
    return {
        "mirror_items_per_s": round(mirror),
        "naive_update_item_per_s": round(naive),
        "mirror_to_naive_ratio": round(mirror / naive, 1),
    }
