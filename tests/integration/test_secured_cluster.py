"""vfstream on a secured cluster (issue #19): a broker that serves only SASL_SSL (SCRAM) and
mutual TLS, enforces ACLs (StandardAuthorizer, nothing allowed without an ACL), and gives
the ``vfstream`` principal only what ``vfstream.kafka.acls.required_acls`` lists.

The whole pipeline runs on it (notification, counts, mirror, reconcile, operator commands,
a second worker, the bridge, replay), and each way a connection goes wrong fails within
seconds with what is wrong, no secret shown.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import trustme
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic
from pydantic import SecretStr

from tests.support.aws import put_object
from tests.support.kinesis import create_stream, put_records
from tests.support.rows import feed_document
from tests.support.settings import isolated_settings
from tests.support.standard_check import check_everything
from tests.support.waiting import eventually
from vfstream import kafka
from vfstream.aws import aws_client
from vfstream.dev.generator import GeneratorConfig, expected_counts, generate_run, rescore
from vfstream.dev.scenario import upload_run, wait_for_counts
from vfstream.dev.secure import ADMIN_USER, CLIENT_USER, SecureMaterial
from vfstream.dev.stack import as_principal, free_port, private_stack_settings
from vfstream.dev.workers import WorkerProcess, run_cli
from vfstream.settings import Settings
from vfstream.topics import ensure_topics

pytestmark = pytest.mark.integration

# A refused connection is reported this fast, however it is refused (issue #19).
FAILS_WITHIN_SECONDS = 30


@pytest.fixture(scope="module")
def secured_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The secured local stack on free ports, connecting as the ``vfstream`` principal."""
    state = tmp_path_factory.mktemp("secured-stack")
    settings = private_stack_settings(state, secure=True, kafka_mtls_port=free_port())
    up = run_cli(settings, "dev", "up")
    if up.returncode != 0:
        run_cli(settings, "dev", "down")
        raise RuntimeError(f"vfstream dev up --secure failed:\n{up.stdout}\n{up.stderr}")
    try:
        yield settings
    finally:
        run_cli(settings, "dev", "down")


@pytest.fixture
def secured(secured_stack: Settings, tmp_path: Path) -> Settings:
    """Like ``isolated``: topics and app id of this test only (inside the prefixes the
    principal's ACLs cover), the relays off unless a test turns one on."""
    settings = isolated_settings(secured_stack, tmp_path / "worker")
    asyncio.run(ensure_topics(settings))
    return settings


def password(settings: Settings) -> str:
    assert settings.kafka_sasl_password is not None
    return settings.kafka_sasl_password.get_secret_value()


def cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    done = run_cli(settings, *args, timeout=300)
    return done.returncode, done.stdout, done.stderr


async def test_the_principal_is_refused_what_its_acls_do_not_grant(secured: Settings) -> None:
    """The stack really enforces ACLs: without this the rest of the module proves nothing."""
    producer = kafka.producer(secured)
    await producer.start()
    try:
        with pytest.raises(Exception, match="no Write permission on topic '__consumer_offsets'"):
            await producer.send_and_wait("__consumer_offsets", b"x")
    finally:
        await producer.stop()


