"""Which open ingest transactions belong to dead ingests."""

from __future__ import annotations

from vfstream.domain.inflight import CLOSED, OPEN, STALE_SECONDS, InflightIngest, dead_ingests


def announced(tid: str, *, state: str = OPEN, host: str = "h1", pid: int = 10, age: float = 0.0):
    return InflightIngest(tid, state, f"s3://b/{tid}", host, pid, heartbeat=1000.0 - age)


def test_an_announcement_round_trips_and_junk_is_not_one() -> None:
    entry = announced("t1")

    assert InflightIngest.from_entry(b"t1", entry.to_bytes()) == entry
    assert InflightIngest.from_entry(b"t1", b"not json") is None
    assert InflightIngest.from_entry(b"t1", b'{"state": "open"}') is None
    assert InflightIngest.from_entry(b"\xff", entry.to_bytes()) is None


def test_silent_too_long_or_gone_from_this_host_is_dead_closed_never_is() -> None:
    entries = [
        announced("fresh"),
        announced("silent", age=STALE_SECONDS + 1),
        announced("gone", pid=99),
        announced("elsewhere", host="h2", pid=99),
        announced("done", state=CLOSED, age=STALE_SECONDS * 10),
    ]

    dead = dead_ingests(entries, now=1000.0, host="h1", process_alive=lambda pid: pid != 99)

    assert [entry.transactional_id for entry in dead] == ["silent", "gone"]
