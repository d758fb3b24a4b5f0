"""The HTTP API behind tokens on real workers (VFSTREAM_WEB_AUTH_TOKENS): every route but the
probes asks for one, Bearer or Basic; proxying and the console's gathering carry it; the
console works in a browser that is given the token; no token reaches a log."""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from pydantic import SecretStr

from tests.integration.test_ingest import SAMPLE_PATH
from tests.integration.test_web import SAMPLE_COUNTS, SAMPLE_KEY, metric
from tests.support.aws import put_object
from tests.support.browser import launch_chromium
from tests.support.waiting import eventually
from vfstream.dev.stack import free_port
from vfstream.dev.workers import WorkerProcess
from vfstream.settings import Settings
from vfstream.sources.s3.ingestor import ScoringFileIngestor
from vfstream.web.views import CONTENT_SECURITY_POLICY

pytestmark = pytest.mark.integration

# Every route a token guards, with what it answers given one on a fresh worker: vfstream's
# table views, console and service views, Faust's own (its router, its Prometheus page), the
# static files, and a path no route matches.
GUARDED = {
    "/": 200,
    "/static/dashboard.js": 200,
    "/campaigns/c1001/counts": 404,
    "/campaigns/c1001/fans/u1003": 404,
    "/campaigns/local": 200,
    "/dashboard/workers": 200,
    "/dashboard/runs": 200,
    "/dashboard/console": 200,
    "/worker/activity": 200,
    "/statuses": 200,
    "/router/": 200,
    "/metrics": 200,
    "/metrics/faust": 200,
    "/no/such/route": 404,
}
OPEN_API_WARNING = "is open to anyone who reaches the port"
REFUSAL_LINE = "refused an HTTP request"


def tokens() -> tuple[str, str]:
    return secrets.token_urlsafe(24), secrets.token_urlsafe(24)


def guarded(settings: Settings, *accepted: str, **more: Any) -> Settings:
    return settings.model_copy(update={"web_auth_tokens": SecretStr(",".join(accepted)), **more})


def bearer(token: str) -> str:
    return f"Bearer {token}"


def basic(token: str, user: str = "operator") -> str:
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


async def ask(
    worker: WorkerProcess, path: str, authorization: str | None = None
) -> tuple[int, Any, str]:
    """Status, headers and text of one GET, with the given Authorization header if any."""
    headers = {"Authorization": authorization} if authorization else {}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(worker.base_url + path, headers=headers) as resp,
    ):
        return resp.status, resp.headers, await resp.text()


async def ask_json(worker: WorkerProcess, path: str, authorization: str) -> tuple[int, Any]:
    status, _, text = await ask(worker, path, authorization)
    try:
        return status, orjson.loads(text)
    except orjson.JSONDecodeError:
        return status, text


def assert_refused(answer: tuple[int, Any, str], *secrets_: str) -> None:
    status, headers, text = answer
    assert status == 401, answer
    assert headers.getall("WWW-Authenticate") == [
        'Basic realm="vfstream", charset="UTF-8"',
        'Bearer realm="vfstream"',
    ]
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Type"].startswith("application/json") and '"error"' in text
    for secret in secrets_:
        assert secret not in text and secret not in str(headers)


async def ingest_sample(settings: Settings, worker: WorkerProcess, token: str) -> None:
    await put_object(settings, SAMPLE_KEY, SAMPLE_PATH.read_bytes())
    await ScoringFileIngestor(settings).ingest(settings.scoring_bucket, SAMPLE_KEY, force=True)
    await eventually(
        lambda: ask_json(worker, "/campaigns/c1001/counts", bearer(token)),
        lambda answer: answer == (200, SAMPLE_COUNTS),
        timeout=90,
    )


