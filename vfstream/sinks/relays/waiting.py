"""What a relay's waiting lanes tell operators: the log lines, the retries metric and the
relay's ``/statuses`` body.

A lane that cannot deliver waits for its destination (``Wait``): a warning is logged when
it starts waiting and every minute while it waits, an info line when it delivers again;
every failed attempt counts in ``vfstream_relay_retries_total{relay,destination}``. The
status lists the lanes waiting longest first, at most ``LANES_SHOWN`` of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sized
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from vfstream.errors import SHOWN_CHARS
from vfstream.metrics import RELAY_RETRIES

log = logging.getLogger("vfstream.sinks.relays.lanes")  # the lanes' log lines, as before

STILL_WAITING_LOG_SECONDS = 60.0  # a lane still waiting is logged again this often
LANES_SHOWN = 20  # waiting lanes a status lists (the longest waiting)


@dataclass(frozen=True)
class Wait:
    """Why an attempt's undelivered parcels must wait: the destination, and its error."""

    destination: str
    error: str


class WaitingLane(Protocol):
    """What the reports read and write of a lane (``lanes.Lane``)."""

    name: str
    items: Sized
    failures: int  # failed attempts in a row
    waiting: Wait | None
    waiting_since: float | None  # wall clock
    logged_at: float


def iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


class WaitReports:
    """A relay's lanes' waits, as logs, metrics and status (module docstring)."""

    def __init__(self, relay: str, lane_noun: str | None) -> None:
        self.relay = relay
        self.lane_noun = lane_noun  # what a lane is, in log lines ("campaign")
        self.retries = 0
        self.last_error: tuple[float, str, Wait] | None = None  # (when, lane, why)

    def of(self, lane: WaitingLane) -> str:
        return f" ({self.lane_noun} {lane.name[:SHOWN_CHARS]!r})" if self.lane_noun else ""

    def waits(self, lane: WaitingLane, wait: Wait) -> None:
        """An attempt of ``lane`` failed (its ``failures`` already counted it)."""
        now = time.time()
        self.retries += 1
        RELAY_RETRIES.labels(self.relay, wait.destination).inc()
        self.last_error = (now, lane.name, wait)
        lane.waiting = wait
        if lane.waiting_since is None:
            lane.waiting_since = lane.logged_at = now
            log.warning(
                "%s: waiting for %s%s: %s; its %d record(s) stay uncommitted and are retried",
                self.relay,
                wait.destination,
                self.of(lane),
                wait.error,
                len(lane.items),
            )
        elif now - lane.logged_at >= STILL_WAITING_LOG_SECONDS:
            lane.logged_at = now
            log.warning(
                "%s: still waiting for %s%s since %s (%d attempts, %d record(s)): %s",
                self.relay,
                wait.destination,
                self.of(lane),
                iso(lane.waiting_since),
                lane.failures,
                len(lane.items),
                wait.error,
            )

    def delivers_again(self, lane: WaitingLane) -> None:
        assert lane.waiting is not None
        log.info(
            "%s: delivering again%s after waiting %.0f s for %s",
            self.relay,
            self.of(lane),
            time.time() - (lane.waiting_since or time.time()),
            lane.waiting.destination,
        )
        lane.waiting = lane.waiting_since = None
        lane.failures = 0

    def status(self, waiting: list[WaitingLane], held: int, oldest: float | None) -> dict[str, Any]:
        """The relay's status: ``waiting`` its waiting lanes, longest waiting first."""
        now = time.time()
        body: dict[str, Any] = {
            "state": "waiting" if waiting else "delivering",
            "held": held,
            "oldestUndeliveredSeconds": (
                round(max(now - oldest, 0.0), 1) if oldest is not None else None
            ),
            "retries": self.retries,
            "lastError": None,
        }
        if self.last_error is not None:
            at, lane, wait = self.last_error
            body["lastError"] = {
                "at": iso(at),
                "destination": wait.destination,
                "error": wait.error[:SHOWN_CHARS],
                **({"lane": lane[:SHOWN_CHARS]} if lane else {}),
            }
        if waiting:
            first = waiting[0]
            assert first.waiting is not None
            body["waitingFor"] = first.waiting.destination
            body["since"] = iso(first.waiting_since)
            body["error"] = first.waiting.error[:SHOWN_CHARS]
            body["lanesWaiting"] = len(waiting)
            body["laneKind"] = self.lane_noun or "lane"
            body["lanes"] = [
                {
                    "lane": lane.name[:SHOWN_CHARS],
                    "waitingFor": lane.waiting.destination,
                    "since": iso(lane.waiting_since),
                    "error": lane.waiting.error[:SHOWN_CHARS],
                    "attempts": lane.failures,
                    "held": len(lane.items),
                }
                for lane in waiting[:LANES_SHOWN]
                if lane.waiting is not None
            ]
        return body
