"""Hostile input, second pass (issue #20), on the real broker: messages any producer of a topic
could write, timestamps that would freeze a fan, numbers a store cannot hold. None may stop a
worker; every message ends as counted records or dead letters; a valid file after them is
counted exactly."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.aws import put_object
from tests.support.kinesis import create_stream, put_records
from tests.support.rows import csv_file, feed_document, scoring_key, scoring_row
from tests.support.settings import isolated_settings
from tests.support.standard_check import campaign_items
from tests.support.waiting import eventually
from vfstream import kafka
from vfstream.dev.scenario import wait_for_counts
from vfstream.dev.workers import WorkerProcess, run_cli
from vfstream.domain.batches import MalformedBatch, encode_batch
from vfstream.domain.fans import read_batch
from vfstream.domain.keys import fan_key, partition_for
from vfstream.kafka.reads import read_committed
from vfstream.settings import Settings
from vfstream.sources.s3.ingestor import ScoringFileIngestor
from vfstream.topics import ensure_topics

pytestmark = pytest.mark.integration

# What the broker takes in one message (message.max.bytes, 1 MiB, less the batch overhead).
MAX_MESSAGE = 1_000_000


@dataclass
class Target:
    settings: Settings
    worker: WorkerProcess

    async def statuses(self) -> Counter[str]:
        _, body = await self.worker.get_json("/statuses")
        return Counter(body["writeStatuses"])

    async def letters(self, kind: str | None = None) -> list[dict[str, Any]]:
        messages = await read_committed(self.settings, self.settings.dead_letter_topic)
        found = [orjson.loads(m.value) for m in messages]
        return [letter for letter in found if kind is None or letter.get("kind") == kind]

    async def letters_after(
        self, attack: Awaitable[None], kind: str, count: int
    ) -> list[dict[str, Any]]:
        """The dead letters of ``kind`` once ``attack`` has added ``count`` of them."""
        before = len(await self.letters(kind))
        await attack
        found = await eventually(
            lambda: self.letters(kind), lambda now: len(now) >= before + count, timeout=60
        )
        return found[before:]

    async def alive(self) -> None:
        assert self.worker.alive(), f"the worker exited; log: {self.worker.log_path}"
        assert (await self.worker.get_json("/ready"))[0] == 200

    async def ingest(self, key: str, body: bytes, settings: Settings | None = None) -> Any:
        settings = settings or self.settings
        await put_object(settings, key, body)
        return await ScoringFileIngestor(settings).ingest(settings.scoring_bucket, key)

    async def produce(self, topic: str, items: list[tuple[int, bytes | None, bytes]]) -> None:
        """(partition, key, value) straight onto a topic, as any producer could."""
        producer = kafka.producer(self.settings, acks="all", max_request_size=MAX_MESSAGE + 4096)
        await producer.start()
        try:
            for partition, key, value in items:
                await producer.send_and_wait(topic, value, key=key, partition=partition)
        finally:
            await producer.stop()

    async def counted_exactly_after(self, campaign: str) -> None:
        """A valid file after the attack: counted exactly, and the worker still ready."""
        body = csv_file(
            scoring_row(campaign, "u1"),
            scoring_row(campaign, "u2", isVerified="no"),
            scoring_row(campaign, "u3", verdict="true"),
        )
        summary = await self.ingest(scoring_key(campaign), body)
        assert summary.status == "ingested", summary.error
        truth = {"verified": 2, "rejected": 1, "selected": 1}
        await wait_for_counts(self.worker, campaign, truth, timeout=90)
        await self.alive()


@pytest.fixture(scope="module")
async def target(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Target]:
    """One worker, with the DynamoDB mirror, that every case of this module attacks."""
    base = tmp_path_factory.mktemp("hostile-topics")
    # The DynamoDB mirror on: the numbers case checks every counted fan reaches it.
    settings = isolated_settings(stack, base / "worker", mirror_to_dynamodb=True)
    await ensure_topics(settings)
    worker = WorkerProcess(settings, "hostile-topics", base / "logs")
    worker.start()
    try:
        await worker.wait_ready(timeout=180)
        yield Target(settings, worker)
    finally:
        worker.stop()


def campaign() -> str:
    return f"h{uuid.uuid4().hex[:8]}"


def topic_record(campaign_id: str, **changes: Any) -> dict[str, Any]:
    """A score record as a producer outside vfstream could write it (fan u1, rank 0)."""
    return {
        "campaignId": campaign_id,
        "globalUserId": "u1",
        "id": "u1000",
        "rank": 0,
        "eventId": "ev0",
        "score": 0.5,
        "isVerified": True,
        "scoredAt": "2026-10-20T12:00:00Z",
        **changes,
    }


# ---- 1. a message nested deep enough for the decoder to give up ------------------------


async def test_a_deeply_nested_message_is_one_dead_letter_and_the_worker_goes_on(
    target: Target,
) -> None:
    """About 20 KB of nested brackets raised RecursionError in the batch reader: the verify
    agent died, the tail fill read the message again, every restart died within seconds."""
    deep = [
        b'{"v":1,"records":[' + b"[" * 10_000 + b"]" * 10_000 + b"]}",
        b"[" * 20_000,
        b'{"campaignId":' + b"{" * 5_000 + b"}" * 5_000 + b"}",
    ]
    letters = await target.letters_after(
        target.produce(
            target.settings.score_records_topic,
            [(p, None, value) for p, value in enumerate(deep)],
        ),
        "score-record",
        3,
    )
    assert sum("nested deeper" in str(letter["reasons"]) for letter in letters) >= 2
    # Past the tail-fill check (5 s of quiet): the message is not read into a crash again.
    await asyncio.sleep(8)
    await target.alive()
    await target.counted_exactly_after(campaign())


# ---- 2. ids past their limits from a producer other than the ingestor ------------------


async def test_long_campaign_ids_on_the_topic_are_refused_and_the_flush_never_fails(
    target: Target,
) -> None:
    """30 records with 45 KB campaign ids in one partition pushed its campaign index past
    1 MiB: the flush failed with MessageSizeTooLargeError and the worker exited."""
    source = {"bucket": "b", "key": "k", "etag": "e", "line": 1, "run": "r1"}
    records = [
        orjson.dumps(topic_record(f"c{n:02d}" + "x" * 45_000, source=source)) for n in range(30)
    ]
    letters = await target.letters_after(
        target.produce(target.settings.score_records_topic, [(0, None, r) for r in records]),
        "score-record",
        30,
    )
    assert all("over the limit of 256" in str(letter["reasons"]) for letter in letters)
    await asyncio.sleep(3)
    await target.alive()
    await target.counted_exactly_after(campaign())


# ---- 3. timestamps that would freeze a fan ---------------------------------------------


async def test_a_file_dated_9999_is_refused_whole_and_a_topic_record_so_dated_is_dead_lettered(
    target: Target,
) -> None:
    name = campaign()
    summary = await target.ingest(
        scoring_key(name, stamp="99991231T235959Z"), csv_file(scoring_row(name, "u1"))
    )
    assert summary.status == "failed" and "in the future" in (summary.error or "")

    frozen = topic_record(name, isVerified=False, scoredAt="9999-12-31T23:59:59Z")
    key = fan_key(name, "u1").encode()
    partition = partition_for(key, target.settings.topic_partitions)
    await target.produce(
        target.settings.score_records_topic,
        [(partition, key, encode_batch([orjson.dumps(frozen)]))],
    )
    letters = await eventually(
        lambda: target.letters("score-record"),
        lambda found: any("past the allowed skew" in str(x["reasons"]) for x in found),
        timeout=60,
    )
    assert letters
    # The fan was not frozen: the real file dated today-ish counts it as it says.
    await target.counted_exactly_after(name)


async def test_a_feed_record_dated_9999_is_dead_lettered_by_the_bridge(target: Target) -> None:
    stream = f"vf-feed-{uuid.uuid4().hex[:6]}"
    await create_stream(target.settings, stream, shards=1)
    await put_records(
        target.settings,
        stream,
        [feed_document(1, campaign="cfuture", scoredAt="9999-12-31T23:59:59Z"), feed_document(2)],
    )

    done = await asyncio.to_thread(run_cli, target.settings, "bridge", "--stream", stream, "--once")

    assert done.returncode == 0, done.stderr
    summary = orjson.loads(done.stdout)
    assert (summary["valid"], summary["invalid"]) == (1, 1)
    letters = await target.letters("kinesis-record")
    assert any("past the allowed skew" in str(letter["reasons"]) for letter in letters)


async def test_a_fan_frozen_before_the_fix_takes_its_next_real_score(
    stack: Settings, tmp_path: Path
) -> None:
    """Upgrade: a worker that accepted a file dated 9999 froze its fans; the fixed worker
    lets the next real score through instead of calling it stale for ever."""
    settings = isolated_settings(stack, tmp_path / "worker")
    await ensure_topics(settings)
    # What the old code did: no limit on the future.
    old = settings.model_copy(update={"limit_future_skew_seconds": 1e12})
    name = campaign()
    rows = [scoring_row(name, "u1", isVerified="no"), scoring_row(name, "u2", isVerified="no")]
    await put_object(old, scoring_key(name, stamp="99991231T235959Z"), csv_file(*rows))
    frozen = await ScoringFileIngestor(old).ingest(
        old.scoring_bucket, scoring_key(name, stamp="99991231T235959Z")
    )
    assert frozen.status == "ingested"
    worker = WorkerProcess(old, "accepting", tmp_path / "logs")
    worker.start()
    try:
        await worker.wait_ready()
        await wait_for_counts(worker, name, {"verified": 0, "rejected": 2, "selected": 0}, 90)
    finally:
        worker.stop()

    fixed = WorkerProcess(settings, "fixed", tmp_path / "logs")
    fixed.start()
    try:
        await fixed.wait_ready()
        real = csv_file(scoring_row(name, "u1"), scoring_row(name, "u2", verdict="true"))
        await put_object(settings, scoring_key(name), real)
        summary = await ScoringFileIngestor(settings).ingest(
            settings.scoring_bucket, scoring_key(name)
        )
        assert summary.status == "ingested"
        await wait_for_counts(fixed, name, {"verified": 2, "rejected": 0, "selected": 1}, 90)
    finally:
        fixed.stop()


# ---- 4. numbers a store cannot hold ---------------------------------------------------


async def test_scores_no_store_holds_are_refused_and_every_counted_fan_is_mirrored(
    target: Target,
) -> None:
    """1e-320 was accepted, then the mirror failed on it (decimal.Underflow) and skipped the
    item: the fan was counted and missing from DynamoDB."""
    name = campaign()
    body = csv_file(
        scoring_row(name, "u1", score="1e-320"),
        scoring_row(name, "u2", score="0.2_5"),
        scoring_row(name, "u3", score="-0"),
        scoring_row(name, "u4", localFanscore="1e-400"),
        scoring_row(name, "u5", score="1e-130"),
    )
    summary = await target.ingest(scoring_key(name), body)
    assert summary.status == "ingested" and (summary.valid, summary.invalid) == (2, 3), summary

    await wait_for_counts(target.worker, name, {"verified": 2, "rejected": 0, "selected": 0}, 90)
    items = await eventually(
        lambda: campaign_items(target.settings, name), lambda found: len(found) == 2, timeout=120
    )
    assert set(items) == {"u3", "u5"}
    assert items["u3"]["score"] == 0
    reasons = str([x["reasons"] for x in await target.letters("scoring-row")])
    assert "cannot be stored" in reasons and "not a plainly written decimal number" in reasons


# ---- the property: any message, on any partition, of any topic a worker reads ------------

# JSON of any depth: hypothesis's recursive values, and a few built past any decoder's depth.
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=30,
)
_DEEP = st.integers(100, 60_000).map(lambda depth: b"[" * depth + b"]" * depth)
_HUGE = st.integers(10_000, MAX_MESSAGE - 2_000).map(lambda size: b'"' + b"x" * size + b'"')
_HOSTILE_FIELDS = st.fixed_dictionaries(
    {
        "campaignId": st.text(min_size=1, max_size=40) | st.just("c" * 5_000),
        "globalUserId": st.text(min_size=1, max_size=20),
        "id": st.text(min_size=4, max_size=24),
        "rank": st.integers(-5, 2_000),
        "eventId": st.text(min_size=1, max_size=30),
        "score": st.floats() | st.just(1e-320) | st.just(-0.0),
        "isVerified": st.booleans(),
        "scoredAt": st.sampled_from(
            ["2026-10-20T12:00:00Z", "9999-12-31T23:59:59Z", "not a time", "2026-10-20"]
        ),
        "source": st.none() | st.dictionaries(st.text(max_size=8), _JSON, max_size=3),
        "tags": st.lists(st.text(max_size=20), max_size=5),
    },
)
_RECORD = _HOSTILE_FIELDS.map(lambda record: orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS))
_MESSAGES = st.one_of(
    st.binary(max_size=2_000),
    _JSON.map(lambda value: orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)),
    _DEEP,
    _HUGE,
    _RECORD,
    st.lists(_RECORD, min_size=1, max_size=20).map(encode_batch),
)


def records_in(value: bytes) -> int:
    """How many write statuses the worker must count for a message: one a record, or one
    for a message that is no batch at all."""
    try:
        return len(read_batch(value))
    except MalformedBatch:
        return 1


def test_any_message_on_the_score_topic_ends_counted_or_dead_lettered(target: Target) -> None:
    partitions = target.settings.topic_partitions

    @settings(
        max_examples=12,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        messages=st.lists(
            st.tuples(
                st.integers(0, partitions - 1), st.none() | st.binary(max_size=30), _MESSAGES
            ),
            min_size=1,
            max_size=25,
        )
    )
    def attack(messages: list[tuple[int, bytes | None, bytes]]) -> None:
        async def check() -> None:
            before = await target.statuses()
            letters_before = len(await target.letters())
            expected = sum(records_in(value) for _, _, value in messages)
            await target.produce(target.settings.score_records_topic, messages)
            after = await eventually(
                target.statuses,
                lambda now: sum((now - before).values()) >= expected,
                timeout=90,
            )
            moved = after - before
            assert sum(moved.values()) == expected, (moved, expected)
            refused = moved["invalid"] + moved["failed"]
            await eventually(
                target.letters,
                lambda found: len(found) - letters_before >= refused,
                timeout=60,
            )
            await target.alive()

        asyncio.run(check())

    attack()
    asyncio.run(target.counted_exactly_after(campaign()))


def test_any_record_on_the_kinesis_feed_ends_copied_or_dead_lettered(target: Target) -> None:
    @settings(
        max_examples=6,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        payloads=st.lists(
            st.one_of(
                st.binary(min_size=1, max_size=2_000),
                _JSON.map(orjson.dumps),
                st.integers(100, 60_000).map(lambda d: b"[" * d + b"]" * d),
                _HOSTILE_FIELDS.map(lambda r: orjson.dumps({**r, "campaign_id": r["campaignId"]})),
            ),
            min_size=1,
            max_size=30,
        )
    )
    def attack(payloads: list[bytes]) -> None:
        async def check() -> None:
            stream = f"vf-feed-{uuid.uuid4().hex[:8]}"
            await create_stream(target.settings, stream, shards=1)
            await put_records(target.settings, stream, payloads)
            done = await asyncio.to_thread(
                run_cli, target.settings, "bridge", "--stream", stream, "--once"
            )
            assert done.returncode == 0, done.stderr[-2000:]
            summary = orjson.loads(done.stdout)
            assert summary["records"] == len(payloads) == summary["valid"] + summary["invalid"]

        asyncio.run(check())

    attack()
    asyncio.run(target.counted_exactly_after(campaign()))


def test_any_message_on_the_partials_topic_is_taken_or_dead_lettered(target: Target) -> None:
    partitions = target.settings.topic_partitions
    partial_shaped = st.fixed_dictionaries(
        {
            "partial": st.fixed_dictionaries(
                {
                    "campaignId": st.text(max_size=20) | st.just("x" * 2_000),
                    "partition": st.integers(-3, 40),
                    "verified": st.integers(-(10**6), 10**6),
                    "watermark": st.integers(-5, 10**9),
                }
            )
        }
    ) | st.fixed_dictionaries(
        {
            "announce": st.fixed_dictionaries(
                {
                    "runId": st.text(max_size=20) | st.just("r" * 3_000),
                    "campaignId": st.text(max_size=20),
                    "valid": st.integers(-10, 10**7),
                }
            )
        }
    )

    @settings(
        max_examples=5,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        messages=st.lists(
            st.tuples(
                st.text(min_size=1, max_size=12).map(lambda t: ("p-" + t).encode()),
                st.one_of(st.binary(max_size=500), _DEEP, partial_shaped.map(orjson.dumps)),
            ),
            min_size=1,
            max_size=20,
        )
    )
    def attack(messages: list[tuple[bytes, bytes]]) -> None:
        async def check() -> None:
            items = [(partition_for(key, partitions), key, value) for key, value in messages]
            await target.produce(target.settings.partials_topic, items)
            await asyncio.sleep(2)
            await target.alive()

        asyncio.run(check())

    attack()
    asyncio.run(target.counted_exactly_after(campaign()))


async def test_a_mirror_item_dynamodb_cannot_hold_is_an_alarm_on_the_console(
    target: Target,
) -> None:
    """A state stored before such numbers were refused (here: written straight onto the
    changelog) cannot be mirrored: counted and shown on every console, not only logged."""
    import msgspec

    from tests.support.states import sample_fan
    from vfstream.domain.fans import Envelope, encode_envelope

    name = campaign()
    fan = msgspec.structs.replace(
        sample_fan(campaignId=name, globalUserId="u1"), score=1e-320, version=99
    )
    key = fan_key(name, "u1").encode()
    changelog = f"{target.settings.app_id}-fan-state-changelog"
    partition = partition_for(key, target.settings.topic_partitions)

    async def refused() -> int:
        _, body = await target.worker.get_json("/dashboard/workers")
        return sum(w["alarms"]["mirrorRefused"] for w in body["workers"])

    before = await refused()
    await target.produce(
        changelog, [(partition, key, encode_envelope(Envelope(0, (0, 0, 0), fan)))]
    )

    await eventually(refused, lambda now: now > before, timeout=60)
    await target.alive()
