"""Which open ingest transactions belong to dead ingests. No I/O.

A scoring file is one Kafka transaction. An ingest killed with ``kill -9`` (or a pod lost)
leaves it open, and ``read_committed`` workers stop at it until the broker times it out
(``ingest_transaction_timeout_ms``, ten minutes): every campaign stalls. So every ingest
announces its transaction on a compacted topic and refreshes the announcement while it
works; an announcement that stops being refreshed, or whose process is gone from this very
host, marks a dead ingest whose transactional id is then fenced (which aborts the
transaction at once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

HEARTBEAT_SECONDS = 2.0
# An announcement this old belongs to a dead ingest, whatever host it ran on. A live one
# refreshes every HEARTBEAT_SECONDS; the margin covers a loaded machine.
STALE_SECONDS = 10.0

OPEN = "open"
CLOSED = "closed"


@dataclass(frozen=True)
class InflightIngest:
    """One announcement: an ingest's transaction and who holds it."""

    transactional_id: str
    state: str
    object_url: str
    host: str
    pid: int
    heartbeat: float  # epoch seconds of the last refresh

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "state": self.state,
                "object": self.object_url,
                "host": self.host,
                "pid": self.pid,
                "heartbeat": self.heartbeat,
            }
        )

    @classmethod
    def from_entry(cls, key: bytes, value: bytes) -> InflightIngest | None:
        """An announcement read back from the topic; None when it is not one."""
        try:
            body: dict[str, Any] = orjson.loads(value)
            return cls(
                transactional_id=key.decode(),
                state=str(body["state"]),
                object_url=str(body.get("object", "")),
                host=str(body.get("host", "")),
                pid=int(body.get("pid", 0)),
                heartbeat=float(body["heartbeat"]),
            )
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return None


def dead_ingests(
    announcements: Iterable[InflightIngest],
    *,
    now: float,
    host: str,
    process_alive: Callable[[int], bool],
) -> list[InflightIngest]:
    """Open announcements whose ingest is gone: silent for STALE_SECONDS, or from a process of
    this host that no longer exists (known at once, no need to wait)."""
    dead: list[InflightIngest] = []
    for entry in announcements:
        if entry.state != OPEN:
            continue
        silent = now - entry.heartbeat > STALE_SECONDS
        gone_here = entry.host == host and entry.pid > 0 and not process_alive(entry.pid)
        if silent or gone_here:
            dead.append(entry)
    return dead
