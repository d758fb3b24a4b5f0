"""`vfstream dev up|down|reset`: the local stack comes back whole or clean, never half.

Runs a private stack of its own (not the session's), so it can stop and wipe it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from tests.support.aws import aws_client, put_object
from vfstream import kafka
from vfstream.dev.stack import KafkaBroker, private_stack_settings
from vfstream.dev.workers import run_cli
from vfstream.kafka.reads import offset_range
from vfstream.settings import Settings

pytestmark = pytest.mark.integration

KEY = "scrubbed/registrants.c3003.t.20261020T120000Z.cleaned.prepared.merged.csv"


async def cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    done = await asyncio.to_thread(run_cli, settings, "dev", *args, timeout=300)
    return done.returncode, done.stdout, done.stderr


async def _write_both(settings: Settings) -> None:
    await put_object(settings, KEY, b"globalUserId\n")
    producer = kafka.producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(settings.score_records_topic, b"x", key=b"k", partition=0)
    finally:
        await producer.stop()


async def _what_is_there(settings: Settings) -> tuple[bool, int]:
    """(the S3 object exists, messages in the score topic)."""
    async with aws_client(settings, "s3") as s3:
        listed = await s3.list_objects_v2(Bucket=settings.scoring_bucket)
    has_object = any(item["Key"] == KEY for item in listed.get("Contents", []))
    starts, ends = await offset_range(settings, settings.score_records_topic)
    tp = TopicPartition(settings.score_records_topic, 0)
    return has_object, ends[tp] - starts[tp]


async def test_down_then_up_is_clean_a_broker_restart_is_whole_and_reset_wipes(
    tmp_path: Path,
) -> None:
    settings = private_stack_settings(tmp_path / "stack", data_dir=tmp_path / "worker")
    try:
        assert (await cli(settings, "up"))[0] == 0
        await _write_both(settings)
        assert await _what_is_there(settings) == (True, 1)

        # Both stop: moto's data is gone for good, so Kafka's is wiped too, and it says so.
        assert (await cli(settings, "down"))[0] == 0
        settings.data_dir.mkdir(parents=True)
        (settings.data_dir / "state.sst").write_bytes(b"local table state")
        code, _, stderr = await cli(settings, "up")
        assert code == 0
        assert "wiped Kafka data" in stderr and "local worker state" in stderr
        assert await _what_is_there(settings) == (False, 0)
        assert not settings.data_dir.exists()

        # Only the broker stops (moto keeps running): its data comes back, all of it.
        await _write_both(settings)
        assert KafkaBroker(settings).stop()
        code, _, stderr = await cli(settings, "up")
        assert code == 0 and "wiped" not in stderr
        assert await _what_is_there(settings) == (True, 1)

        # reset: clean, and running.
        code, stdout, _ = await cli(settings, "reset")
        assert code == 0
        answer = json.loads(stdout)
        assert any("Kafka data" in item for item in answer["wiped"])
        assert all(component["running"] for component in answer["components"])
        assert await _what_is_there(settings) == (False, 0)
    finally:
        await cli(settings, "down")
