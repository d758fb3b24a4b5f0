"""The fan-state table as the verify agent writes it, and table writes the caller can await.

``FanStateStore`` reads and writes the table's RocksDB partitions directly and writes the
changelog with its own producer, one Kafka record batch a flush: Faust's per-key path
(``table[key] = value``: serialisers, a ``FutureMessage`` per key, its producer buffer) cost
tens of microseconds a key and could not tell the caller when the changelog held a write.
The table itself stays Faust's: its changelog topic, recovery, standbys and assignment.

``campaign_windows`` reads one campaign's windows from the windowed table, knowing how
Faust lays out its keys, for the web view of a campaign's windows.

Private reaches into Faust (listed in ``vfstream.stream``, pinned by
``tests/unit/stream/test_private_reaches.py``): ``Store._db_for_partition`` (the RocksDB of
one partition, rocksdict in raw mode) and ``Store._dbs_for_actives`` (the RocksDB of each
active partition).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from aiokafka import AIOKafkaProducer
from faust.serializers import codecs
from faust.types import TP

from vfstream import kafka
from vfstream.settings import Settings


def durable_set(table: Any, partition: int, key: bytes, value: bytes) -> Any:
    """Set ``key`` in the table's local store and its changelog; returns the changelog send.

    Faust's own ``table[key] = value`` does not let anyone wait for the changelog, and it
    commits source offsets without waiting either; awaiting this future does. Must run inside
    an event of ``partition`` (the local store is chosen by the current event).
    """
    sent = table.send_changelog(partition, key, value)
    table.data[key] = value
    return sent


# A changelog record batch stays under the broker's default message.max.bytes (1 MiB).
CHANGELOG_BATCH_BYTES = 900 * 1024


class FanStateStore:
    """``verification.StateStore`` over a Faust RocksDB table."""

    def __init__(self, table: Any, settings: Settings) -> None:
        self.table = table
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    def _db(self, partition: int) -> Any:
        return self.table.data._db_for_partition(partition)

    def get(self, partition: int, key: bytes) -> bytes | None:
        value: bytes | None = self._db(partition).get(key)
        return value

    def get_many(self, partition: int, keys: list[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        found: list[bytes | None] = self._db(partition).get(keys)
        return found

    def scan(self, partition: int, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self._db(partition).items(from_key=prefix):
            if not key.startswith(prefix):
                return
            yield key, value

    async def _started(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is None:
                producer = kafka.producer(
                    self._settings,
                    acks="all",
                    enable_idempotence=True,
                    max_batch_size=CHANGELOG_BATCH_BYTES,
                    linger_ms=0,
                )
                await producer.start()
                self._producer = producer
            return self._producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def write(self, partition: int, items: list[tuple[bytes, bytes]]) -> None:
        """Write ``items`` in order to the partition's changelog partition and, once the
        broker holds them all, to its RocksDB; then remember the changelog offset reached
        (Faust's recovery reads the changelog from there on a restart).

        Why the changelog first: the local store must never hold what the changelog may
        not. Written locally first, a worker killed before the broker's ack restarted on the
        same disk with fan states and a recorded position (the offset its flush covered)
        that the changelog never got; it resumed at that position, skipped the records, and
        the fans were counted locally but missing for any worker recovering from the
        changelog (found by the crash property in tests/unit/stream). Written after the ack,
        a kill in between leaves the changelog ahead of the local store, and Faust's
        recovery reads the missing records from the changelog on the restart."""
        from rocksdict import WriteBatch

        producer = await self._started()
        topic = self.table.changelog_topic.get_topic_name()
        sent: list[asyncio.Future[Any]] = []
        builder = producer.create_batch()
        for key, value in items:
            if builder.append(key=key, value=value, timestamp=None) is None:
                sent.append(await producer.send_batch(builder, topic, partition=partition))
                builder = producer.create_batch()
                builder.append(key=key, value=value, timestamp=None)
        sent.append(await producer.send_batch(builder, topic, partition=partition))
        written = await asyncio.gather(*sent)

        batch = WriteBatch(raw_mode=True)
        for key, value in items:
            batch.put(key, value)
        self._db(partition).write(batch)
        # The offset of the last record of the last batch.
        last = written[-1].offset + builder.record_count() - 1
        self.table.data.set_persisted_offset(TP(topic, partition), last)


def campaign_windows(table: Any, campaign_id: str) -> Iterator[tuple[Any, bytes | None]]:
    """The (key, value) items of one campaign in the window table (keys ``(campaign,
    (start, end))``). In RocksDB its keys sit together in each partition's database (the
    JSON of ``[campaign, [start, end]]`` begins with the campaign), so only they are read;
    any other store is scanned whole."""
    store = table.data
    if not getattr(store, "use_rocksdict", False) or not hasattr(store, "_dbs_for_actives"):
        for key, value in store.items():
            if key[0] == campaign_id:
                yield key, value
        return
    prefix = codecs.dumps(table.key_serializer, [campaign_id, []])[:-2]
    for db in list(store._dbs_for_actives()):
        for raw_key, raw_value in db.items(from_key=prefix):
            if not raw_key.startswith(prefix):
                break
            yield codecs.loads(table.key_serializer, raw_key), raw_value
