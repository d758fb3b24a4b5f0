"""The DynamoDB mirror: the tables' changelogs copied into the demand table (SPEC 4).

A ``TopicRelay`` (see ``base.py`` and ``lanes.py``) reads the changelogs in order and
commits a partition only up to its oldest entry not yet written. Every entry becomes the
item it mirrors, held by key in one lane (DynamoDB is up or down for every item): a newer
entry of an item replaces an older one not yet written. An attempt reads the held items
back (BatchGetItem) so a stored newer ``version`` is never replaced, then writes them with
BatchWriteItem in concurrent groups of distinct keys. Items DynamoDB refuses outright are
reported and skipped; anything else (the endpoint down, throttling, a timeout, a missing
table) waits, retried with capped jittered backoff for as long as it takes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from vfstream.aws import aws_client
from vfstream.domain.mirror import (
    MirroredTable,
    MirrorItem,
    item_for_entry,
    latest_per_key,
    newer_than_stored,
)
from vfstream.errors import describe_error
from vfstream.metrics import DEAD_LETTERS, MIRROR_ITEMS, RECORDS_IN, SINK_FAILURES
from vfstream.settings import Settings
from vfstream.sinks.clients.dynamo_batch import DynamoBatchWriter
from vfstream.sinks.relays.base import AWS_CALLS, Batch, TopicRelay
from vfstream.sinks.relays.lanes import Attempt, Parcel, Wait
from vfstream.stream.layout import changelog_topic

log = logging.getLogger(__name__)

GET_BATCH = 100  # BatchGetItem's limit
WRITE_WITHIN_SECONDS = 10.0


class DynamoMirror:
    name = "DynamoDB"

    def __init__(
        self, settings: Settings, *, concurrency: int = 4, max_backoff_seconds: float = 10.0
    ) -> None:
        self.settings = settings
        self.concurrency = concurrency
        self.tables = {changelog_topic(settings, table.value): table for table in MirroredTable}
        self.relay = TopicRelay(
            settings,
            "dynamo-mirror",
            list(self.tables),
            self,
            max_held=20_000,
            per_attempt=5_000,
            max_backoff_seconds=max_backoff_seconds,
        )
        self.written = 0
        self._dynamo: Any = None
        self._writer: DynamoBatchWriter | None = None

    async def run(self, should_stop: Callable[[], bool]) -> None:
        async with aws_client(self.settings, "dynamodb", **AWS_CALLS) as dynamo:
            self._dynamo = dynamo
            # One attempt of the relay gives up soon (past WRITE_WITHIN_SECONDS each batch left
            # gets one call, and once one fails the rest fail without a call): the lane's
            # backoff is the retry. With the writer's own 6 tries a batch, an attempt during
            # an outage ran for minutes and the mirror caught up that long after DynamoDB
            # came back.
            self._writer = DynamoBatchWriter(
                dynamo, self.settings.demand_table, attempts=3, within=WRITE_WITHIN_SECONDS
            )
            await self.relay.run(should_stop)

    # --- the relay's destination ---------------------------------------------------------

    def parcels(self, tp: TopicPartition, record: ConsumerRecord) -> Iterable[tuple[str, Any, Any]]:
        RECORDS_IN.labels("mirror").inc()
        item = self._item(tp, record)
        return () if item is None else (("", item.key, item),)

    async def deliver(self, lane: str, parcels: list[Parcel], go_on: Callable[[], bool]) -> Attempt:
        """One attempt at the held items: read back, write the newer ones."""
        assert self._writer is not None
        items: list[MirrorItem] = [parcel.value for parcel in parcels]
        try:
            stored = await self._stored_versions(self._dynamo, items)
            fresh = newer_than_stored(items, stored)
            MIRROR_ITEMS.labels("older_or_same").inc(len(items) - len(fresh))
            retry, why = await self._write(self._writer, fresh)
        except Exception as exc:  # endpoint down, throttled past the writer's retries
            return Attempt(wait=Wait(self.name, describe_error(exc)))
        if not retry:
            return Attempt(parcels)
        left = {item.key for item in retry}
        done = [parcel for parcel in parcels if parcel.key not in left]
        return Attempt(done, Wait(self.name, f"{len(retry)} item(s) not written: {why}"[:256]))

    # --- one batch, delivered in place (tests and the benchmark) ------------------------

    async def mirror(
        self, dynamo: Any, writer: DynamoBatchWriter, batch: Batch, relay: TopicRelay
    ) -> int:
        items = latest_per_key(self._items(batch))
        attempt = 0
        while True:
            try:
                stored = await self._stored_versions(dynamo, items)
                fresh = newer_than_stored(items, stored)
                MIRROR_ITEMS.labels("older_or_same").inc(len(items) - len(fresh))
                retry, _ = await self._write(writer, fresh)
            except Exception as exc:  # endpoint down, throttled past the writer's retries
                log.warning("DynamoDB mirror could not read or write: %s", exc)
                retry = items
            if not retry:
                return len(items)
            attempt += 1
            items = retry
            log.warning(
                "DynamoDB mirror: %d item(s) not written yet; retry %d", len(items), attempt
            )
            await relay.backoff(attempt)

    def _items(self, batch: Batch) -> list[MirrorItem]:
        items: list[MirrorItem] = []
        for tp, records in batch.items():
            RECORDS_IN.labels("mirror").inc(len(records))
            for record in records:
                item = self._item(tp, record)
                if item is not None:
                    items.append(item)
        return items

    def _item(self, tp: TopicPartition, record: ConsumerRecord) -> MirrorItem | None:
        table = self.tables[tp.topic]
        try:
            return item_for_entry(table, record.key or b"", record.value)
        except ValueError as exc:
            # A changelog entry we cannot read would block the partition forever.
            DEAD_LETTERS.labels("mirror-entry").inc()
            log.error(
                "unreadable %s changelog entry at %s:%d skipped: %s",
                table.value,
                tp.partition,
                record.offset,
                exc,
            )
            return None

    async def _stored_versions(
        self, dynamo: Any, items: list[MirrorItem]
    ) -> dict[tuple[str, str], int]:
        keys = [item.key for item in items if item.version is not None]
        stored: dict[tuple[str, str], int] = {}
        table = self.settings.demand_table
        for start in range(0, len(keys), GET_BATCH):
            request: dict[str, Any] = {
                table: {
                    "Keys": [
                        {"PK": {"S": pk}, "SK": {"S": sk}}
                        for pk, sk in keys[start : start + GET_BATCH]
                    ],
                    "ProjectionExpression": "PK, SK, #v",
                    "ExpressionAttributeNames": {"#v": "version"},
                }
            }
            while request:
                answer = await dynamo.batch_get_item(RequestItems=request)
                for found in answer.get("Responses", {}).get(table, []):
                    version = found.get("version", {}).get("N")
                    if version is not None:
                        stored[(found["PK"]["S"], found["SK"]["S"])] = int(version)
                request = answer.get("UnprocessedKeys") or {}
        return stored

    async def _write(
        self, writer: DynamoBatchWriter, items: list[MirrorItem]
    ) -> tuple[list[MirrorItem], str]:
        """Write in concurrent groups of distinct keys; returns the items worth retrying and
        why the first of them failed."""
        if not items:
            return [], ""
        groups: list[list[MirrorItem]] = [[] for _ in range(self.concurrency)]
        for item in items:
            groups[hash(item.key) % self.concurrency].append(item)
        results = await asyncio.gather(
            *(writer.put_items([item.attributes for item in group]) for group in groups if group)
        )
        by_key = {item.key: item for item in items}
        retry: list[MirrorItem] = []
        why = ""
        for result in results:
            self.written += result.written
            MIRROR_ITEMS.labels("written").inc(result.written)
            for failed in result.failed:
                if failed.permanent:
                    # Refused by DynamoDB itself (e.g. over 400 KB): retrying cannot help.
                    MIRROR_ITEMS.labels("refused").inc()
                    SINK_FAILURES.labels("dynamodb-mirror").inc()
                    log.error(
                        "DynamoDB refused mirror item %s/%s: %s",
                        failed.item.get("PK"),
                        failed.item.get("SK"),
                        failed.reason,
                    )
                else:
                    retry.append(by_key[(failed.item["PK"], failed.item["SK"])])
                    why = why or failed.reason
        return retry, why
