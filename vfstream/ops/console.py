"""What the operator's commands read (``vfstream runs``, ``dead-letters``, ``status``).

Everything comes straight from Kafka and the AWS endpoint, the way ``kcat`` would read it,
so the answers need no running worker: the runs from the committed changelogs of the
campaign-counts and Slack-report tables, the dead letters from the tail of their topic,
and the workers, their partitions and the lag from the consumer group itself.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from pydantic import ValidationError

from vfstream import kafka
from vfstream.aws import credential_source
from vfstream.domain.ledger import CampaignTotals
from vfstream.domain.reports import ReportBook
from vfstream.domain.runs import newest_first, run_rows
from vfstream.errors import DependencyUnavailable
from vfstream.kafka.reads import holding_records, latest_values, offset_range
from vfstream.ops.reads import recent_dead_letters
from vfstream.settings import Settings
from vfstream.stream.layout import Table, changelog_topic, member_url

log = logging.getLogger(__name__)

PROBE_SECONDS = 3.0


class StackUnavailable(DependencyUnavailable):
    """Kafka (or the AWS endpoint) does not answer: nothing can be read."""


async def _reachable(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_SECONDS)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    return (host or address, int(port)) if port.isdigit() else (address, default_port)


async def kafka_reachable(settings: Settings) -> bool:
    addresses = [_host_port(a, 9092) for a in settings.kafka_bootstrap.split(",") if a.strip()]
    answers = await asyncio.gather(*(_reachable(host, port) for host, port in addresses))
    return any(answers)


async def aws_reachable(settings: Settings) -> bool | None:
    """Whether the configured endpoint answers HTTP; None for AWS itself (not probed)."""
    if not settings.aws_endpoint_url:
        return None
    timeout = aiohttp.ClientTimeout(total=PROBE_SECONDS)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(settings.aws_endpoint_url) as response,
        ):
            return response.status < 500
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


async def require_kafka(settings: Settings) -> None:
    if not await kafka_reachable(settings):
        raise StackUnavailable(
            f"Kafka does not answer at {settings.kafka_bootstrap} "
            "(is the stack up? `vfstream dev up` starts the local one; "
            "VFSTREAM_KAFKA_BOOTSTRAP names another)"
        )


async def _table(settings: Settings, table: str) -> dict[bytes, tuple[int, bytes]]:
    try:
        return await latest_values(settings, changelog_topic(settings, table))
    except LookupError:  # no worker has ever run: the table has no changelog yet
        return {}


async def read_runs(settings: Settings, campaign: str | None = None) -> list[dict[str, Any]]:
    """Every campaign's scoring runs as the workers' tables last committed them."""
    await require_kafka(settings)
    counts, books = await asyncio.gather(
        _table(settings, Table.CAMPAIGN_COUNTS), _table(settings, Table.REPORT_BOOKS)
    )
    rows: list[dict[str, Any]] = []
    for key, (_, value) in counts.items():
        if not value or (campaign is not None and key != campaign.encode()):
            continue
        book = books.get(key)
        rows.extend(campaign_runs(key, value, book[1] if book else None))
    return newest_first(rows)


def campaign_runs(key: bytes, totals: bytes, book: bytes | None) -> list[dict[str, Any]]:
    """One campaign's runs from its committed table values; a value that does not read as
    the tables' model is left out with a warning rather than failing the whole answer."""
    try:
        report_book = ReportBook.from_bytes(book) if book else None
    except ValidationError:
        log.warning("unreadable Slack report book for %r: runs shown without it", key)
        report_book = None
    try:
        return run_rows(CampaignTotals.from_bytes(totals), report_book)
    except ValidationError:
        log.warning("unreadable campaign totals for %r: left out", key)
        return []


async def read_dead_letters(
    settings: Settings, *, campaign: str | None, kind: str | None, limit: int
) -> list[dict[str, Any]]:
    await require_kafka(settings)
    try:
        return await recent_dead_letters(settings, campaign=campaign, kind=kind, limit=limit)
    except LookupError:
        return []