async def test_a_worker_with_tokens_answers_only_who_shows_one(
    isolated: Settings, tmp_path: Path
) -> None:
    old, new = tokens()
    settings = guarded(isolated, old, new)
    worker = WorkerProcess(settings, "guarded", tmp_path / "logs")
    worker.start()
    try:
        await worker.wait_ready()  # /ready answers without a token
        assert (await ask(worker, "/health"))[0] == 200
        assert (await ask(worker, "/ready"))[0] == 200

        refused_before = metric(
            (await ask(worker, "/metrics", bearer(old)))[2],
            "vfstream_http_unauthorized_total",
            'reason="missing"',
        )
        for path in GUARDED:
            assert_refused(await ask(worker, path), old, new)
        wrong = "Bearer " + secrets.token_urlsafe(24)
        assert_refused(await ask(worker, "/", wrong), old, new, wrong)
        assert_refused(await ask(worker, "/", basic("not-it")), old, new)
        assert_refused(await ask(worker, "/", "Basic %%%"), old, new)
        assert_refused(await ask(worker, "/", f"Token {old}"), old, new)

        # Both tokens (a rotation under way), as Bearer or as Basic's password.
        for authorization in (bearer(old), bearer(new), basic(old), basic(new, user="")):
            status, _, page = await ask(worker, "/", authorization)
            assert status == 200 and "Campaign counts" in page
        answered = {path: (await ask(worker, path, basic(new)))[0] for path in GUARDED}
        assert answered == GUARDED
        status, _, scraped = await ask(worker, "/metrics", bearer(new))
        assert status == 200
        refused = metric(scraped, "vfstream_http_unauthorized_total", 'reason="missing"')
        assert refused - refused_before == len(GUARDED)
        assert metric(scraped, "vfstream_http_unauthorized_total", 'reason="wrong"') >= 2
        assert metric(scraped, "vfstream_http_unauthorized_total", 'reason="malformed"') >= 2
    finally:
        worker.stop()
    log = worker.log_path.read_text()
    assert old not in log and new not in log and wrong.split()[1] not in log
    assert OPEN_API_WARNING not in log
    # 17 refusals from this client within a minute: one line, no flood.
    assert len(re.findall(REFUSAL_LINE, log)) == 1, log


async def test_metrics_answer_without_a_token_when_the_setting_says_so(
    isolated: Settings, tmp_path: Path
) -> None:
    token, _ = tokens()
    worker = WorkerProcess(
        guarded(isolated, token, web_metrics_public=True), "metrics-public", tmp_path / "logs"
    )
    worker.start()
    try:
        await worker.wait_ready()
        status, _, text = await ask(worker, "/metrics")
        assert status == 200 and "vfstream_consumer_lag" in text
        assert (await ask(worker, "/metrics/faust"))[0] == 200
        for path in ("/", "/statuses", "/campaigns/local"):
            assert_refused(await ask(worker, path), token)
        assert (await ask(worker, "/statuses", bearer(token)))[0] == 200
    finally:
        worker.stop()
    assert token not in worker.log_path.read_text()


async def test_without_tokens_the_api_is_open_and_the_worker_says_so_once(
    worker: WorkerProcess,
) -> None:
    for path in ("/", "/statuses", "/metrics", "/dashboard/workers"):
        status, headers, _ = await ask(worker, path)
        assert status == 200 and "WWW-Authenticate" not in headers
    await asyncio.sleep(1)
    log = worker.log_path.read_text()
    warnings = [line for line in log.splitlines() if OPEN_API_WARNING in line]
    assert len(warnings) == 1, warnings
    assert "WARNING" in warnings[0] and "VFSTREAM_WEB_AUTH_TOKENS" in warnings[0]
    assert REFUSAL_LINE not in log


async def test_two_guarded_workers_proxy_and_gather_with_the_token(
    isolated: Settings, tmp_path: Path
) -> None:
    """A key another worker owns is proxied there with the caller's credential; the
    console's merged answers reach the other worker with this worker's own token."""
    old, new = tokens()
    settings = guarded(isolated, old, new)
    first = WorkerProcess(settings, "w1", tmp_path / "logs")
    second = WorkerProcess(
        settings.model_copy(update={"web_port": free_port(), "data_dir": tmp_path / "w2"}),
        "w2",
        tmp_path / "logs",
    )
    first.start()
    second.start()
    try:
        await asyncio.gather(first.wait_ready(), second.wait_ready())
        await ingest_sample(settings, first, old)

        def both_listed(answer: tuple[int, Any]) -> bool:
            status, body = answer
            if status != 200 or len(body["workers"]) != 2:
                return False
            owned = [set(w["partitions"]) for w in body["workers"]]
            return all(owned) and set.union(*owned) == set(range(settings.topic_partitions))

        # Each worker's console lists both: it asked the other with its own token.
        for asked, credential in ((first, bearer(new)), (second, basic(old))):
            status, body = await eventually(
                lambda asked=asked, credential=credential: ask_json(
                    asked, "/dashboard/workers", credential
                ),
                both_listed,
                timeout=60,
            )
            assert {w["worker"] for w in body["workers"]} == {
                first.base_url,
                second.base_url,
            }
        status, listing = await ask_json(second, "/dashboard/campaigns", bearer(old))
        assert status == 200 and SAMPLE_COUNTS in listing["campaigns"]
        status, runs = await ask_json(first, "/dashboard/runs?campaign=c1001", basic(new))
        assert status == 200 and [run["key"] for run in runs["runs"]] == [SAMPLE_KEY]

        # Every fan asked of both workers: for each key one of them is not the owner and
        # proxies it, and the owner asks that request for a token too.
        for user in ("u1001", "u1002", "u1003", "u1004"):
            path = f"/campaigns/c1001/fans/{user}"
            answers = [
                await ask_json(first, path, bearer(old)),
                await ask_json(second, path, basic(new)),
            ]
            assert answers[0] == answers[1], (path, answers)
            assert answers[0][0] == 200 and answers[0][1]["globalUserId"] == user
            assert_refused(await ask(second, path), old, new)
        for path in ("/campaigns/c1001/counts", "/campaigns/c1001/runs"):
            assert (await ask_json(first, path, bearer(new)))[0] == 200
            assert (await ask_json(second, path, bearer(new)))[0] == 200
    finally:
        first.stop()
        second.stop()
    for proc in (first, second):
        log = proc.log_path.read_text()
        assert old not in log and new not in log


