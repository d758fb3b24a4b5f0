"""The worker's assembly: the Faust app, its transport, the topology
(``vfstream.stream.topology``: read that first) and the parts that run beside the agents.

Each part is a small ``mode.Service`` with ``start()``/``stop()``: a timer (``Every``) or a
task (``Task``: a relay kept running, the S3-notification listener, the diagnostics). The
worker lists them in ``Worker.parts``; one Faust task starts them after table recovery, where
Faust starts its own tasks and timers, as runtime dependencies of the app, which stops them
when the worker stops. The web routes and Faust's Prometheus sensors are declared when the
worker is built: Faust serves them, and its web server takes no routes once started.

Objects are passed in, never hung on the Faust app: the stream consumer gets its hooks
through the transport (``vfstream.stream.transport.install_transport``), each part its
collaborators and the worker's ``stopping`` predicate.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from faust.sensors.prometheus import setup_prometheus_sensors
from faust.types import TP
from mode import Service
from prometheus_client import CollectorRegistry

from vfstream.domain.activity import ActivityLog
from vfstream.metrics import CONSUMER_LAG
from vfstream.settings import Settings
from vfstream.sinks.relays.dynamo_mirror import DynamoMirror
from vfstream.sinks.relays.entry_forwarder import EntryForwarder
from vfstream.sinks.relays.score_stream import ScoreStreamForwarder
from vfstream.sources.s3.notifications import listen_for_files
from vfstream.stream.app import build_faust_app
from vfstream.stream.diagnostics import install_task_dump
from vfstream.stream.topology import Topology
from vfstream.stream.transport import ConsumerHooks, FetchedGaps, install_transport
from vfstream.web.routes import register_views

log = logging.getLogger(__name__)

REANNOUNCE_SECONDS = 5.0
OVERDUE_CHECK_SECONDS = 10.0
LAG_SECONDS = 5.0
ACTIVITY_SECONDS = 1.0
FLUSH_IDLE_SECONDS = 0.05
TAIL_CHECK_SECONDS = 1.0

Stopping = Callable[[], bool]


class Every(Service):
    """A timer: ``tick`` every ``seconds`` (the first after one period, as Faust's
    ``app.timer``), none once the worker has begun to stop."""

    def __init__(
        self, name: str, seconds: float, tick: Callable[[], Awaitable[None]], stopping: Stopping
    ) -> None:
        super().__init__()
        self.name, self.seconds, self._tick, self._stopping = name, seconds, tick, stopping

    @Service.task
    async def _ticking(self) -> None:
        async for _ in self.itertimer(self.seconds, name=self.name, max_drift_correction=0.1):
            if self._stopping():
                break
            await self._tick()

    @property
    def label(self) -> str:
        return f"{type(self).__name__}: {self.name}"


class Task(Service):
    """A task that runs ``body`` once, from its start until it returns or the part stops."""

    def __init__(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        super().__init__()
        self.name, self._body = name, body

    @Service.task
    async def _running(self) -> None:
        await self._body()

    @property
    def label(self) -> str:
        return f"{type(self).__name__}: {self.name}"


def relay(name: str, make: Callable[[], Any], stopping: Stopping) -> Task:
    """A relay to the outside world, kept running until the worker stops: each is a consumer
    group of its own that every worker joins, so their partitions spread over the workers
    like the agents' do. Made when the part starts; run again 5 s after a failure."""

    async def keep_running() -> None:
        run = make().run
        while not stopping():
            try:
                await run(stopping)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; restarting in 5s", name)
                await asyncio.sleep(5)

    return Task(name, keep_running)