def _member(member: tuple[Any, ...], topic: str) -> dict[str, Any]:
    """One group member: its worker's URL (its web views; ``stream.layout`` reads it from
    the member's metadata); the standard assignment says which partitions of ``topic`` it
    consumes."""
    member_id, client_id, client_host, metadata, assignment = member[:5]
    url = member_url(metadata)
    partitions: list[int] = []
    try:
        for assigned_topic, numbers in ConsumerProtocolMemberAssignment.decode(
            assignment
        ).assignment:
            if assigned_topic == topic:
                partitions.extend(numbers)
    except Exception:  # a member that joined but has no assignment yet
        partitions = []
    return {
        "memberId": member_id,
        "clientId": client_id,
        "host": client_host.lstrip("/"),
        "url": url,
        "partitions": sorted(partitions),
    }


async def _group(settings: Settings, topic: str) -> dict[str, Any]:
    admin = kafka.admin(settings)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([settings.app_id])
        (group,) = [g for g in response.groups if g[1] == settings.app_id]
        committed = await admin.list_consumer_group_offsets(settings.app_id)
    finally:
        await admin.close()
    return {
        "state": group[2],
        "members": sorted((_member(m, topic) for m in group[5]), key=lambda m: m["url"] or ""),
        "committed": {tp.partition: c.offset for tp, c in committed.items() if tp.topic == topic},
    }


def kafka_security(settings: Settings) -> str:
    """How vfstream connects, for an operator: protocol, mechanism and principal (never a
    secret)."""
    from vfstream.kafka.access import principal_of

    parts = [settings.kafka_security_protocol]
    if settings.kafka_sasl_mechanism is not None:
        parts.append(settings.kafka_sasl_mechanism)
    if settings.kafka_security_protocol != "PLAINTEXT":
        parts.append(f"as {principal_of(settings)}")
    return " ".join(parts)


async def read_status(settings: Settings) -> dict[str, Any]:
    """The stack, the workers of the group, and each score partition's owner and lag."""
    kafka_up, aws_up, aws_credentials = await asyncio.gather(
        kafka_reachable(settings), aws_reachable(settings), credential_source(settings)
    )
    stack = {
        "kafka": {
            "address": settings.kafka_bootstrap,
            "reachable": kafka_up,
            "security": kafka_security(settings),
        },
        "aws": {
            "endpoint": settings.aws_endpoint_url or "AWS",
            "reachable": aws_up,
            "credentials": aws_credentials,
        },
    }
    if not kafka_up:
        raise StackUnavailable(
            f"Kafka does not answer at {settings.kafka_bootstrap} "
            "(is the stack up? `vfstream dev up` starts the local one)"
        )
    topic = settings.score_records_topic
    group = await _group(settings, topic)
    starts, ends = await offset_range(settings, topic)
    owners = {p: m["url"] or m["host"] for m in group["members"] for p in m["partitions"]}
    read_from = {}
    for tp in ends:
        committed = group["committed"].get(tp.partition)
        read_from[tp] = committed if committed is not None and committed >= 0 else starts[tp]
    behind = await holding_records(settings, {tp: (read_from[tp], ends[tp]) for tp in ends})
    partitions = [
        {
            "partition": tp.partition,
            "owner": owners.get(tp.partition),
            "committed": group["committed"].get(tp.partition),
            "end": ends[tp],
            # Only commit markers after the committed offset: nothing left to read.
            "lag": ends[tp] - read_from[tp] if tp in behind else 0,
        }
        for tp in sorted(ends, key=lambda tp: tp.partition)
    ]
    return {
        "stack": stack,
        "group": {"id": settings.app_id, "state": group["state"]},
        "workers": [
            {
                "worker": m["url"] or m["host"],
                "clientId": m["clientId"],
                "partitions": m["partitions"],
            }
            for m in group["members"]
        ],
        "topic": topic,
        "partitions": partitions,
        "lag": sum(p["lag"] for p in partitions),
    }
