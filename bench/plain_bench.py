"""What Faust still costs: the verify + tally rules over the same topic with no framework.

A plain aiokafka consumer (read_committed, manual commits) reads the score batches, applies
the same domain rules the verify agent applies (``fans.apply_row`` on states kept in a local
RocksDB, the compact envelope), writes every changed state to a changelog topic in one Kafka
record batch per poll and awaits it, commits, and tallies per-campaign counts in memory.
No exactly-once bookkeeping (positions, partials, gap fills): a lower bound on the cost of
the same work, to set vfstream's rate beside.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from aiokafka.admin import NewTopic
from rocksdict import Options, Rdict, WriteBatch

from vfstream import kafka
from vfstream.domain.fans import (
    Envelope,
    ScoreRow,
    apply_row,
    decode_envelope,
    encode_envelope,
    iso_now,
    position_of,
    read_batch,
)
from vfstream.domain.keys import fan_key
from vfstream.settings import Settings
from vfstream.topics import partition_count


async def _changelog(settings: Settings, name: str, partitions: int) -> None:
    admin = kafka.admin(settings)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def plain_verify_and_tally(
    settings: Settings, expected: int, work: Path
) -> tuple[float, dict[str, list[int]]]:
    """Records/s applying every record of the score topic, and the counts it reached."""
    topic = settings.score_records_topic
    partitions = await partition_count(settings, topic)
    changelog = f"{settings.app_id}-plain-changelog"
    await _changelog(settings, changelog, partitions)
    shutil.rmtree(work / "plain-db", ignore_errors=True)
    dbs = {
        p: Rdict(str(work / "plain-db" / str(p)), options=Options(raw_mode=True))
        for p in range(partitions)
    }
    consumer = kafka.consumer(
        settings,
        topic,
        group_id=f"{settings.app_id}-plain",
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
    )
    producer = kafka.producer(settings, acks="all", max_batch_size=900 * 1024)
    await consumer.start()
    await producer.start()
    counts: dict[str, list[int]] = {}
    seen = 0
    started = time.monotonic()
    try:
        while seen < expected:
            fetched = await consumer.getmany(timeout_ms=500, max_records=50)
            sends = []
            for tp, messages in fetched.items():
                db, staged = dbs[tp.partition], {}
                now = iso_now()
                for message in messages:
                    for index, row in enumerate(read_batch(message.value)):
                        assert isinstance(row, ScoreRow)
                        key = fan_key(row.campaignId, row.globalUserId).encode()
                        envelope = staged.get(key)
                        if envelope is None:
                            raw = db.get(key)
                            envelope = decode_envelope(raw) if raw else None
                        _, state, delta = apply_row(envelope.state if envelope else None, row, now)
                        if state is not None:
                            position = position_of(message.offset, index)
                            staged[key] = Envelope(position, (0, 0, 0), state)
                            total = counts.setdefault(row.campaignId, [0, 0, 0])
                            for n in range(3):
                                total[n] += delta[n]
                        seen += 1
                batch, builder = WriteBatch(raw_mode=True), producer.create_batch()
                for key, envelope in staged.items():
                    value = encode_envelope(envelope)
                    batch.put(key, value)
                    if builder.append(key=key, value=value, timestamp=None) is None:
                        sends.append(
                            await producer.send_batch(builder, changelog, partition=tp.partition)
                        )
                        builder = producer.create_batch()
                        builder.append(key=key, value=value, timestamp=None)
                db.write(batch)
                sends.append(await producer.send_batch(builder, changelog, partition=tp.partition))
            await asyncio.gather(*sends)
            if fetched:
                await consumer.commit()
        return seen / (time.monotonic() - started), counts
    finally:
        await consumer.stop()
        await producer.stop()
        for db in dbs.values():
            db.close()


def plain_benchmark(settings: Settings, expected: int, work: Path) -> tuple[float, dict]:
    return asyncio.run(plain_verify_and_tally(settings, expected, work))
