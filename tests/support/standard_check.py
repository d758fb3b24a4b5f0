"""The check every fault scenario ends with (issue #7): counts = the independent truth from
every worker, the changelogs recount to the same numbers, DynamoDB = the state."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
from boto3.dynamodb.types import TypeDeserializer

from tests.support.kafka import score_records
from tests.support.waiting import eventually
from vfstream.aws import aws_client
from vfstream.dev.scenario import wait_for_counts
from vfstream.dev.workers import WorkerProcess, run_cli
from vfstream.domain.ledger import CampaignTotals
from vfstream.kafka.reads import latest_values
from vfstream.ops.reconcile import durable_partials, recount_partials
from vfstream.settings import Settings
from vfstream.stream.layout import Table, changelog_topic

_plain = TypeDeserializer()

SAMPLED_FANS = 60


def plain(item: dict[str, Any]) -> dict[str, Any]:
    return {name: _plain.deserialize(value) for name, value in item.items()}


async def campaign_items(settings: Settings, campaign: str) -> dict[str, dict[str, Any]]:
    """Every mirrored fan item of a campaign, by globalUserId."""
    found: dict[str, dict[str, Any]] = {}
    async with aws_client(settings, "dynamodb") as dynamo:
        paginator = dynamo.get_paginator("scan")
        async for page in paginator.paginate(
            TableName=settings.demand_table,
            FilterExpression="SK = :sk AND begins_with(PK, :fan)",
            ExpressionAttributeValues={":sk": {"S": f"campaign:{campaign}"}, ":fan": {"S": "fan:"}},
        ):
            for item in page["Items"]:
                decoded = plain(item)
                found[decoded["globalUserId"]] = decoded
    return found


async def meta_item(settings: Settings, campaign: str, sk: str) -> dict[str, Any] | None:
    async with aws_client(settings, "dynamodb") as dynamo:
        answer = await dynamo.get_item(
            TableName=settings.demand_table,
            Key={"PK": {"S": f"campaign:{campaign}"}, "SK": {"S": sk}},
        )
    item = answer.get("Item")
    return plain(item) if item else None


async def counts_reach(
    settings: Settings,
    worker: WorkerProcess,
    campaign: str,
    truth: dict[str, int],
    timeout: float,
) -> None:
    """The worker's counts view shows ``truth``; if not in time, fail with the breakdown."""
    try:
        await wait_for_counts(worker, campaign, truth, timeout=timeout)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{await count_breakdown(settings, campaign)}") from None


async def check_everything(
    settings: Settings, survivors: list[WorkerProcess], campaign: str, truth: dict[str, int]
) -> None:
    """Counts exact from every survivor, changelogs recount the same, DynamoDB = state."""
    for worker in survivors:
        await counts_reach(settings, worker, campaign, truth, timeout=600)
    await eventually(
        lambda: asyncio.to_thread(run_cli, settings, "reconcile", "--campaign", campaign),
        lambda done: done.returncode == 0 and orjson.loads(done.stdout)["differences"] == 0,
        timeout=120,
        interval=3,
    )
    meta = await eventually(
        lambda: meta_item(settings, campaign, "meta:counts"),
        lambda m: m is not None and all(m[k] == truth[k] for k in truth),
        timeout=300,
        interval=2,
    )
    assert meta is not None
    fans = truth["verified"] + truth["rejected"]
    items = await eventually(
        lambda: campaign_items(settings, campaign),
        lambda found: len(found) == fans,
        timeout=300,
        interval=3,
    )
    # Every survivor answers any fan (proxied to the owner); the mirror, eventually
    # consistent, catches up with the state of each sampled fan.
    sample = random.Random(1).sample(sorted(items), min(SAMPLED_FANS, len(items)))
    states = {}
    for gid in sample:
        worker = random.choice(survivors)
        status, state = await worker.get_json(f"/campaigns/{campaign}/fans/{gid}")
        assert status == 200, state
        states[gid] = (state["version"], state["isVerified"])

    def lagging(found: dict[str, dict]) -> list[str]:
        return [
            gid
            for gid in sample
            if (found[gid]["version"], found[gid]["isVerified"]) != states[gid]
        ]

    await eventually(
        lambda: campaign_items(settings, campaign), lambda found: not lagging(found), 300, 3
    )


async def count_breakdown(settings: Settings, campaign: str) -> str:
    """Per source partition: the fan states' recount, the partial the verification agent
    last flushed, and the partial the counts table holds. Where a count drifted, this says
    which side and which partition."""
    fans = await latest_values(settings, changelog_topic(settings, Table.FAN_STATE))
    totals_log = await latest_values(settings, changelog_topic(settings, Table.CAMPAIGN_COUNTS))
    recounted = recount_partials(fans).get(campaign, {})
    durable = durable_partials(fans)
    raw_totals = totals_log.get(campaign.encode())
    totals = CampaignTotals.from_bytes(raw_totals[1]) if raw_totals else None
    lines = [f"{campaign}: partition recount | flushed partial | counts table partial"]
    partitions = set(recounted) | {p for c, p in durable if c == campaign}
    partitions |= set(totals.partials) if totals else set()
    for partition in sorted(partitions):
        flushed = durable.get((campaign, partition))
        held = totals.partials.get(partition) if totals else None
        lines.append(
            f"  {partition}: {recounted.get(partition)} | "
            f"{flushed.counts if flushed else None} @{flushed.watermark if flushed else None} | "
            f"{held.counts if held else None} @{held.watermark if held else None}"
        )
    lines.extend(await absent_fans(settings, campaign, set(fans)))
    return "\n".join(lines)


async def absent_fans(settings: Settings, campaign: str, stored: set[bytes]) -> list[str]:
    """Where the records of fans with no state at all sit in the score topic: a range of
    offsets no worker applied points at the rebalance or flush that skipped it."""
    prefix = f"{campaign}:"
    offsets: dict[int, list[int]] = {}
    for found in await score_records(settings):
        if found.key.startswith(prefix) and found.key.encode() not in stored:
            offsets.setdefault(found.partition, []).append(found.offset)
    return [
        f"  absent fans' records in partition {partition}: {len(found)} at offsets "
        + ", ".join(f"{low}..{high}" for low, high in offset_ranges(sorted(found))[:8])
        for partition, found in sorted(offsets.items())
    ]


def offset_ranges(offsets: list[int], slack: int = 100) -> list[tuple[int, int]]:
    """Sorted offsets as ranges; offsets less than ``slack`` apart share one."""
    ranges: list[tuple[int, int]] = []
    for offset in offsets:
        if ranges and offset - ranges[-1][1] < slack:
            ranges[-1] = (ranges[-1][0], offset)
        else:
            ranges.append((offset, offset))
    return ranges
