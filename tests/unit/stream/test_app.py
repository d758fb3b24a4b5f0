"""One hash everywhere (issue #13): the ingestor and the Kinesis bridge send a fan's records
to the partition ``partition_for`` gives its key, and the web views route the key to the
worker owning that partition of the table."""

from __future__ import annotations

import io
import threading
import zlib
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from mode.utils.queues import FlowControlEvent, FlowControlQueue

from tests.support.rows import SCORING_HEADER, scoring_row
from vfstream.domain.batches import decode_batch
from vfstream.domain.keys import fan_key, partition_for
from vfstream.domain.records import ScoringKey
from vfstream.settings import Settings
from vfstream.sources.s3.ingested import IngestSummary
from vfstream.sources.s3.scoring_rows import ScoringRows
from vfstream.stream.app import QueueKeepingFlowControl
from vfstream.stream.assembly import build_app
from vfstream.web.views import owner_url


def test_the_hash_is_pinned_crc32_of_the_keys_utf8_bytes() -> None:
    # Consumers outside vfstream compute it too: it must never change silently.
    assert partition_for(b"c1001:u1001", 6) == zlib.crc32(b"c1001:u1001") % 6 == 1
    assert partition_for("cfeed:g\u00e9".encode(), 12) == zlib.crc32("cfeed:g\u00e9".encode()) % 12
    assert [partition_for(f"c1:u{n}".encode(), 6) for n in range(8)] == [3, 3, 3, 3, 0, 4, 2, 2]


def test_table_partitions_match_their_source_topics() -> None:
    settings = Settings(topic_partitions=4, listen_for_notifications=False)
    stream = build_app(settings)
    topology = stream.topology
    assert topology.fan_states.partitions == topology.score_topic.partitions == 4
    assert topology.campaign_counts.partitions == topology.partials_topic.partitions == 4


def test_every_tables_rocksdb_memory_is_bounded_by_the_settings(tmp_path: Any) -> None:
    """Faust's defaults (3 x 64 MiB memtables and a 2 GiB block cache per database, one
    database per table partition) let a worker's RSS grow with every state it wrote."""
    settings = Settings(
        data_dir=tmp_path,
        listen_for_notifications=False,
        rocksdb_write_buffer_mib=3,
        rocksdb_write_buffers=2,
        rocksdb_block_cache_mib=5,
    )
    stream = build_app(settings)
    windows = stream.count_windows.table
    tables = [stream.fan_states, stream.campaign_counts, stream.report_books, windows]
    for table in tables:
        options = table.data.rocksdb_options
        assert options.write_buffer_size == 3 << 20, table.name
        assert options.max_write_buffer_number == 2, table.name
        assert options.block_cache_size == 5 << 20, table.name


def ingested_partitions(fans: list[str], partitions: int) -> dict[str, int]:
    """Which partition the ingestor sent each fan's records to."""
    settings = Settings(listen_for_notifications=False, score_batch_records=3)
    rows = ScoringRows(settings)
    body = (SCORING_HEADER + "\n" + "".join(scoring_row("c1", f) + "\n" for f in fans)).encode()
    key = ScoringKey(
        campaign_id="c1",
        campaign_name="t",
        scored_at=datetime(2026, 1, 1, tzinfo=UTC),
        gzipped=False,
    )
    summary = IngestSummary(bucket="b", key="k", etag="e")
    chunks: list[Any] = []
    rows.parse_into(io.BytesIO(body), key, summary, partitions, chunks.append, threading.Event())
    sent: dict[str, int] = {}
    for chunk in chunks:
        for partition, batch in chunk.batches:
            for record in decode_batch(batch):
                sent[record["globalUserId"]] = partition
    return sent


def test_ingest_and_web_routing_put_a_key_in_the_same_partition() -> None:
    fans = [f"u{n}" for n in range(40)]
    sent = ingested_partitions(fans, 6)
    assert sent == {fan: partition_for(fan_key("c1", fan).encode(), 6) for fan in fans}

    stream = build_app(Settings(topic_partitions=6, listen_for_notifications=False))
    topic = stream.fan_states.changelog_topic.get_topic_name()
    # Worker A owns partitions 0-2, worker B 3-5 (what the assignor's metadata says).
    metadata = {"http://a:1": {topic: [0, 1, 2]}, "http://b:2": {topic: [3, 4, 5]}}
    stream.app.router = SimpleNamespace(table_metadata=lambda name: metadata)  # type: ignore[assignment]
    for fan, partition in sent.items():
        owner = owner_url(stream, stream.fan_states, fan_key("c1", fan))
        assert owner == ("http://a:1" if partition < 3 else "http://b:2"), fan


# ---- resuming a flow that is already on keeps the events the agents have queued
# ---- (QueueKeepingFlowControl); Faust's own flow control drops them


def queued_after_two_resumes(flow: FlowControlEvent) -> int:
    queue: FlowControlQueue[str] = FlowControlQueue(flow_control=flow, clear_on_resume=True)
    flow.resume()  # recovery turns the flow on to read changelogs
    queue.put_nowait("an event the fetcher delivered")
    flow.resume()  # ... and again once the stream partitions are sought
    return queue.qsize()


async def test_resuming_a_flowing_app_keeps_the_events_already_queued() -> None:
    assert queued_after_two_resumes(QueueKeepingFlowControl()) == 1


async def test_faust_flow_control_drops_them_which_is_why_it_is_replaced() -> None:
    assert queued_after_two_resumes(FlowControlEvent()) == 0


async def test_resuming_a_suspended_flow_still_clears_the_queues() -> None:
    flow = QueueKeepingFlowControl()
    queue: FlowControlQueue[str] = FlowControlQueue(flow_control=flow, clear_on_resume=True)
    flow.resume()
    queue.put_nowait("an event of the generation before the rebalance")
    flow.suspend()
    flow.resume()
    assert queue.qsize() == 0
    assert flow.is_active()