async def test_a_notified_file_is_counted_mirrored_reconciled_and_shown_with_a_second_worker(
    secured: Settings, tmp_path: Path
) -> None:
    settings = secured.model_copy(
        update={"listen_for_notifications": True, "mirror_to_dynamodb": True}
    )
    async with aws_client(settings, "sqs") as sqs:
        url = (await sqs.get_queue_url(QueueName=settings.notification_queue))["QueueUrl"]
        await sqs.purge_queue(QueueUrl=url)
    first = WorkerProcess(settings, "secured-1", tmp_path / "logs")
    second = WorkerProcess(
        settings.model_copy(update={"web_port": free_port(), "data_dir": tmp_path / "w2"}),
        "secured-2",
        tmp_path / "logs",
    )
    outputs: list[str] = []
    first.start()
    try:
        await first.wait_ready()
        run = generate_run(
            GeneratorConfig(campaign_id="csecure", campaign_name="tls-tour", fans=2500, seed=19)
        )
        # Uploaded only: the S3 notification starts the ingestion in the worker.
        await upload_run(settings, run, tmp_path / "files")
        truth = expected_counts([run])["csecure"]
        await check_everything(settings, [first], "csecure", truth)

        code, runs, err = cli(settings, "runs", "--campaign", "csecure", "--json")
        assert code == 0, err
        (shown,) = orjson.loads(runs)["runs"]
        assert shown["settled"] and shown["valid"] == run.expected_valid_rows
        code, letters, err = cli(settings, "dead-letters", "--campaign", "csecure", "--json")
        assert code == 0, err
        assert orjson.loads(letters)["deadLetters"], "the generator's invalid rows are listed"
        outputs += [runs, letters, err]

        # A second worker joins: the group rebalances, a re-scoring run is counted exactly
        # and both workers answer.
        second.start()
        await second.wait_ready()

        async def two_workers() -> dict:
            code, out, err = cli(settings, "status", "--json")
            outputs.extend([out, err])
            return orjson.loads(out) if code == 0 else {}

        status = await eventually(
            two_workers,
            lambda s: len(s.get("workers", [])) == 2 and all(w["partitions"] for w in s["workers"]),
            timeout=120,
            interval=3,
        )
        assert status["stack"]["kafka"]["security"] == f"SASL_SSL SCRAM-SHA-512 as '{CLIENT_USER}'"
        assert status["stack"]["aws"]["credentials"] == "settings"
        rescored = rescore(run, flip_ratio=0.1, verdict_change_ratio=0.1, seed=20)
        key = await upload_run(settings, rescored, tmp_path / "files")
        code, out, err = cli(settings, "ingest", f"s3://{settings.scoring_bucket}/{key}")
        # The listener may have taken the notification first: then this one is a no-op.
        assert code == 0 and orjson.loads(out)["status"] in ("ingested", "skipped"), err
        outputs += [out, err]
        truth = expected_counts([run, rescored])["csecure"]
        await check_everything(settings, [first, second], "csecure", truth)

        for worker in (first, second):
            for path in ("/statuses", "/metrics", "/dashboard/workers", "/worker/activity"):
                _, body = await worker.get_json(path)
                outputs.append(body if isinstance(body, str) else orjson.dumps(body).decode())
    finally:
        first.stop()
        second.stop()
    shown = "\n".join(outputs) + first.log_path.read_text() + second.log_path.read_text()
    assert password(settings) not in shown
    assert "Authenticated as vfstream via SCRAM-SHA-512" in first.log_path.read_text()


async def test_the_bridge_replay_and_reconcile_on_the_secured_cluster(
    secured: Settings, tmp_path: Path
) -> None:
    stream = f"vf-feed-secure-{uuid.uuid4().hex[:6]}"
    await create_stream(secured, stream)
    documents = [
        feed_document(fan, rank, campaign="cbridge", isVerified=fan % 3 != 0)
        for fan in range(200)
        for rank in (0, 1)
    ]
    await put_records(secured, stream, documents)
    code, out, err = cli(secured, "bridge", "--stream", stream, "--once")
    assert code == 0, err
    assert orjson.loads(out)["valid"] == 400
    truth = {"verified": 133, "rejected": 67, "selected": 0}

    worker = WorkerProcess(secured, "bridged", tmp_path / "logs")
    worker.start()
    try:
        await worker.wait_ready()
        await wait_for_counts(worker, "cbridge", truth, timeout=120)
        await asyncio.sleep(3)  # let the last offsets commit
        worker.stop()
        moved = await eventually(
            lambda: asyncio.to_thread(cli, secured, "replay", "--to", "earliest"),
            lambda done: done[0] == 0,
            timeout=45,
            interval=3,
        )
        assert all(p["to"] == 0 for p in orjson.loads(moved[1])["partitions"])
        worker.start()
        await worker.wait_ready()
        await eventually(
            lambda: worker.get_json("/statuses"),
            lambda answer: answer[1]["writeStatuses"].get("unchanged", 0) >= 400,
            timeout=120,
        )
        counts, _ = await wait_for_counts(worker, "cbridge", truth, timeout=30)
        assert {k: counts[k] for k in truth} == truth
        code, out, err = cli(secured, "reconcile", "--campaign", "cbridge")
        assert code == 0 and orjson.loads(out)["differences"] == 0, (out, err)
    finally:
        worker.stop()


# ---- every way in: each mechanism the settings offer, and mutual TLS ---------------------


def over_mtls(settings: Settings) -> Settings:
    material = SecureMaterial.ensure(settings.dev.dev_state_dir)
    assert settings.dev.kafka_mtls_port
    return settings.model_copy(
        update={
            "kafka_bootstrap": f"127.0.0.1:{settings.dev.kafka_mtls_port}",
            "kafka_security_protocol": "SSL",
            "kafka_sasl_mechanism": None,
            "kafka_sasl_username": None,
            "kafka_sasl_password": None,
            "kafka_ssl_certfile": material.client_cert,
            "kafka_ssl_keyfile": material.client_key,
        }
    )


