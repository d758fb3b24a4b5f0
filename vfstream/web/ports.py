"""What the web views ask of the worker they run in (``vfstream.stream.assembly.Worker`` in a
worker, a stand-in in the tests). The worker passes itself in when it registers the routes
(``vfstream.web.routes``); the views name only this protocol, so ``web`` never imports the
worker's app and the app can import ``web``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from vfstream.domain.activity import ActivityLog
from vfstream.settings import Settings


class LedgerCounters(Protocol):
    """The verification ledger's counters, shown on ``/statuses``."""

    records_in: int
    statuses: Mapping[str, int]
    stale_events: int
    filled_records: int
    known_gaps: int


class Worker(Protocol):
    settings: Settings
    # The Faust app: its web server and pages, its HTTP session, its assignment (asked
    # through vfstream.stream.layout), its recovery state.
    app: Any
    # The worker's tables (Faust tables of raw bytes; the windowed one keyed by JSON).
    fan_states: Any
    campaign_counts: Any
    report_books: Any
    count_windows: Any
    ledger: LedgerCounters
    activity: ActivityLog
    # Faust's own metrics, served beside vfstream's on /metrics.
    faust_metrics: CollectorRegistry

    def partition_of(self, key: bytes) -> int:
        """The partition the one hash gives ``key`` (``domain.keys.partition_for``)."""
        ...

    def owned_partitions(self, topic: str) -> set[int]:
        """The partitions of ``topic`` this worker consumes now."""
        ...

    def owned_score_partitions(self) -> set[int]: ...
