"""The Faust app with vfstream's configuration (``build_faust_app``): raw serializers,
bounded RocksDB tables, the flow control that keeps queued events. What is declared on it
is in ``vfstream.stream.topology``; the worker is assembled in ``vfstream.stream.assembly``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import faust
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

from vfstream import kafka
from vfstream.settings import Settings
from vfstream.stream.transport import (
    broker_url,
)

RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


def raw_schema() -> faust.Schema:
    return faust.Schema(**RAW)


def rocksdb_options(settings: Settings) -> dict[str, int]:
    """Each table's RocksDB memory, bounded by settings (``Settings.rocksdb_write_buffer_mib``:
    why). A new dict per table: Faust's store pops keys out of the one it is given."""
    mib = 1024 * 1024
    return {
        "write_buffer_size": settings.rocksdb_write_buffer_mib * mib,
        "max_write_buffer_number": settings.rocksdb_write_buffers,
        "block_cache_size": settings.rocksdb_block_cache_mib * mib,
        # Used by python-rocksdb only (rocksdict, the driver here, has no compressed cache).
        "block_cache_compressed_size": settings.rocksdb_block_cache_mib * mib,
    }


def table_options(settings: Settings) -> dict[str, Any]:
    """A raw table's partitions, schema and RocksDB options."""
    return {
        "partitions": settings.topic_partitions,
        "schema": raw_schema(),
        "options": rocksdb_options(settings),
    }


def raw_table(table: Any, *, keys: str = "raw") -> Any:
    # Faust derives a table's serializers from its types (bytes -> json), not its schema;
    # the changelog topic must agree too, because web routing hashes keys with it.
    table.key_serializer = keys
    table.value_serializer = "raw"
    table.changelog_topic = table._new_changelog_topic()
    return table


def windowed_table(app: Any, name: str, settings: Settings) -> Any:
    """The count windows: tumbling windows of ``window_seconds``, kept for
    ``window_expires_seconds``. Window keys are (campaign, (start, end)) tuples: JSON, not
    raw bytes."""
    return raw_table(
        app.Table(
            name,
            partitions=settings.topic_partitions,
            options=rocksdb_options(settings),
            schema=faust.Schema(
                key_type=str, value_type=bytes, key_serializer="json", value_serializer="raw"
            ),
        ),
        keys="json",
    ).tumbling(
        timedelta(seconds=settings.window_seconds),
        expires=timedelta(seconds=settings.window_expires_seconds),
    )


class QueueKeepingFlowControl(FlowControlEvent):
    """Faust's flow control, except that resuming a flow that is already on keeps the queues.

    Table recovery turns the flow on to read changelogs, and again once the recovered stream
    partitions are resumed and sought, clearing every agent's queue each time. Events the
    fetcher delivered in between had already moved Faust's read offsets past them, so a
    cleared one was never fetched again: records lost with no crash at all (the fault
    tests' "a few fans short after a rebalance"). Queues are still cleared when a suspended
    flow resumes, and events of an older consumer generation are skipped by the stream.
    """

    def resume(self) -> None:
        if self.is_active():
            return
        super().resume()


class StreamApp(faust.App):
    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return QueueKeepingFlowControl(loop=self.loop)


def build_faust_app(settings: Settings) -> StreamApp:
    """The Faust app with vfstream's configuration (raw serializers, committed reads, web)."""
    partitions = settings.topic_partitions
    return StreamApp(
        settings.app_id,
        broker=broker_url(settings.kafka_bootstrap),
        # Faust makes its own clients (stream consumer, producer, topic creator) with these.
        broker_credentials=kafka.faust_credentials(settings),
        store="rocksdb://",
        datadir=str(settings.data_dir),
        processing_guarantee="at_least_once",
        topic_partitions=partitions,
        topic_replication_factor=settings.topic_replication_factor,
        topic_allow_declare=True,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        canonical_url=settings.advertised_web_url,
        web_in_thread=False,
        # Events are acked only after the partial counts covering them are flushed;
        # waiting for "empty" on rebalance would wait for acks that come with the next event.
        stream_wait_empty=False,
        table_standby_replicas=settings.standby_replicas,
        consumer_auto_offset_reset="earliest",
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        broker_commit_interval=1.0,
        # An event of the score-record topic is a batch of up to 512 KiB: a few dozen
        # buffered per stream, not Faust's 4,096.
        stream_buffer_maxsize=settings.stream_buffer_maxsize,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=max(settings.session_timeout_seconds / 4, 0.5),
    )
