"""The Faust application: topics, changelog-backed tables, thin agents, web views.

Built by ``build_app(settings)`` so tests and the CLI configure it the same way.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import orjson
from faust.types import TP
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from vfstream import kafka
from vfstream.domain.activity import ActivityLog
from vfstream.domain.keys import partition_for
from vfstream.domain.ledger import CampaignTotals
from vfstream.domain.records import MAX_ROW_BYTES
from vfstream.domain.reports import ReportIntent
from vfstream.domain.tally import (
    PartialsMessage,
    TallyEffect,
    add_to_window,
    apply_message,
    message_refusal,
    overdue_intents,
)
from vfstream.metrics import CONSUMER_LAG
from vfstream.settings import Settings
from vfstream.sinks.clients.slack import SlackNotifier
from vfstream.sinks.relays.dynamo_mirror import DynamoMirror
from vfstream.sinks.relays.entry_forwarder import EntryForwarder
from vfstream.sinks.relays.score_stream import ScoreStreamForwarder
from vfstream.stream.layout import Table
from vfstream.stream.partition_reader import CommittedRangeReader
from vfstream.stream.ports import FlushPolicy
from vfstream.stream.reporting import ReportLanes, VerdictReporter
from vfstream.stream.tables import FanStateStore
from vfstream.stream.transport import (
    ConsumerHooks,
    FetchedGaps,
    broker_url,
    install_transport,
)
from vfstream.stream.verification import VerificationLedger
from vfstream.web.routes import register_views

log = logging.getLogger(__name__)

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


REANNOUNCE_SECONDS = 5.0
OVERDUE_CHECK_SECONDS = 10.0
LAG_SECONDS = 5.0
ACTIVITY_SECONDS = 1.0
FLUSH_IDLE_SECONDS = 0.05
TAIL_CHECK_SECONDS = 1.0


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


class VfStream:
    """Holds the app and the objects its agents share."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        partitions = settings.topic_partitions
        self.app = build_faust_app(settings)
        app = self.app
        # The stream consumer's objects, handed to it through the transport (not the app).
        self.consumer_hooks = ConsumerHooks(FetchedGaps())
        install_transport(app, self.consumer_hooks)
        self.score_topic = app.topic(settings.score_records_topic, partitions=partitions, **RAW)
        self.dead_topic = app.topic(settings.dead_letter_topic, partitions=partitions, **RAW)
        self.partials_topic = app.topic(settings.partials_topic, partitions=partitions, **RAW)
        self.fan_states = raw_table(app.Table(Table.FAN_STATE.value, **table_options(settings)))
        self.campaign_counts = raw_table(
            app.Table(Table.CAMPAIGN_COUNTS.value, **table_options(settings))
        )
        # Window keys are (campaign, (start, end)) tuples: JSON, not raw bytes.
        self.count_windows = raw_table(
            app.Table(
                Table.COUNT_WINDOWS.value,
                partitions=partitions,
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
        self.ledger = self._build_ledger()
        self.consumer_hooks.recorded = self._recorded_position
        self.reports_topic = app.topic(settings.reports_topic, partitions=partitions, **RAW)
        self.report_books = raw_table(
            app.Table(Table.REPORT_BOOKS.value, **table_options(settings))
        )
        self.reporter = VerdictReporter(
            self.report_books,
            SlackNotifier(
                settings.slack_webhook_url,
                request_timeout_seconds=settings.slack_request_timeout_seconds,
                give_up_seconds=settings.slack_give_up_seconds,
            ),
        )
        self.report_lanes = ReportLanes(
            self.reporter, current_generation=lambda: app.consumer_generation_id
        )
        # Campaigns with runs waiting to settle, and the runs already warned of, per campaign
        # (``overdue_intents``); rebuilt from the table once per consumer generation.
        self._pending_campaigns: set[bytes] = set()
        self._pending_generation: int | None = -1
        self._warned_overdue: dict[bytes, set[str]] = {}
        self.activity = ActivityLog()
        self._register()

    def _build_ledger(self) -> VerificationLedger:
        """The verification ledger over the fan-state table, its range reader and gaps."""
        settings, app = self.settings, self.app
        partitions = settings.topic_partitions
        self.score_reader = CommittedRangeReader(settings, settings.score_records_topic)
        self.fan_store = FanStateStore(self.fan_states, settings)
        gaps = self.consumer_hooks.gaps
        assert gaps is not None
        score_topic = settings.score_records_topic
        return VerificationLedger(
            self.fan_store,
            self._emit_snapshots,
            self._dead_letter,
            current_generation=lambda: app.consumer_generation_id,
            source=self.score_reader,
            limits=settings.limits,
            partitions=partitions,
            known_gap=lambda p, start, end: gaps.holds_no_record(score_topic, p, start, end),
            policy=FlushPolicy(
                every_records=settings.flush_every_records,
                every_seconds=settings.flush_every_seconds,
                tail_idle_seconds=settings.tail_check_idle_seconds,
                cached_tallies=settings.ledger_cached_tallies,
            ),
        )

    async def _emit_snapshots(self, snapshots: list[tuple[str, bytes]]) -> None:
        for campaign, body in snapshots:
            await self.send_keyed(self.partials_topic, campaign.encode(), body)

    def partition_of(self, key: bytes) -> int:
        return partition_for(key, self.settings.topic_partitions)

    async def send_keyed(self, topic: Any, key: bytes, value: bytes) -> None:
        """Send to the partition the one hash gives the key (``domain.keys.partition_for``),
        as every producer of the pipeline's keyed topics does."""
        await topic.send(key=key, value=value, partition=self.partition_of(key))

    def _recorded_position(self, tp: TP) -> int | None:
        if tp.topic != self.score_topic.get_topic_name():
            return None
        return self.ledger.recorded_position(tp.partition)

    async def _dead_letter(self, key: bytes, value: bytes) -> None:
        await self.dead_topic.send(key=key, value=value)

    def owned_partitions(self, topic: str) -> set[int]:
        try:
            assignment = self.app.consumer.assignment()
        except Exception:
            return set()
        return {tp.partition for tp in assignment if tp.topic == topic}

    def owned_score_partitions(self) -> set[int]:
        return self.owned_partitions(self.settings.score_records_topic)

    def _register(self) -> None:
        self._register_agents()
        self._register_ledger_timers()
        self._register_relays()
        self._register_service()

    def _register_agents(self) -> None:
        """The three agents: verify (score batches), tally (partials), report (intents)."""
        app = self.app
        ledger = self.ledger

        @app.agent(self.score_topic, name="verify")
        async def verify(stream: Any) -> None:
            unacked = stream.noack()
            async for event in unacked.events():
                await ledger.handle(event, unacked.ack)

        @app.agent(self.partials_topic, name="tally")
        async def tally(stream: Any) -> None:
            async for event in stream.events():
                try:
                    message = PartialsMessage.from_bytes(event.value)
                    refusal = message_refusal(
                        event.key,
                        message,
                        self.settings.topic_partitions,
                        self.settings.limits,
                        arrived_on=event.message.partition,
                    )
                    if refusal is not None:
                        raise ValueError(refusal)
                    effect = self.apply_tally(event.key or b"", message)
                except Exception as exc:
                    # Not ours, damaged or hostile (any producer may write the topic): one
                    # dead letter, and the tally goes on rather than the agent dying.
                    reason = str(exc) if isinstance(exc, ValidationError) else repr(exc)
                    await self._refuse_partials(event.key, event.value, reason[:500])
                    continue
                for intent in effect.intents:
                    await self.send_keyed(self.reports_topic, event.key, intent.to_bytes())

        # Intents are delivered in per-campaign lanes and acked in offset order once their
        # outcome is durable (vfstream.stream.reporting): a slow Slack holds up one campaign.
        lanes = self.report_lanes
        reports = self.reports_topic.get_topic_name()

        @app.agent(self.reports_topic, name="report")
        async def report(stream: Any) -> None:
            unacked = stream.noack()
            try:
                async for event in unacked.events():
                    await lanes.submit(event, unacked.ack)
            finally:
                await lanes.stop()

        @app.on_partitions_revoked.connect
        async def stop_acking_reports(app: Any, revoked: set[TP], **kwargs: Any) -> None:
            generation = app.consumer_generation_id
            lanes.revoked({tp.partition for tp in revoked if tp.topic == reports}, generation)

        @app.on_partitions_assigned.connect
        async def drop_moved_reports(app: Any, assigned: set[TP], **kwargs: Any) -> None:
            lanes.assigned({tp.partition for tp in assigned if tp.topic == reports})

    def _register_ledger_timers(self) -> None:
        """What keeps the ledger and the tally moving between events and across rebalances."""
        app = self.app
        ledger = self.ledger

        @app.timer(OVERDUE_CHECK_SECONDS)
        async def warn_overdue_runs() -> None:
            if not app.rebalancing:
                for intent in await self.overdue_intents(datetime.now(UTC)):
                    key = intent.run.campaignId.encode()
                    await self.send_keyed(self.reports_topic, key, intent.to_bytes())

        @app.timer(FLUSH_IDLE_SECONDS)
        async def flush_idle() -> None:
            if not app.rebalancing:
                await ledger.flush_idle()

        @app.timer(TAIL_CHECK_SECONDS)
        async def fill_tails() -> None:
            if not app.rebalancing:
                consumed = await self.consumed_positions(self.score_topic.get_topic_name())
                if consumed and not app.rebalancing:
                    await ledger.fill_tails(consumed)

        @app.on_before_shutdown.connect
        async def stop_score_reader(app: Any, **kwargs: Any) -> None:
            await self.score_reader.stop()
            await self.fan_store.stop()

        @app.timer(REANNOUNCE_SECONDS)
        async def reannounce() -> None:
            # Idempotent re-announcement heals a snapshot lost between flush and send.
            owned = self.owned_score_partitions()
            if owned and not app.rebalancing:
                await self._emit_snapshots(ledger.snapshots_for(owned))

        @app.on_partitions_revoked.connect
        async def on_revoked(app: Any, revoked: set[TP], **kwargs: Any) -> None:
            # Books of partitions kept through the rebalance go when the new generation's
            # events arrive (VerificationLedger._book_for), not here: this signal may come
            # after the agent has already applied some of them.
            await ledger.release(
                {tp.partition for tp in revoked if tp.topic == self.score_topic.get_topic_name()}
            )

    def _register_service(self) -> None:
        """Diagnostics, metrics, the web views, and the lag and activity samples."""
        app = self.app

        @app.task
        async def dump_tasks_on_sigusr2() -> None:
            from vfstream.stream.diagnostics import install_task_dump

            install_task_dump(asyncio.get_running_loop(), app)

        @app.task
        async def quiet_client_debug() -> None:
            # Debug records from the Kafka client cost real time per message when a handler
            # lets them through; keep the client at INFO or above whatever the worker's level.
            for name in ("aiokafka", "faust.transport", "faust.topics"):
                logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger().level))

        from faust.sensors.prometheus import setup_prometheus_sensors

        # A registry per app: Faust's metrics would clash in the global one when a process
        # builds more than one app (tests); /metrics serves both (see web.py).
        self.faust_metrics = CollectorRegistry()
        setup_prometheus_sensors(
            app, pattern="/metrics/faust", registry=self.faust_metrics, name_prefix="faust"
        )
        register_views(self)

        @app.timer(LAG_SECONDS)
        async def measure_lag() -> None:
            await self.measure_lag()

        @app.timer(ACTIVITY_SECONDS)
        async def sample_activity() -> None:
            applied = self.ledger.records_in + self.ledger.filled_records
            self.activity.sample_records(time.time(), applied)

    def _register_relays(self) -> None:
        """The listener and the relays to the outside world, as the settings turn them on."""
        app = self.app

        if self.settings.listen_for_notifications:

            @app.task
            async def listen_for_scoring_files() -> None:
                await self._listen_for_scoring_files()

        # Relays to the outside world: each is a consumer group of its own that every worker
        # joins, so their partitions spread over the workers like the agents' do.
        if self.settings.mirror_to_dynamodb:

            @app.task
            async def mirror_to_dynamodb() -> None:
                await self._keep_running("DynamoDB mirror", DynamoMirror(self.settings).run)

        if self.settings.forward_to_entry_service:

            @app.task
            async def forward_rank0_fans() -> None:
                await self._keep_running("entry forwarder", EntryForwarder(self.settings).run)

        if self.settings.forward_to_kinesis:

            @app.task
            async def forward_score_records() -> None:
                forwarder = ScoreStreamForwarder(self.settings)
                await self._keep_running("Kinesis forwarder", forwarder.run)

    async def _positions(self) -> dict[TP, int | None]:
        """Where the stream's consumer stands in each assigned partition."""
        consumer = self.app.consumer
        try:
            return {tp: await consumer.position(tp) for tp in consumer.assignment()}
        except Exception:  # mid-rebalance: the next tick asks again
            log.debug("positions unavailable", exc_info=True)
            return {}

    async def consumed_positions(self, topic: str) -> dict[int, int | None]:
        """Where the stream's consumer stands in each owned partition of ``topic``."""
        return {
            tp.partition: at for tp, at in (await self._positions()).items() if tp.topic == topic
        }

    async def measure_lag(self) -> None:
        consumer = self.app.consumer
        score_lag: dict[int, int] = {}
        for tp, position in (await self._positions()).items():
            highwater = consumer.highwater(tp)
            if highwater is not None and position is not None:
                behind = max(highwater - position, 0)
                CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(behind)
                if tp.topic == self.settings.score_records_topic:
                    score_lag[tp.partition] = behind
        self.activity.sample_lag(time.time(), score_lag)

    def apply_tally(self, key: bytes, message: PartialsMessage) -> TallyEffect:
        """One partials message into its campaign's totals and windowed change.

        The totals are written only when they changed: an identical snapshot announced again
        writes no changelog record and makes the mirror rewrite nothing.
        """
        raw = self.campaign_counts.get(key)
        totals = CampaignTotals.from_bytes(raw) if raw else CampaignTotals(campaignId=key.decode())
        effect = apply_message(totals, message, datetime.now(UTC))
        encoded = totals.to_bytes()
        if encoded != raw:
            self.campaign_counts[key] = encoded
        self._note_pending(key, totals)
        if not effect.moved.is_zero:
            campaign = key.decode()
            try:
                current = self.count_windows[campaign].current()
            except KeyError:
                current = None
            self.count_windows[campaign] = add_to_window(current, effect.moved)
        return effect

    def _note_pending(self, key: bytes, totals: CampaignTotals) -> None:
        """Keep the set of campaigns with runs waiting to settle, and forget the warnings of
        runs that settled or were let go: both stay as small as the runs still pending."""
        if totals.announced:
            self._pending_campaigns.add(key)
            warned = self._warned_overdue.get(key)
            if warned:
                warned &= set(totals.announced)
        else:
            self._pending_campaigns.discard(key)
            self._warned_overdue.pop(key, None)

    async def overdue_intents(self, now: datetime) -> list[ReportIntent]:
        """Warnings for runs of campaigns this worker tallies that have not settled in time.

        Only campaigns with runs waiting to settle are looked at (``_pending_campaigns``,
        kept by ``apply_tally``); after each rebalance the set is rebuilt once by a scan of
        the table in a thread, off the event loop. Each run is warned of once per worker
        life; the reporter's book absorbs the repeat after a restart or a move.
        """
        generation = self.app.consumer_generation_id
        if self._pending_generation != generation:
            try:
                found = await asyncio.to_thread(_campaigns_with_pending_runs, self.campaign_counts)
            except Exception:  # a store closing mid-rebalance: the next tick scans again
                log.warning("scanning for runs waiting to settle failed", exc_info=True)
                return []
            self._pending_campaigns |= found
            self._pending_generation = generation
        owned = self.owned_partitions(self.settings.partials_topic)
        limit = timedelta(seconds=self.settings.report_overdue_seconds)
        intents: list[ReportIntent] = []
        for key in sorted(self._pending_campaigns):
            if self.partition_of(key) not in owned:
                continue  # a standby copy, or moved: the active owner warns
            raw = self.campaign_counts.get(key)
            if not raw:
                self._pending_campaigns.discard(key)
                continue
            warned = self._warned_overdue.setdefault(key, set())
            late = overdue_intents(CampaignTotals.from_bytes(raw), now, limit, warned)
            warned.update(intent.run.runId for intent in late)
            intents.extend(late)
        return intents

    async def _refuse_partials(self, key: bytes | None, value: bytes | None, reason: str) -> None:
        log.warning("partials message refused: %s", reason)
        letter = {
            "kind": "partials-message",
            "raw": (value or b"")[:MAX_ROW_BYTES].decode("utf-8", "replace"),
            "reasons": [reason],
        }
        await self._dead_letter(key or b"", orjson.dumps(letter))

    async def _keep_running(
        self, name: str, run: Callable[[Callable[[], bool]], Awaitable[Any]]
    ) -> None:
        """Run a relay until the worker stops; restart it after a failure."""
        while not self.app.should_stop:
            try:
                await run(lambda: self.app.should_stop)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; restarting in 5s", name)
                await asyncio.sleep(5)

    async def _listen_for_scoring_files(self) -> None:
        from vfstream.sources.s3.notifications import listen_for_files

        await listen_for_files(self.settings, lambda: self.app.should_stop)


def _campaigns_with_pending_runs(table: Any) -> set[bytes]:
    """The campaign keys of the counts table whose totals have runs waiting to settle (a
    scan of the local store: run in a thread)."""
    found: set[bytes] = set()
    for key, raw in list(table.data.items()):
        if raw and b'"announced":{}' not in raw:
            found.add(bytes(key))
    return found


def build_app(settings: Settings) -> VfStream:
    return VfStream(settings)


async def prepare_worker(settings: Settings) -> None:
    """Create the pipeline's topics and make sure this principal can see every one, before
    Faust starts: a refused connection or a missing ACL fails the start in seconds with
    what is wrong (``vfstream.kafka.access``), instead of a worker retrying in a loop."""
    from vfstream.topics import ensure_topics, partition_counts, pipeline_topics

    await ensure_topics(settings)
    await partition_counts(settings, [spec.name for spec in pipeline_topics(settings)])


def run_worker(settings: Settings, loglevel: str = "info") -> int:
    asyncio.run(prepare_worker(settings))
    stream = build_app(settings)

    sys.argv = [sys.argv[0], "worker", "--loglevel", loglevel]
    stream.app.main()
    return 0