async def test_console_behind_basic_auth_in_a_browser(
    isolated: Settings, tmp_path: Path, artifacts: Path
) -> None:
    """Chromium without the token gets 401; given it (HTTP Basic, as a person types it at
    the prompt) the console loads and every request the page makes is answered."""
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import async_playwright

    token, _ = tokens()
    settings = guarded(isolated, token)
    worker = WorkerProcess(settings, "console", tmp_path / "logs")
    worker.start()
    errors: list[str] = []
    refused: list[str] = []
    try:
        await worker.wait_ready()
        await ingest_sample(settings, worker, token)
        async with async_playwright() as pw:
            browser = await launch_chromium(pw)
            try:
                # Without credentials: the server's 401, and the browser (which has none to
                # give at the prompt) shows nothing of the page.
                stranger = await browser.new_context()
                lost = await stranger.new_page()
                stranger_saw: list[tuple[str, int]] = []
                lost.on("response", lambda resp: stranger_saw.append((resp.url, resp.status)))
                with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
                    await lost.goto(worker.base_url + "/")
                await stranger.close()

                operator = await browser.new_context(
                    viewport={"width": 1200, "height": 900},
                    http_credentials={"username": "operator", "password": token},
                )
                page = await operator.new_page()
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on(
                    "response",
                    lambda resp: refused.append(resp.url) if resp.status == 401 else None,
                )
                answer = await page.goto(worker.base_url + "/")
                assert answer is not None
                page_status = answer.status

                counts_row = page.locator('tr[data-campaign="c1001"]')
                await counts_row.wait_for(timeout=15_000)
                shown = {
                    name: int(
                        (await counts_row.locator(f"td.{name}").inner_text()).replace(",", "")
                    )
                    for name in ("verified", "rejected", "selected")
                }
                run_row = page.locator(f'#runs tr[data-key="{SAMPLE_KEY}"]')
                await run_row.locator("td.settled", has_text="yes").wait_for(timeout=30_000)
                await page.locator("#dead-letters tbody tr").first.wait_for(timeout=15_000)
                owned = await page.locator("#workers td.partitions").first.inner_text()

                await page.fill("#fan-campaign", "c1001")
                await page.fill("#fan-user", "u1003")
                await page.click("#fan-form button")
                await page.locator('#fan-state[data-status="200"]').wait_for(timeout=15_000)
                fan_text = await page.locator("#fan-state").inner_text()
                await page.screenshot(
                    path=str(artifacts / "operators-console-behind-auth.png"), full_page=True
                )
                await operator.close()
            finally:
                await browser.close()
    finally:
        worker.stop()
    assert stranger_saw == [(worker.base_url + "/", 401)]
    assert page_status == 200
    assert shown == {k: SAMPLE_COUNTS[k] for k in ("verified", "rejected", "selected")}
    assert owned.split(", ")[0].isdigit()
    assert '"globalUserId": "u1003"' in fan_text
    # Chromium may meet the challenge once before it answers it; no request stays refused.
    assert all(url.startswith(worker.base_url) for url in refused)
    assert errors == []
    assert (artifacts / "operators-console-behind-auth.png").stat().st_size > 10_000
    assert token not in worker.log_path.read_text()
