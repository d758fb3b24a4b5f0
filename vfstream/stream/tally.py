"""The tally agent's work on the worker's tables: a partials message into its campaign's
totals (the campaign-counts table) and windowed change (the count-windows table), and the
warnings for runs that have not settled in time. The rules themselves are
``vfstream.domain.tally``'s; this is their glue to Faust's tables."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from vfstream.domain.ledger import CampaignTotals
from vfstream.domain.reports import ReportIntent
from vfstream.domain.tally import (
    PartialsMessage,
    TallyEffect,
    add_to_window,
    apply_message,
    overdue_intents,
)

log = logging.getLogger(__name__)


class CampaignTally:
    """The campaign totals and windows this worker tallies, and the runs waiting to settle."""

    def __init__(
        self,
        counts: Any,
        windows: Any,
        *,
        overdue_after: timedelta,
        partition_of: Callable[[bytes], int],
        owned: Callable[[], set[int]],
        current_generation: Callable[[], int | None],
    ) -> None:
        self.counts = counts
        self.windows = windows
        self._overdue_after = overdue_after
        self._partition_of = partition_of
        self._owned = owned  # the partials partitions this worker consumes now
        self._current_generation = current_generation
        # Campaigns with runs waiting to settle, and the runs already warned of, per campaign
        # (``overdue_intents``); rebuilt from the table once per consumer generation.
        self._pending_campaigns: set[bytes] = set()
        self._pending_generation: int | None = -1
        self._warned_overdue: dict[bytes, set[str]] = {}

    def apply(self, key: bytes, message: PartialsMessage) -> TallyEffect:
        """One partials message into its campaign's totals and windowed change.

        The totals are written only when they changed: an identical snapshot announced again
        writes no changelog record and makes the mirror rewrite nothing.
        """
        raw = self.counts.get(key)
        totals = CampaignTotals.from_bytes(raw) if raw else CampaignTotals(campaignId=key.decode())
        effect = apply_message(totals, message, datetime.now(UTC))
        encoded = totals.to_bytes()
        if encoded != raw:
            self.counts[key] = encoded
        self._note_pending(key, totals)
        if not effect.moved.is_zero:
            campaign = key.decode()
            try:
                current = self.windows[campaign].current()
            except KeyError:
                current = None
            self.windows[campaign] = add_to_window(current, effect.moved)
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
        kept by ``apply``); after each rebalance the set is rebuilt once by a scan of the
        table in a thread, off the event loop. Each run is warned of once per worker life;
        the reporter's book absorbs the repeat after a restart or a move.
        """
        generation = self._current_generation()
        if self._pending_generation != generation:
            try:
                found = await asyncio.to_thread(campaigns_with_pending_runs, self.counts)
            except Exception:  # a store closing mid-rebalance: the next tick scans again
                log.warning("scanning for runs waiting to settle failed", exc_info=True)
                return []
            self._pending_campaigns |= found
            self._pending_generation = generation
        owned = self._owned()
        intents: list[ReportIntent] = []
        for key in sorted(self._pending_campaigns):
            if self._partition_of(key) not in owned:
                continue  # a standby copy, or moved: the active owner warns
            raw = self.counts.get(key)
            if not raw:
                self._pending_campaigns.discard(key)
                continue
            warned = self._warned_overdue.setdefault(key, set())
            late = overdue_intents(CampaignTotals.from_bytes(raw), now, self._overdue_after, warned)
            warned.update(intent.run.runId for intent in late)
            intents.extend(late)
        return intents


def campaigns_with_pending_runs(table: Any) -> set[bytes]:
    """The campaign keys of the counts table whose totals have runs waiting to settle (a
    scan of the local store: run in a thread)."""
    found: set[bytes] = set()
    for key, raw in list(table.data.items()):
        if raw and b'"announced":{}' not in raw:
            found.add(bytes(key))
    return found
