"""The console's answers without a worker: the tables' summary (ordering, bounds, decoding
only what changed), the merge with other workers, one campaign's windows read by prefix."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from vfstream.domain.ledger import CampaignTotals, PartialCounts, SettledRun
from vfstream.domain.reports import ReportBook, RunAnnouncement, RunOutcome
from vfstream.domain.runs import newest_first, run_rows
from vfstream.settings import Settings
from vfstream.web import console as console_module
from vfstream.web.console import Console, LocalSummary

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def totals(campaign: str, runs: list[int], open_run: int | None = None, verified: int = 1) -> bytes:
    """A campaign with settled runs announced at T0 + each minute given, and one open run."""
    value = CampaignTotals(campaignId=campaign)
    value.partials[0] = PartialCounts(campaignId=campaign, partition=0, verified=verified)
    for minute in runs:
        run = RunAnnouncement(
            runId=f"{campaign}-{minute}",
            campaignId=campaign,
            valid=1,
            announcedAt=T0 + timedelta(minutes=minute),
        )
        value.history.append(SettledRun(run=run, applied=1, settledAt=run.announcedAt))
    if open_run is not None:
        value.announce(
            RunAnnouncement(
                runId=f"{campaign}-open",
                campaignId=campaign,
                valid=5,
                announcedAt=T0 + timedelta(minutes=open_run),
            )
        )
    return value.to_bytes()


def fake_stream(counts: dict[bytes, bytes], books: dict[bytes, bytes] | None = None) -> Any:
    return SimpleNamespace(
        campaign_counts=SimpleNamespace(data=counts),
        report_books=SimpleNamespace(data=books or {}),
        settings=Settings(),
        partition_of=lambda key: 0,
        owned_partitions=lambda topic: {0},
    )


async def test_campaigns_come_newest_run_first_and_damaged_values_are_left_out() -> None:
    counts = {
        b"old": totals("old", [1, 2]),
        b"new": totals("new", [3], open_run=50),
        b"mid": totals("mid", [10]),
        b"b-none": totals("b-none", []),
        b"a-none": totals("a-none", []),
        b"broken": b'{"campaignId": 3',
    }
    summary = await LocalSummary(fake_stream(counts)).current()
    assert [c["campaignId"] for c in summary.campaigns] == ["new", "mid", "old", "a-none", "b-none"]
    assert summary.campaigns[0] == {
        "campaignId": "new",
        "verified": 1,
        "rejected": 0,
        "selected": 0,
        "lastRunAt": (T0 + timedelta(minutes=50)).isoformat(),
    }


async def test_a_scan_decodes_again_only_the_values_that_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counts = {f"c{n}".encode(): totals(f"c{n}", [n]) for n in range(200)}
    summary = LocalSummary(fake_stream(counts))
    decoded: list[int] = []
    real = CampaignTotals.from_bytes

    def counting(data: bytes) -> CampaignTotals:
        decoded.append(1)
        return real(data)

    monkeypatch.setattr(CampaignTotals, "from_bytes", staticmethod(counting))
    await summary._refresh()
    first = len(decoded)
    assert first >= 200
    decoded.clear()
    counts[b"c5"] = totals("c5", [5], verified=99)
    after = await summary._refresh()
    # Only c5 again, for the summary and for its runs.
    assert [c["verified"] for c in after.campaigns if c["campaignId"] == "c5"] == [99]
    assert len(decoded) == 2


async def test_the_newest_runs_are_those_of_a_full_sort_and_decoding_stops_early(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(console_module, "RUNS_KEPT", 7)
    counts = {f"c{n}".encode(): totals(f"c{n}", [n, n + 100, 200 + 3 * n]) for n in range(60)}
    books = {b"c59": ReportBook(campaignId="c59", runs={"c59-377": RunOutcome.POSTED}).to_bytes()}
    summary = LocalSummary(fake_stream(counts, books))
    looked: list[bytes] = []
    real = summary._runs_of

    def runs_of(raw: bytes, book: bytes | None) -> list[dict[str, Any]]:
        looked.append(CampaignTotals.from_bytes(raw).campaignId.encode())
        return real(raw, book)

    monkeypatch.setattr(summary, "_runs_of", runs_of)
    runs = (await summary.current()).runs
    every = []
    for key, raw in counts.items():
        book = ReportBook.from_bytes(books[key]) if key in books else None
        every += run_rows(CampaignTotals.from_bytes(raw), book)
    assert runs == newest_first(every)[:7]
    assert runs[0]["report"] == "posted"
    assert len(looked) <= 8
    # A second summary with nothing changed makes no rows; a new report is seen.
    looked.clear()
    summary._shared.clear()
    assert (await summary.current()).runs == runs and looked == []
    books[b"c58"] = ReportBook(campaignId="c58", runs={"c58-374": RunOutcome.FAILED}).to_bytes()
    summary._shared.clear()
    assert (await summary.current()).runs[1]["report"] == "given up" and looked == [b"c58"]


async def test_one_scan_serves_every_asker_of_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    summary = LocalSummary(fake_stream({b"c1": totals("c1", [1])}))
    await asyncio.gather(*(summary.current() for _ in range(300)))
    assert summary.scans == 1
    summary.stop()


async def test_the_dashboards_campaigns_are_the_newest_of_all_workers_with_their_total(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = fake_stream({f"c{n}".encode(): totals(f"c{n}", [n]) for n in range(10)})
    console = Console(stream)
    asked: list[str] = []

    async def others(path: str) -> list[Any]:
        asked.append(path)
        return [
            {
                "campaigns": [
                    {"campaignId": "p1", "verified": 5, "lastRunAt": "2099-01-01T00:00:00"},
                    {"campaignId": "p2", "verified": 6, "lastRunAt": None},
                ],
                "total": 2_000,
            }
        ]

    monkeypatch.setattr(console, "from_other_workers", others)
    body = orjson.loads(await console.all_campaigns(3))
    assert [c["campaignId"] for c in body["campaigns"]] == ["p1", "c9", "c8"]
    assert body["total"] == 2_010 and "lastRunAt" not in body["campaigns"][0]
    assert asked == ["/campaigns/local?limit=3"]
    await asyncio.gather(*(console.all_campaigns(3) for _ in range(100)))
    assert len(asked) == 1  # kept for everyone within the second
    local = orjson.loads(await console.local_campaigns(4))
    assert local["total"] == 10 and len(local["campaigns"]) == 4


async def test_other_workers_are_asked_once_for_everyone_in_parallel() -> None:
    calls: list[str] = []

    class Answer:
        status = 200

        def __init__(self, url: str) -> None:
            self.url = url

        async def __aenter__(self) -> Answer:
            await asyncio.sleep(0.2)
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

        async def json(self) -> Any:
            return {"worker": self.url}

    class Session:
        def get(self, url: str, **kwargs: Any) -> Answer:
            calls.append(url)
            return Answer(url)

    hosts = ["http://w1:1", "http://w2:1", "http://w3:1", "http://me:1"]
    stream = fake_stream({})
    stream.app = SimpleNamespace(
        conf=SimpleNamespace(canonical_url="http://me:1"),
        router=SimpleNamespace(tables_metadata=lambda: dict.fromkeys(hosts)),
        http_client=Session(),
    )
    console = Console(stream)
    started = asyncio.get_running_loop().time()
    answers = await asyncio.gather(*(console.from_other_workers("/x") for _ in range(200)))
    assert asyncio.get_running_loop().time() - started < 0.5  # three at once, not in a row
    assert sorted(calls) == ["http://w1:1/x", "http://w2:1/x", "http://w3:1/x"]
    assert answers[0] == [{"worker": f"http://w{n}:1/x"} for n in (1, 2, 3)]


async def test_one_refresh_of_the_page_is_one_answer_made_of_the_routes_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = fake_stream({b"c1": totals("c1", [1]), b"c2": totals("c2", [2])})
    console = Console(stream)

    async def nobody(path: str) -> list[Any]:
        return []

    async def letters(campaign: str | None, kind: str | None, limit: int) -> bytes:
        letters.asked.append((campaign, kind, limit))  # type: ignore[attr-defined]
        return b'{"deadLetters":[]}'

    letters.asked = []  # type: ignore[attr-defined]
    windows_asked: list[str] = []

    async def windows_of(campaign: str) -> bytes:
        windows_asked.append(campaign)
        return orjson.dumps({"campaignId": campaign, "windows": []})

    monkeypatch.setattr(console, "from_other_workers", nobody)
    monkeypatch.setattr(console.letters, "answer", letters)
    monkeypatch.setattr(console, "windows_of", windows_of)
    monkeypatch.setattr(console, "_activity", lambda: {"worker": "me", "rates": [], "lag": []})

    page = orjson.loads(await console.everything(console_module.ConsoleQuery()))
    assert page["selected"] == "c2" and windows_asked == ["c2"]  # the newest run first
    assert page["campaigns"] == orjson.loads(await console.all_campaigns(50))
    assert page["runs"] == orjson.loads(await console.all_runs(None, 100))
    assert page["deadLetters"] == {"deadLetters": []}
    assert page["workers"] == {"workers": [{"worker": "me", "rates": [], "lag": []}]}

    query = console_module.ConsoleQuery.of(
        {"campaign": "c1", "runsCampaign": "c1", "kind": "scoring-row", "letters": "900"}
    )
    chosen = orjson.loads(await console.everything(query))
    assert chosen["selected"] == "c1" and windows_asked == ["c2", "c1"]
    assert [run["campaignId"] for run in chosen["runs"]["runs"]] == ["c1"]
    assert letters.asked[-1] == (None, "scoring-row", 200)  # type: ignore[attr-defined]
    for _ in range(50):  # kept for everyone within the second
        await console.everything(query)
    assert windows_asked == ["c2", "c1"]

    async def broker_away(campaign: str | None, kind: str | None, limit: int) -> bytes:
        raise ConnectionError("no broker")

    monkeypatch.setattr(console.letters, "answer", broker_away)
    page = orjson.loads(await console.everything(console_module.ConsoleQuery(letters=3)))
    assert page["deadLetters"] == {"error": "dead letters unavailable: ConnectionError"}
    assert page["campaigns"]["total"] == 2
