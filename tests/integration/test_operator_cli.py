"""`vfstream runs`, `dead-letters` and `status` against a real broker and worker: the
human tables, `--json`, hostile text kept off the terminal, and a clear error when the
stack is down."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from tests.integration.test_ingest import SAMPLE_PATH
from tests.support.aws import put_object
from tests.support.waiting import eventually
from vfstream.dev.stack import free_port
from vfstream.dev.workers import WorkerProcess, run_cli
from vfstream.settings import Settings
from vfstream.sources.s3.ingestor import ScoringFileIngestor

pytestmark = pytest.mark.integration

SAMPLE_KEY = f"scrubbed/{SAMPLE_PATH.name}"
HOSTILE_KEY = "scrubbed/registrants.c2002.esc.20261020T120000Z.cleaned.prepared.merged.csv"


async def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, settings, *args, timeout=120)


async def cli_json(settings: Settings, *args: str) -> dict:
    done = await cli(settings, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def _ingest_sample(settings: Settings) -> None:
    await put_object(settings, SAMPLE_KEY, SAMPLE_PATH.read_bytes())
    await ScoringFileIngestor(settings).ingest(settings.scoring_bucket, SAMPLE_KEY, force=True)


async def test_runs_show_the_file_with_its_row_numbers_once_settled(
    isolated: Settings, worker: WorkerProcess
) -> None:
    await _ingest_sample(isolated)

    answer = await eventually(
        lambda: cli_json(isolated, "runs"),
        lambda body: bool(body["runs"]) and body["runs"][0]["settled"],
        timeout=60,
    )
    (run,) = answer["runs"]
    assert (run["key"], run["campaignId"]) == (SAMPLE_KEY, "c1001")
    assert (run["rowsIn"], run["valid"], run["invalid"]) == (7, 5, 2)
    assert (run["applied"], run["expected"]) == (5, 5)

    human = await cli(isolated, "runs", "--campaign", "c1001")
    assert human.returncode == 0
    header, rule, line = human.stdout.splitlines()[:3]
    assert "rows in" in header and "valid" in header and "Slack" in header
    assert set(rule) <= {"-", "+"}
    cells = [cell.strip() for cell in line.split("|")]
    assert cells[:5] == ["c1001", SAMPLE_KEY, "7", "5", "2"]
    assert cells[5] == "5 / 5"

    assert (await cli_json(isolated, "runs", "--campaign", "nobody"))["runs"] == []
    nobody = await cli(isolated, "runs", "--campaign", "nobody")
    assert nobody.stdout.strip() == "no scoring runs yet"


async def test_dead_letters_name_line_and_reason_and_keep_escapes_off_the_terminal(
    isolated: Settings,
) -> None:
    await _ingest_sample(isolated)
    body = (SAMPLE_PATH.read_text().splitlines()[0] + "\n").encode()
    # A fan id with a terminal title change and a colour: refused, and shown escaped.
    body += b"u9\x1b]0;owned\x07\x1b[31m,u9000,c2002,ev1,x,0.5,0.5,0.5,,true,,0.1,low,,,,,,,,,,\n"
    await put_object(isolated, HOSTILE_KEY, body)
    await ScoringFileIngestor(isolated).ingest(isolated.scoring_bucket, HOSTILE_KEY)

    letters = (
        await cli_json(isolated, "dead-letters", "--campaign", "c1001", "--kind", "scoring-row")
    )["deadLetters"]
    assert sorted(letter["line"] for letter in letters) == [7, 8]
    assert any("score" in reason for letter in letters for reason in letter["reasons"])
    one = await cli_json(isolated, "dead-letters", "--campaign", "c1001", "--limit", "1")
    assert len(one["deadLetters"]) == 1

    hostile = await cli(isolated, "dead-letters", "--campaign", "c2002")
    assert hostile.returncode == 0
    assert "c2002" in hostile.stdout and "reasons" in hostile.stdout.splitlines()[0]
    assert "\x1b" not in hostile.stdout and "\x07" not in hostile.stdout
    assert "\\x1b" in hostile.stdout  # shown, escaped, not obeyed

    usage = await cli(isolated, "dead-letters", "--limit", "0")
    assert usage.returncode == 2 and "--limit" in usage.stderr


async def test_status_names_workers_partitions_and_lag(
    isolated: Settings, worker: WorkerProcess
) -> None:
    await _ingest_sample(isolated)
    status = await eventually(
        lambda: cli_json(isolated, "status"),
        lambda body: bool(body["workers"]) and body["lag"] == 0,
        timeout=60,
    )
    assert status["stack"]["kafka"]["reachable"] is True
    assert status["stack"]["aws"]["reachable"] is True
    assert status["group"] == {"id": isolated.app_id, "state": "Stable"}
    (me,) = status["workers"]
    assert me["worker"] == worker.base_url
    assert me["partitions"] == list(range(isolated.topic_partitions))
    assert [p["partition"] for p in status["partitions"]] == me["partitions"]
    assert {p["owner"] for p in status["partitions"]} == {worker.base_url}
    assert sum(p["end"] for p in status["partitions"]) > 0

    human = await cli(isolated, "status")
    assert human.returncode == 0
    assert "kafka" in human.stdout and "up" in human.stdout
    assert "1 worker(s)" in human.stdout and "total lag: 0" in human.stdout

    worker.stop()
    alone = await eventually(
        lambda: cli(isolated, "status", "--json"),
        lambda done: done.returncode == 3,
        timeout=60,
    )
    assert json.loads(alone.stdout)["workers"] == []

    # With no worker reading, a new file is lag on the partitions it went to.
    await ScoringFileIngestor(isolated).ingest(isolated.scoring_bucket, SAMPLE_KEY, force=True)
    waiting = json.loads((await cli(isolated, "status", "--json")).stdout)
    assert waiting["lag"] > 0
    assert waiting["lag"] == sum(p["lag"] for p in waiting["partitions"])
    assert all(p["owner"] is None for p in waiting["partitions"])


@pytest.mark.parametrize("command", [["runs"], ["dead-letters"], ["status"]])
async def test_a_stack_that_is_down_gets_a_clear_error(
    isolated: Settings, command: list[str]
) -> None:
    nowhere = isolated.model_copy(
        update={
            "kafka_bootstrap": f"127.0.0.1:{free_port()}",
            "aws_endpoint_url": f"http://127.0.0.1:{free_port()}",
        }
    )
    for args in (command, [*command, "--json"]):
        done = await cli(nowhere, *args)
        assert done.returncode == 4  # unavailable: retry once the stack is up
        assert done.stdout == ""
        assert "Kafka does not answer" in done.stderr and "vfstream dev up" in done.stderr
        assert "Traceback" not in done.stderr


async def test_library_logs_stay_off_the_terminal_unless_verbose(isolated: Settings) -> None:
    await _ingest_sample(isolated)
    quiet = await cli(isolated, "replay", "--to", "earliest")
    loud = await cli(isolated, "replay", "--to", "earliest", "--verbose")

    assert quiet.returncode == 0 and loud.returncode == 0
    assert "aiokafka" not in quiet.stderr
    assert "aiokafka" in loud.stderr