@pytest.mark.parametrize("way", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN", "mTLS"])
async def test_each_way_in_reaches_the_same_principal_and_its_topics(
    secured: Settings, way: str
) -> None:
    settings = (
        over_mtls(secured)
        if way == "mTLS"
        else secured.model_copy(update={"kafka_sasl_mechanism": way})
    )
    body = f"through {way}".encode()
    producer = kafka.producer(settings, acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(settings.dead_letter_topic, body, partition=0)
    finally:
        await producer.stop()
    consumer = kafka.consumer(settings, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(settings.dead_letter_topic, 0)
        consumer.assign([partition])
        consumer.seek(partition, sent.offset)
        message = await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await consumer.stop()
    assert message.value == body


# ---- clear failures: each within seconds, with its exit status, no secret ---------------


def timed_cli(settings: Settings, *args: str) -> tuple[int, str, float]:
    started = time.monotonic()
    code, _, err = cli(settings, *args)
    return code, err, time.monotonic() - started


def test_a_wrong_password_names_the_principal_and_not_the_password(secured: Settings) -> None:
    wrong = secured.model_copy(update={"kafka_sasl_password": SecretStr("not-the-Pa55word")})

    for command in (["worker"], ["runs"]):
        code, err, seconds = timed_cli(wrong, *command)

        assert code == 5, err
        assert seconds < FAILS_WITHIN_SECONDS
        assert "SASL authentication failed for principal 'vfstream'" in err
        assert "not-the-Pa55word" not in err and password(secured) not in err
        # One attempt and one clear line, not a retry storm (the worker logs the library's
        # INFO lines too: it is a service).
        assert err.count("Unable connect") <= 1 and len(err.strip().splitlines()) <= 5, err


def test_a_plaintext_client_on_the_tls_port_is_told_to_use_tls(secured: Settings) -> None:
    plaintext = secured.model_copy(
        update={
            "kafka_security_protocol": "PLAINTEXT",
            "kafka_sasl_mechanism": None,
            "kafka_ssl_cafile": None,
        }
    )

    code, err, seconds = timed_cli(plaintext, "status")

    assert code == 5, err
    assert seconds < FAILS_WITHIN_SECONDS
    assert "expects TLS" in err and "SASL_SSL" in err


def test_an_untrusted_broker_certificate_is_refused_naming_the_ca_setting(
    secured: Settings, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(other_ca)
    untrusting = secured.model_copy(update={"kafka_ssl_cafile": other_ca})

    code, err, seconds = timed_cli(untrusting, "worker")

    assert code == 5, err
    assert seconds < FAILS_WITHIN_SECONDS
    assert "is not trusted" in err and "VFSTREAM_KAFKA_SSL_CAFILE" in err
    assert password(secured) not in err


async def test_a_topic_without_an_acl_is_named_with_the_missing_operation(
    secured: Settings, tmp_path: Path
) -> None:
    # A topic outside the principal's prefixes, made by the super user: it exists, and the
    # principal may not even see it.
    foreign = f"elsewhere-scores-{uuid.uuid4().hex[:6]}"
    admin = kafka.admin(as_principal(secured, ADMIN_USER))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(foreign, secured.topic_partitions, 1)])
    finally:
        await admin.close()
    settings = secured.model_copy(update={"score_records_topic": foreign})
    key = "scrubbed/registrants.cacl.tour.20261020T120000Z.cleaned.prepared.merged.csv"
    await put_object(
        settings,
        key,
        b"globalUserId,id,campaign_id,event_id,score,isVerified\nu1,u1000,cacl,ev1,0.5,true\n",
    )

    code, err, seconds = await asyncio.to_thread(
        timed_cli, settings, "ingest", f"s3://{settings.scoring_bucket}/{key}"
    )
    assert code == 5, err
    assert seconds < FAILS_WITHIN_SECONDS
    assert f"no Write permission on topic '{foreign}'" in err
    assert "principal 'vfstream'" in err

    code, err, seconds = await asyncio.to_thread(timed_cli, settings, "worker")
    assert code == 5, err
    assert seconds < FAILS_WITHIN_SECONDS
    assert f"topic '{foreign}'" in err and "permission" in err
