"""Web views on real workers: every endpoint and error, any worker answers any key."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.test_ingest import SAMPLE_PATH
from tests.support.aws import put_object
from tests.support.browser import launch_chromium
from tests.support.waiting import eventually
from vfstream.dev.generator import GeneratorConfig, expected_counts, generate_run
from vfstream.dev.scenario import upload_run, wait_for_counts
from vfstream.dev.stack import free_port
from vfstream.dev.workers import WorkerProcess
from vfstream.settings import Settings
from vfstream.sources.s3.ingestor import ScoringFileIngestor

pytestmark = pytest.mark.integration

SAMPLE_KEY = f"scrubbed/{SAMPLE_PATH.name}"
SAMPLE_COUNTS = {"campaignId": "c1001", "verified": 2, "rejected": 2, "selected": 1}


def metric(text: str, name: str, labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def get_text(worker: WorkerProcess, path: str) -> tuple[int, str]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(worker.base_url + path) as resp:
        return resp.status, await resp.text()


async def test_endpoints_and_errors_on_one_worker(
    isolated: Settings, worker: WorkerProcess
) -> None:
    await put_object(isolated, SAMPLE_KEY, SAMPLE_PATH.read_bytes())
    _, before = await get_text(worker, "/metrics")
    await ScoringFileIngestor(isolated).ingest(isolated.scoring_bucket, SAMPLE_KEY, force=True)
    await eventually(
        lambda: worker.get_json("/campaigns/c1001/counts"),
        lambda answer: answer == (200, SAMPLE_COUNTS),
    )
    status, fan = await worker.get_json("/campaigns/c1001/fans/u1003")
    assert status == 200 and fan["lastName"] == 'O"Neil' and fan["isVerified"] is True

    status, body = await worker.get_json("/campaigns/nope/counts")
    assert status == 404 and "unknown campaign" in body["error"]
    status, body = await worker.get_json("/campaigns/c1001/fans/nobody")
    assert status == 404 and "no state" in body["error"]
    status, body = await worker.get_json("/campaigns/c1001/counts/windows?since=not-a-time")
    assert status == 400 and "ISO time" in body["error"]

    status, series = await worker.get_json("/campaigns/c1001/counts/windows")
    assert status == 200 and series["windowSeconds"] == isolated.window_seconds
    totals = {k: sum(w[k] for w in series["windows"]) for k in ("verified", "rejected", "selected")}
    assert totals == {"verified": 2, "rejected": 2, "selected": 1}
    status, later = await worker.get_json(
        "/campaigns/c1001/counts/windows?since=2100-01-01T00:00:00Z"
    )
    assert status == 200 and later["windows"] == []

    status, body = await worker.get_json("/campaigns")
    assert status == 400 and "eventId" in body["error"]
    # No campaign service runs at the configured URL in this test: a clear 503.
    status, body = await worker.get_json("/campaigns?eventId=ev10")
    assert status == 503 and "campaign service unavailable" in body["error"]

    assert (await worker.get_json("/health")) == (200, {"status": "alive"})
    assert (await worker.get_json("/ready")) == (200, {"ready": True})
    status, page = await get_text(worker, "/")
    assert status == 200 and "Campaign counts" in page and '<script src="/static/' in page
    status, script = await get_text(worker, "/static/dashboard.js")
    assert status == 200 and "textContent" in script and "innerHTML" not in script
    status, listing = await worker.get_json("/dashboard/campaigns")
    assert status == 200 and SAMPLE_COUNTS in listing["campaigns"]

    status, after = await get_text(worker, "/metrics")
    assert status == 200
    assert (
        metric(after, "vfstream_records_in_total", 'stage="verify"')
        - metric(before, "vfstream_records_in_total", 'stage="verify"')
        == 5
    )
    assert metric(after, "vfstream_write_status_total", 'status="created"') >= 4
    assert "vfstream_consumer_lag" in after


async def test_two_workers_give_the_same_answers_for_any_key(
    isolated: Settings, tmp_path: Path
) -> None:
    run = generate_run(GeneratorConfig(campaign_id="cweb", campaign_name="t", fans=1500, seed=5))
    truth = {"campaignId": "cweb", **expected_counts([run])["cweb"]}
    first = WorkerProcess(isolated, "w1", tmp_path / "logs")
    second = WorkerProcess(
        isolated.model_copy(update={"web_port": free_port(), "data_dir": tmp_path / "w2"}),
        "w2",
        tmp_path / "logs",
    )
    first.start()
    second.start()
    try:
        await asyncio.gather(first.wait_ready(), second.wait_ready())
        key = await upload_run(isolated, run, tmp_path / "files")
        await ScoringFileIngestor(isolated).ingest(isolated.scoring_bucket, key)
        await put_object(isolated, SAMPLE_KEY, SAMPLE_PATH.read_bytes())
        await ScoringFileIngestor(isolated).ingest(isolated.scoring_bucket, SAMPLE_KEY, force=True)
        await wait_for_counts(first, "cweb", truth, timeout=180)
        await wait_for_counts(first, "c1001", SAMPLE_COUNTS, timeout=60)

        # Both own some partitions, so some keys are local and some proxied on each.
        local_1 = (await first.get_json("/campaigns/local"))[1]["campaigns"]
        local_2 = (await second.get_json("/campaigns/local"))[1]["campaigns"]
        assert local_1 or local_2
        paths = ["/campaigns/cweb/counts", "/campaigns/c1001/counts", "/dashboard/campaigns"]
        paths += [f"/campaigns/c1001/fans/u100{i}" for i in range(1, 5)]
        for path in paths:
            answer_1 = await first.get_json(path)
            answer_2 = await second.get_json(path)
            assert answer_1 == answer_2, path
            assert answer_1[0] == 200, (path, answer_1)
        assert (await second.get_json("/campaigns/cweb/counts"))[1] == truth

        # The owner of a key dies: until the group rebalances, its keys answer 503.
        owner, survivor = (second, first) if local_2 else (first, second)
        owned = [c["campaignId"] for c in (local_2 if owner is second else local_1)]
        owner.kill()
        status, body = await survivor.get_json(f"/campaigns/{owned[0]}/counts")
        assert status == 503 and body["retryAfter"] > 0
        # After the rebalance the survivor owns everything and answers again.
        await eventually(
            lambda: survivor.get_json(f"/campaigns/{owned[0]}/counts"),
            lambda answer: answer[0] == 200,
            timeout=120,
        )
    finally:
        first.stop()
        second.stop()


async def test_console_in_a_browser_answers_the_operators_questions(
    isolated: Settings, worker: WorkerProcess, artifacts: Path
) -> None:
    """After a real ingest with 2 invalid rows of 7: counts, the run, a refusal reason, the
    lag chart and a fan, all as Debian's Chromium renders them under the page's CSP."""
    from playwright.async_api import async_playwright

    await put_object(isolated, SAMPLE_KEY, SAMPLE_PATH.read_bytes())
    await ScoringFileIngestor(isolated).ingest(isolated.scoring_bucket, SAMPLE_KEY, force=True)
    await eventually(
        lambda: worker.get_json("/campaigns/c1001/counts"),
        lambda answer: answer == (200, SAMPLE_COUNTS),
    )
    errors: list[str] = []
    async with async_playwright() as pw:
        browser = await launch_chromium(pw)
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(worker.base_url + "/")

            counts_row = page.locator('tr[data-campaign="c1001"]')
            await counts_row.wait_for(timeout=15_000)
            shown = {
                name: int((await counts_row.locator(f"td.{name}").inner_text()).replace(",", ""))
                for name in ("verified", "rejected", "selected")
            }
            await page.locator("#chart rect").first.wait_for(timeout=15_000)

            run_row = page.locator(f'#runs tr[data-key="{SAMPLE_KEY}"]')
            await run_row.locator("td.settled", has_text="yes").wait_for(timeout=30_000)
            run = {
                name: (await run_row.locator(f"td.{name}").inner_text())
                for name in ("rows-in", "valid", "invalid", "applied", "campaign")
            }

            letter = page.locator("#dead-letters tbody tr", has_text="u1006000")
            await letter.wait_for(timeout=15_000)
            letter_reasons = await letter.locator("td.reasons").inner_text()
            letter_where = await letter.locator("td.where").inner_text()

            # Lag is sampled every few seconds and rates every second: wait for both.
            activity = page.locator("#activity")
            await page.locator("#activity polyline.lag").first.wait_for(
                state="attached", timeout=30_000
            )
            samples = int(await activity.get_attribute("data-samples") or 0)
            owned = await page.locator("#workers td.partitions").first.inner_text()

            await page.fill("#fan-campaign", "c1001")
            await page.fill("#fan-user", "u1003")
            await page.click("#fan-form button")
            await page.locator('#fan-state[data-status="200"]').wait_for(timeout=15_000)
            fan_text = await page.locator("#fan-state").inner_text()

            await page.screenshot(path=str(artifacts / "operators-console.png"), full_page=True)
        finally:
            await browser.close()
    _, counts = await worker.get_json("/campaigns/c1001/counts")
    assert shown == {k: counts[k] for k in ("verified", "rejected", "selected")}
    assert run == {
        "rows-in": "7",
        "valid": "5",
        "invalid": "2",
        "applied": "5 / 5",
        "campaign": "c1001",
    }
    assert "score" in letter_reasons and letter_where.endswith(f"{SAMPLE_KEY}:8")
    assert samples > 0
    assert owned.split(", ")[0].isdigit()
    assert '"globalUserId": "u1003"' in fan_text and 'O\\"Neil' in fan_text
    assert errors == []
    assert (artifacts / "operators-console.png").stat().st_size > 10_000


async def test_console_endpoints_answer_in_json_and_refuse_nothing_silently(
    isolated: Settings, worker: WorkerProcess
) -> None:
    await put_object(isolated, SAMPLE_KEY, SAMPLE_PATH.read_bytes())
    await ScoringFileIngestor(isolated).ingest(isolated.scoring_bucket, SAMPLE_KEY, force=True)
    await eventually(
        lambda: worker.get_json("/campaigns/c1001/runs"),
        lambda answer: answer[0] == 200 and answer[1]["runs"] and answer[1]["runs"][0]["settled"],
    )
    _, body = await worker.get_json("/campaigns/c1001/runs")
    (run,) = body["runs"]
    assert (run["key"], run["rowsIn"], run["valid"], run["invalid"]) == (SAMPLE_KEY, 7, 5, 2)
    assert run["report"] in {"posted", "given up", "pending", "not needed"}
    assert (await worker.get_json("/campaigns/nope/runs"))[0] == 404
    _, listing = await worker.get_json("/dashboard/runs?campaign=c1001&limit=oops")
    assert [r["runId"] for r in listing["runs"]] == [run["runId"]]
    _, other = await worker.get_json("/dashboard/runs?campaign=somebody-else")
    assert other["runs"] == []

    _, letters = await worker.get_json("/dashboard/dead-letters?campaign=c1001&kind=scoring-row")
    lines = sorted(letter["line"] for letter in letters["deadLetters"])
    assert lines == [7, 8]
    _, none = await worker.get_json("/dashboard/dead-letters?kind=no-such-kind")
    assert none["deadLetters"] == []
    _, one = await worker.get_json("/dashboard/dead-letters?campaign=c1001&limit=1")
    assert len(one["deadLetters"]) == 1

    _, workers = await worker.get_json("/dashboard/workers")
    (me,) = workers["workers"]
    assert sorted(me["partitions"]) == list(range(isolated.topic_partitions))
