"""``vfstream reconcile``: recount every campaign from the fan states and compare.

Reads the committed changelogs (the durable truth, whichever workers run), recounts per
campaign and per source partition, and compares with the campaign counts table. ``--fix``
publishes the recounted partials as snapshots; the tally agent takes them like any other,
so a repaired count is repaired through the normal path and stays in its changelog.
"""

from __future__ import annotations

from typing import Any

from vfstream import kafka
from vfstream.domain.fans import decode_envelope
from vfstream.domain.keys import is_fan_key, is_partial_key, partition_for
from vfstream.domain.ledger import CampaignTotals, PartialCounts
from vfstream.domain.state import CountDelta, Counts, recount_by_partition
from vfstream.domain.tally import correction_message
from vfstream.kafka.reads import latest_values
from vfstream.settings import Settings
from vfstream.stream.layout import Table, changelog_topic


def recount_partials(
    fan_changelog: dict[bytes, tuple[int, bytes]],
) -> dict[str, dict[int, Counts]]:
    """campaign -> source partition -> counts, from the fan envelopes alone."""
    return recount_by_partition(
        (partition, decode_envelope(value).state)
        for key, (partition, value) in fan_changelog.items()
        if is_fan_key(key)
    )


def misplaced_fans(fan_changelog: dict[bytes, tuple[int, bytes]], partitions: int) -> list[str]:
    """Fan keys stored in another partition than the one hash gives them: a producer that
    ignored ``partition_for`` (the verify agent refuses such records; this finds any left)."""
    return sorted(
        key.decode(errors="replace")
        for key, (partition, _) in fan_changelog.items()
        if is_fan_key(key) and partition_for(key, partitions) != partition
    )


def durable_partials(
    fan_changelog: dict[bytes, tuple[int, bytes]],
) -> dict[tuple[str, int], PartialCounts]:
    """The partials the verification agent last flushed, keyed by (campaign, partition)."""
    out: dict[tuple[str, int], PartialCounts] = {}
    for key, (_, value) in fan_changelog.items():
        if is_partial_key(key):
            partial = PartialCounts.model_validate_json(value)
            out[(partial.campaignId, partial.partition)] = partial
    return out


def _total(per_partition: dict[int, Counts]) -> Counts:
    total = Counts()
    for counts in per_partition.values():
        total = total.apply(
            CountDelta(verified=counts.verified, rejected=counts.rejected, selected=counts.selected)
        )
    return total


async def reconcile(settings: Settings, campaign: str | None, fix: bool) -> dict[str, Any]:
    fans = await latest_values(settings, changelog_topic(settings, Table.FAN_STATE))
    totals_log = await latest_values(settings, changelog_topic(settings, Table.CAMPAIGN_COUNTS))
    recounted = recount_partials(fans)
    durable = durable_partials(fans)
    totals = {
        key.decode(): CampaignTotals.from_bytes(value) for key, (_, value) in totals_log.items()
    }
    campaigns = sorted(set(recounted) | set(totals))
    if campaign is not None:
        campaigns = [c for c in campaigns if c == campaign]
    report: list[dict[str, Any]] = []
    corrections: list[tuple[str, bytes]] = []
    for name in campaigns:
        expected = _total(recounted.get(name, {}))
        stored = totals.get(name)
        actual = stored.counts if stored else Counts()
        differs = expected != actual
        report.append(
            {
                "campaignId": name,
                "recounted": expected.model_dump(),
                "counts": actual.model_dump(),
                "difference": expected.difference(actual).model_dump() if differs else None,
            }
        )
        if differs and fix:
            partitions = set(recounted.get(name, {})) | set(stored.partials if stored else {})
            for partition in sorted(partitions):
                counts = recounted.get(name, {}).get(partition, Counts())
                known = durable.get((name, partition))
                partial = PartialCounts(
                    campaignId=name,
                    partition=partition,
                    verified=counts.verified,
                    rejected=counts.rejected,
                    selected=counts.selected,
                    watermark=known.watermark if known else -1,
                )
                corrections.append((name, correction_message(partial)))
    if corrections:
        producer = kafka.producer(settings, acks="all")
        await producer.start()
        try:
            for name, body in corrections:
                key = name.encode()
                partition = partition_for(key, settings.topic_partitions)
                await producer.send_and_wait(
                    settings.partials_topic, key=key, value=body, partition=partition
                )
        finally:
            await producer.stop()
    differing = [item for item in report if item["difference"] is not None]
    misplaced = misplaced_fans(fans, settings.topic_partitions)
    return {
        "campaigns": len(report),
        "differences": len(differing) + len(misplaced),
        "misplacedFans": misplaced[:100],
        "fixed": len({name for name, _ in corrections}),
        "report": report,
    }
