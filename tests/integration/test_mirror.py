"""The DynamoDB mirror against the real broker and moto: layout, version guard, outage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition

from tests.support.aws import put_object
from tests.support.standard_check import campaign_items, meta_item, plain
from tests.support.states import sample_state, stored_envelope
from tests.support.tcpproxy import TcpProxy
from tests.support.waiting import eventually
from vfstream.aws import aws_client
from vfstream.dev.generator import (
    GeneratorConfig,
    ScoringRun,
    expected_counts,
    generate_run,
    global_user_id,
)
from vfstream.dev.scenario import upload_run, wait_for_counts
from vfstream.dev.workers import WorkerProcess
from vfstream.domain.state import VerificationState
from vfstream.settings import Settings
from vfstream.sinks.clients.dynamo_batch import DynamoBatchWriter
from vfstream.sinks.relays.dynamo_mirror import DynamoMirror
from vfstream.sources.s3.fanlist_direct import FanlistIngestor
from vfstream.sources.s3.ingestor import ScoringFileIngestor

pytestmark = pytest.mark.integration


def fans_of(run: ScoringRun) -> set[str]:
    return {global_user_id(number) for number in range(run.fans)}


async def ingest(settings: Settings, run: ScoringRun, work: Path) -> None:
    key = await upload_run(settings, run, work)
    summary = await ScoringFileIngestor(settings).ingest(settings.scoring_bucket, key)
    assert summary.status == "ingested", summary.error


async def assert_mirror_equals_state(
    settings: Settings, worker: WorkerProcess, run: ScoringRun, campaign: str
) -> None:
    expected = fans_of(run)
    items = await eventually(
        lambda: campaign_items(settings, campaign),
        lambda found: set(found) == expected,
        timeout=240,
        interval=2,
    )
    _, counts = await worker.get_json(f"/campaigns/{campaign}/counts")
    meta = await eventually(
        lambda: meta_item(settings, campaign, "meta:counts"),
        lambda m: (
            m is not None and all(m[k] == counts[k] for k in ("verified", "rejected", "selected"))
        ),
        timeout=60,
    )
    assert meta is not None
    # Every item agrees with the state the worker serves for that fan.
    for gid in sorted(expected):
        _, state = await worker.get_json(f"/campaigns/{campaign}/fans/{gid}")
        item = items[gid]
        assert item["version"] == state["version"], gid
        assert item["isVerified"] == state["isVerified"]
        assert item["verdict"] == state["verdict"]
        assert float(item["score"]) == pytest.approx(state["score"])
        assert item.get("rank") == ("0" if state["rank0"] else None)
        assert item["origin"]["nudetect"]["scoreBand"] == state["nudetect"]["scoreBand"]
        assert [e and e["eventId"] for e in item["events"]] == [
            e and e["eventId"] for e in state["events"]
        ]


@pytest.fixture
def mirrored(isolated: Settings) -> Settings:
    return isolated.model_copy(update={"mirror_to_dynamodb": True})


async def test_a_settled_run_is_mirrored_in_the_spec_layout_with_meta_counts(
    mirrored: Settings, tmp_path: Path
) -> None:
    run = generate_run(GeneratorConfig(campaign_id="cmirror", campaign_name="T", fans=600))
    worker = WorkerProcess(mirrored, "mirror", tmp_path / "logs")
    worker.start()
    try:
        await worker.wait_ready()
        await ingest(mirrored, run, tmp_path)
        truth = expected_counts([run])["cmirror"]
        await wait_for_counts(worker, "cmirror", truth, timeout=180)
        await assert_mirror_equals_state(mirrored, worker, run, "cmirror")
    finally:
        worker.stop()


def changelog_record(settings: Settings, state: VerificationState, offset: int) -> ConsumerRecord:
    topic = f"{settings.app_id}-fan-state-changelog"
    key = state.key.encode()
    value = stored_envelope(state, offset)
    return ConsumerRecord(topic, 0, offset, 0, 0, key, value, None, len(key), 0, ())


async def test_an_older_version_arriving_after_a_newer_one_leaves_the_newer_item(
    isolated: Settings,
) -> None:
    newer = sample_state(globalUserId="guard", version=5, score=0.9)
    older = sample_state(globalUserId="guard", version=2, score=0.1)
    mirror = DynamoMirror(isolated)
    tp = TopicPartition(f"{isolated.app_id}-fan-state-changelog", 0)
    async with aws_client(isolated, "dynamodb") as dynamo:
        writer = DynamoBatchWriter(dynamo, isolated.demand_table)
        await mirror.mirror(
            dynamo, writer, {tp: [changelog_record(isolated, newer, 10)]}, mirror.relay
        )
        await mirror.mirror(
            dynamo, writer, {tp: [changelog_record(isolated, older, 3)]}, mirror.relay
        )
        item = await dynamo.get_item(
            TableName=isolated.demand_table,
            Key={"PK": {"S": "fan:guard"}, "SK": {"S": "campaign:c1"}},
        )
    stored = plain(item["Item"])
    assert (stored["version"], float(stored["score"])) == (5, 0.9)


@pytest.fixture
async def aws_proxy(stack: Settings) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(stack.aws_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.cut()


async def test_mirror_catches_up_after_the_aws_endpoint_comes_back(
    isolated: Settings, aws_proxy: TcpProxy, tmp_path: Path
) -> None:
    behind_proxy = isolated.model_copy(
        update={
            "aws_endpoint_url": aws_proxy.url,
            "listen_for_notifications": False,
            "mirror_to_dynamodb": True,
        }
    )
    run = generate_run(GeneratorConfig(campaign_id="coutage", campaign_name="T", fans=1500))
    worker = WorkerProcess(behind_proxy, "mirror-outage", tmp_path / "logs")
    worker.start()
    try:
        await worker.wait_ready()
        await ingest(isolated, run, tmp_path)  # straight to moto: only the worker is cut off
        await eventually(
            lambda: worker.get_json("/statuses"),
            lambda answer: answer[1]["recordsIn"] > 500,
            timeout=120,
            interval=0.2,
        )
        await aws_proxy.cut()
        await wait_for_counts(worker, "coutage", expected_counts([run])["coutage"], timeout=240)
        await asyncio.sleep(5)  # the mirror keeps failing while the run settles
        assert len(await campaign_items(isolated, "coutage")) < len(fans_of(run))
        await aws_proxy.restore()
        await assert_mirror_equals_state(isolated, worker, run, "coutage")
    finally:
        worker.stop()


async def demand_item(settings: Settings, pk: str, sk: str) -> dict | None:
    async with aws_client(settings, "dynamodb") as dynamo:
        answer = await dynamo.get_item(
            TableName=settings.demand_table, Key={"PK": {"S": pk}, "SK": {"S": sk}}
        )
    return plain(answer["Item"]) if "Item" in answer else None


@pytest.mark.parametrize("fanlist_first", [False, True])
async def test_a_fanlist_file_and_the_mirror_never_erase_each_others_fields(
    isolated: Settings, fanlist_first: bool
) -> None:
    """Issue #12: a fanlist row for a mirrored fan left the item with only the fanlist's
    fields (isVerified, events, origin and the scores gone), and the reverse."""
    campaign = f"c7001{int(fanlist_first)}"
    mirrored = sample_state(campaignId=campaign, globalUserId="g00001", version=3)
    key = f"fanlist/scored/{campaign}/1792497600000.csv"
    await put_object(
        isolated, key, b"memberId,email,globalUserId,score\nm1,g1@example.com,g00001,0.42\n"
    )
    mirror = DynamoMirror(isolated)
    tp = TopicPartition(f"{isolated.app_id}-fan-state-changelog", 0)

    async def mirror_the_state() -> None:
        async with aws_client(isolated, "dynamodb") as dynamo:
            writer = DynamoBatchWriter(dynamo, isolated.demand_table)
            batch = {tp: [changelog_record(isolated, mirrored, 1)]}
            await mirror.mirror(dynamo, writer, batch, mirror.relay)

    async def store_the_fanlist() -> None:
        summary = await FanlistIngestor(isolated).ingest(isolated.scoring_bucket, key)
        assert summary.status == "stored", summary.error

    for step in (
        (store_the_fanlist, mirror_the_state)
        if fanlist_first
        else (
            mirror_the_state,
            store_the_fanlist,
        )
    ):
        await step()

    verification = await demand_item(isolated, "fan:g00001", f"campaign:{campaign}")
    assert verification is not None
    assert verification["isVerified"] is True and verification["version"] == 3
    assert verification["events"][0]["eventId"] == "e0"
    assert verification["origin"]["nudetect"]["scoreBand"] == "low"
    assert float(verification["score"]) == 0.75 and float(verification["bandScore"]) == 0.1
    fanlist = await demand_item(isolated, "fan:g00001", f"fanlist:{campaign}")
    assert fanlist is not None
    assert float(fanlist["score"]) == 0.42 and fanlist["memberId"] == "m1"
