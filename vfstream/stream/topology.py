"""The pipeline as the worker runs it: its topics, its four tables and its three agents.
Read this first; the worker's assembly (``vfstream.stream.assembly``) builds it and runs
the relays, the listener, the web and the timers beside it.

```
score-record topic ─▶ verify ─▶ fan-state table (changelog)
                        │        + partial counts per source partition
                        └▶ partials topic (snapshots) ─▶ tally ─▶ campaign-counts table
                                                           │     └▶ campaign-count-windows table
                                                           └▶ reports topic (run settled?)
reports topic ─▶ report ─▶ slack-reports table, Slack webhook
refused rows and messages ─▶ dead-letter topic
```

The agents are thin: ``verify`` hands each score batch to the verification ledger
(``vfstream.stream.verification``), ``tally`` applies each partials message to the campaign's
totals and windows (``vfstream.stream.tally``), ``report`` delivers each intent in its
campaign's lane (``vfstream.stream.reporting``).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import orjson
from faust.types import TP
from pydantic import ValidationError

from vfstream.domain.keys import partition_for
from vfstream.domain.records import MAX_ROW_BYTES
from vfstream.domain.tally import message_refusal, read_message
from vfstream.settings import Settings
from vfstream.sinks.clients.slack import SlackNotifier
from vfstream.stream.app import RAW, raw_table, table_options, windowed_table
from vfstream.stream.layout import Table
from vfstream.stream.partition_reader import CommittedRangeReader
from vfstream.stream.ports import FlushPolicy
from vfstream.stream.reporting import ReportLanes, VerdictReporter
from vfstream.stream.tables import FanStateStore
from vfstream.stream.tally import CampaignTally
from vfstream.stream.transport import FetchedGaps
from vfstream.stream.verification import VerificationLedger

log = logging.getLogger(__name__)


class Topology:
    """The worker's topics, tables and agents, declared on ``app`` (in this order: Faust keeps
    the order it was given)."""

    def __init__(self, app: Any, settings: Settings, *, gaps: FetchedGaps) -> None:
        self.app = app
        self.settings = settings
        partitions = settings.topic_partitions
        generation = self._generation

        self.score_topic = app.topic(settings.score_records_topic, partitions=partitions, **RAW)
        self.dead_topic = app.topic(settings.dead_letter_topic, partitions=partitions, **RAW)
        self.partials_topic = app.topic(settings.partials_topic, partitions=partitions, **RAW)
        self.fan_states = raw_table(app.Table(Table.FAN_STATE.value, **table_options(settings)))
        self.campaign_counts = raw_table(
            app.Table(Table.CAMPAIGN_COUNTS.value, **table_options(settings))
        )
        self.count_windows = windowed_table(app, Table.COUNT_WINDOWS.value, settings)

        # verify: score batches into fan states and partial snapshots.
        self.score_reader = CommittedRangeReader(settings, settings.score_records_topic)
        self.fan_store = FanStateStore(self.fan_states, settings)
        score_topic = settings.score_records_topic
        self.ledger = VerificationLedger(
            self.fan_store,
            self._emit_snapshots,
            self.dead_letter,
            current_generation=generation,
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

        # report: intents of settled and overdue runs, to Slack.
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
        self.report_lanes = ReportLanes(self.reporter, current_generation=generation)

        # tally: partials into campaign totals and windows, and intents for the reports.
        self.tally = CampaignTally(
            self.campaign_counts,
            self.count_windows,
            overdue_after=timedelta(seconds=settings.report_overdue_seconds),
            partition_of=self.partition_of,
            owned=lambda: self.owned_partitions(settings.partials_topic),
            current_generation=generation,
        )
        self._declare_agents()

    def _generation(self) -> int | None:
        generation: int | None = self.app.consumer_generation_id
        return generation

    def _declare_agents(self) -> None:
        app, ledger, lanes = self.app, self.ledger, self.report_lanes

        @app.agent(self.score_topic, name="verify")
        async def verify(stream: Any) -> None:
            unacked = stream.noack()
            async for event in unacked.events():
                await ledger.handle(event, unacked.ack)

        @app.agent(self.partials_topic, name="tally")
        async def tally(stream: Any) -> None:
            async for event in stream.events():
                await self._tally(event)

        # Intents are delivered in per-campaign lanes and acked in offset order once their
        # outcome is durable (vfstream.stream.reporting): a slow Slack holds up one campaign.
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

        @app.on_before_shutdown.connect
        async def stop_score_reader(app: Any, **kwargs: Any) -> None:
            await self.score_reader.stop()
            await self.fan_store.stop()

        scores = self.score_topic.get_topic_name()

        @app.on_partitions_revoked.connect
        async def on_revoked(app: Any, revoked: set[TP], **kwargs: Any) -> None:
            # Books of partitions kept through the rebalance go when the new generation's
            # events arrive (verification.Books.for_event), not here: this signal may come
            # after the agent has already applied some of them.
            await ledger.release({tp.partition for tp in revoked if tp.topic == scores})

    async def _tally(self, event: Any) -> None:
        try:
            message = read_message(event.value)
            refusal = message_refusal(
                event.key,
                message,
                self.settings.topic_partitions,
                self.settings.limits,
                arrived_on=event.message.partition,
            )
            if refusal is not None:
                raise ValueError(refusal)
            effect = self.tally.apply(event.key or b"", message)
        except Exception as exc:
            # Not ours, damaged or hostile (any producer may write the topic): one dead
            # letter, and the tally goes on rather than the agent dying.
            reason = str(exc) if isinstance(exc, ValidationError) else repr(exc)
            await self._refuse_partials(event.key, event.value, reason[:500])
            return
        for intent in effect.intents:
            await self.send_keyed(self.reports_topic, event.key, intent.to_bytes())

    async def _emit_snapshots(self, snapshots: list[tuple[str, bytes]]) -> None:
        for campaign, body in snapshots:
            await self.send_keyed(self.partials_topic, campaign.encode(), body)

    async def reannounce(self, partitions: set[int]) -> None:
        """Announce the partial snapshots of ``partitions`` again (idempotent)."""
        await self._emit_snapshots(self.ledger.snapshots_for(partitions))

    def partition_of(self, key: bytes) -> int:
        return partition_for(key, self.settings.topic_partitions)

    async def send_keyed(self, topic: Any, key: bytes, value: bytes) -> None:
        """Send to the partition the one hash gives the key (``domain.keys.partition_for``),
        as every producer of the pipeline's keyed topics does."""
        await topic.send(key=key, value=value, partition=self.partition_of(key))

    def recorded_position(self, tp: TP) -> int | None:
        """Where the ledger recorded a score partition's reading (the transport resumes
        there at the latest); None for other topics."""
        if tp.topic != self.score_topic.get_topic_name():
            return None
        return self.ledger.recorded_position(tp.partition)

    async def dead_letter(self, key: bytes, value: bytes) -> None:
        await self.dead_topic.send(key=key, value=value)

    async def _refuse_partials(self, key: bytes | None, value: bytes | None, reason: str) -> None:
        log.warning("partials message refused: %s", reason)
        letter = {
            "kind": "partials-message",
            "raw": (value or b"")[:MAX_ROW_BYTES].decode("utf-8", "replace"),
            "reasons": [reason],
        }
        await self.dead_letter(key or b"", orjson.dumps(letter))

    def owned_partitions(self, topic: str) -> set[int]:
        """The partitions of ``topic`` this worker consumes now."""
        try:
            assignment = self.app.consumer.assignment()
        except Exception:
            return set()
        return {tp.partition for tp in assignment if tp.topic == topic}