class Worker:
    """The assembled worker: the Faust app, its topology, and the parts around it. Also what
    the web views ask of the worker (``vfstream.web.ports.Worker``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = app = build_faust_app(settings)
        gaps = FetchedGaps()
        hooks = ConsumerHooks(gaps)
        install_transport(app, hooks)  # before the topology: an agent builds app.transport
        self.topology = topology = Topology(app, settings, gaps=gaps)
        hooks.recorded = topology.recorded_position
        # What the web views read (vfstream.web.ports.Worker).
        self.fan_states, self.campaign_counts = topology.fan_states, topology.campaign_counts
        self.count_windows, self.report_books = topology.count_windows, topology.report_books
        self.ledger = topology.ledger
        self.partition_of = topology.partition_of
        self.owned_partitions = topology.owned_partitions
        self.activity = ActivityLog()
        # A registry per app: Faust's metrics would clash in the global one when a process
        # builds more than one app (tests); /metrics serves both (see web.py).
        self.faust_metrics = CollectorRegistry()
        setup_prometheus_sensors(
            app, pattern="/metrics/faust", registry=self.faust_metrics, name_prefix="faust"
        )
        register_views(self)
        self.parts: list[Service] = self._parts()
        app.task(self._start_parts)

    def stopping(self) -> bool:
        return bool(self.app.should_stop)

    def owned_score_partitions(self) -> set[int]:
        return self.owned_partitions(self.settings.score_records_topic)

    def _parts(self) -> list[Service]:
        """What runs beside the agents, as the settings turn it on."""
        settings, stopping = self.settings, self.stopping
        parts: list[Service] = [
            # What keeps the ledger and the tally moving between events and rebalances.
            Every("warn overdue runs", OVERDUE_CHECK_SECONDS, self._warn_overdue_runs, stopping),
            Every("flush idle books", FLUSH_IDLE_SECONDS, self._flush_idle, stopping),
            Every("fill tails", TAIL_CHECK_SECONDS, self._fill_tails, stopping),
            Every("reannounce snapshots", REANNOUNCE_SECONDS, self._reannounce, stopping),
        ]
        if settings.listen_for_notifications:
            listen = lambda: listen_for_files(settings, stopping)  # noqa: E731
            parts.append(Task("notification listener", listen))
        if settings.mirror_to_dynamodb:
            parts.append(relay("DynamoDB mirror", lambda: DynamoMirror(settings), stopping))
        if settings.forward_to_entry_service:
            parts.append(relay("entry forwarder", lambda: EntryForwarder(settings), stopping))
        if settings.forward_to_kinesis:
            forwarder = lambda: ScoreStreamForwarder(settings)  # noqa: E731
            parts.append(relay("Kinesis forwarder", forwarder, stopping))
        parts += [
            Task("diagnostics", self._diagnostics),
            Every("measure lag", LAG_SECONDS, self._measure_lag, stopping),
            Every("sample activity", ACTIVITY_SECONDS, self._sample_activity, stopping),
        ]
        return parts

    async def _start_parts(self) -> None:
        for part in self.parts:
            await self.app.add_runtime_dependency(part)

    async def _diagnostics(self) -> None:
        install_task_dump(asyncio.get_running_loop(), self.app)
        # Debug records from the Kafka client cost real time per message when a handler
        # lets them through; keep the client at INFO or above whatever the worker's level.
        for name in ("aiokafka", "faust.transport", "faust.topics"):
            logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger().level))

    async def _warn_overdue_runs(self) -> None:
        topology = self.topology
        if not self.app.rebalancing:
            for intent in await topology.tally.overdue_intents(datetime.now(UTC)):
                key = intent.run.campaignId.encode()
                await topology.send_keyed(topology.reports_topic, key, intent.to_bytes())

    async def _flush_idle(self) -> None:
        if not self.app.rebalancing:
            await self.ledger.flush_idle()

    async def _fill_tails(self) -> None:
        if not self.app.rebalancing:
            consumed = await self.consumed_positions(self.settings.score_records_topic)
            if consumed and not self.app.rebalancing:
                await self.ledger.fill_tails(consumed)

    async def _reannounce(self) -> None:
        # Idempotent re-announcement heals a snapshot lost between flush and send.
        owned = self.owned_score_partitions()
        if owned and not self.app.rebalancing:
            await self.topology.reannounce(owned)

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

    async def _measure_lag(self) -> None:
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

    async def _sample_activity(self) -> None:
        applied = self.ledger.records_in + self.ledger.filled_records
        self.activity.sample_records(time.time(), applied)


def build_app(settings: Settings) -> Worker:
    return Worker(settings)


async def prepare_worker(settings: Settings) -> None:
    """Create the pipeline's topics and make sure this principal can see every one, before
    Faust starts: a refused connection or a missing ACL fails the start in seconds with
    what is wrong (``vfstream.kafka.access``), instead of a worker retrying in a loop."""
    from vfstream.topics import ensure_topics, partition_counts, pipeline_topics

    await ensure_topics(settings)
    await partition_counts(settings, [spec.name for spec in pipeline_topics(settings)])


def run_worker(settings: Settings, loglevel: str = "info") -> int:
    asyncio.run(prepare_worker(settings))
    worker = build_app(settings)

    sys.argv = [sys.argv[0], "worker", "--loglevel", loglevel]
    worker.app.main()
    return 0
