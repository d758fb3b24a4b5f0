"""The DynamoDB mirror: the tables' changelogs copied into the demand table (SPEC 4).

A ``TopicRelay`` (see ``relay.py``) gives it batches in changelog order and commits them
once written. Each batch is collapsed to the last entry per item, then read back
(BatchGetItem) so a stored newer ``version`` is never replaced, then written with
BatchWriteItem in concurrent groups of distinct keys. Items DynamoDB refuses outright are
reported and skipped; anything else is retried until written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from vfstream.aws import aws_client
from vfstream.domain.mirror import (
    MirroredTable,
    MirrorItem,
    item_for_entry,
    latest_per_key,
    newer_than_stored,
)
from vfstream.metrics import DEAD_LETTERS, MIRROR_ITEMS, RECORDS_IN, SINK_FAILURES
from vfstream.settings import Settings
from vfstream.sinks.clients.dynamo_batch import DynamoBatchWriter
from vfstream.sinks.relays.base import Batch, TopicRelay
from vfstream.topics import changelog_topic

log = logging.getLogger(__name__)

GET_BATCH = 100  # BatchGetItem's limit


class DynamoMirror:
    def __init__(self, settings: Settings, *, concurrency: int = 4) -> None:
        self.settings = settings
        self.concurrency = concurrency
        self.tables = {changelog_topic(settings, table.value): table for table in MirroredTable}
        self.relay = TopicRelay(settings, "dynamo-mirror", list(self.tables), self._handle)
        self.written = 0
        self._dynamo: Any = None
        self._writer: DynamoBatchWriter | None = None

    async def run(self, should_stop: Callable[[], bool]) -> None:
        async with aws_client(self.settings, "dynamodb") as dynamo:
            self._dynamo = dynamo
            self._writer = DynamoBatchWriter(dynamo, self.settings.demand_table)
            await self.relay.run(should_stop)

    async def _handle(self, batch: Batch, relay: TopicRelay) -> int:
        assert self._writer is not None
        return await self.mirror(self._dynamo, self._writer, batch, relay)

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
                retry = await self._write(writer, fresh)
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
            table = self.tables[tp.topic]
            RECORDS_IN.labels("mirror").inc(len(records))
            for record in records:
                try:
                    item = item_for_entry(table, record.key or b"", record.value)
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
                    continue
                if item is not None:
                    items.append(item)
        return items

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

    async def _write(self, writer: DynamoBatchWriter, items: list[MirrorItem]) -> list[MirrorItem]:
        """Write in concurrent groups of distinct keys; returns the items worth retrying."""
        if not items:
            return []
        groups: list[list[MirrorItem]] = [[] for _ in range(self.concurrency)]
        for item in items:
            groups[hash(item.key) % self.concurrency].append(item)
        results = await asyncio.gather(
            *(writer.put_items([item.attributes for item in group]) for group in groups if group)
        )
        by_key = {item.key: item for item in items}
        retry: list[MirrorItem] = []
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
        return retry
