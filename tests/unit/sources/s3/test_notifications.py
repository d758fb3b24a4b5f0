"""Behaviour of S3 event-notification parsing for SQS messages (SPEC 2.1)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError

from vfstream.retry import Backoff
from vfstream.settings import Settings
from vfstream.sources.s3 import notifications
from vfstream.sources.s3.faults import S3Unavailable
from vfstream.sources.s3.notifications import (
    NotificationError,
    NotificationListener,
    ObjectCreated,
    parse_s3_notification,
)

SCORING_BUCKET = "vf-scoring"


def s3_record(
    key: str, event_name: str = "ObjectCreated:Put", bucket: str = SCORING_BUCKET
) -> dict:
    """One record shaped as AWS sends it (eventVersion 2.1)."""
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-10-20T12:00:05.123Z",
        "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "203.0.113.10"},
        "responseElements": {
            "x-amz-request-id": "C3D13FE58DE4C810",
            "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "scrubbed-created",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": {
                "key": key,
                "size": 1024,
                "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                "sequencer": "0055AED6DCD90281E5",
            },
        },
    }


def notification(*records: dict) -> bytes:
    return orjson.dumps({"Records": list(records)})


def test_object_created_event_gives_bucket_and_decoded_key() -> None:
    suffix = ".20261020T120000Z.cleaned.prepared.merged.csv"
    encoded = f"scrubbed/registrants.c1.summer+tour%2B2026{suffix}"

    created = parse_s3_notification(notification(s3_record(encoded)))

    assert created == [
        ObjectCreated(
            bucket=SCORING_BUCKET, key=f"scrubbed/registrants.c1.summer tour+2026{suffix}"
        )
    ]


def test_percent_encoded_characters_are_decoded() -> None:
    created = parse_s3_notification(notification(s3_record("scrubbed/a%3Ab%2Fc%20d%C3%A9.csv.gz")))

    assert created[0].key == "scrubbed/a:b/c dé.csv.gz"


@pytest.mark.parametrize(
    "event_name",
    [
        "ObjectCreated:Put",
        "ObjectCreated:Post",
        "ObjectCreated:Copy",
        "ObjectCreated:CompleteMultipartUpload",
    ],
)
def test_every_kind_of_object_creation_counts(event_name: str) -> None:
    created = parse_s3_notification(notification(s3_record("scrubbed/x.csv", event_name)))

    assert created == [ObjectCreated(bucket=SCORING_BUCKET, key="scrubbed/x.csv")]


def test_several_records_are_returned_in_order() -> None:
    body = notification(s3_record("scrubbed/a.csv"), s3_record("scrubbed/b.csv", bucket="other"))

    assert parse_s3_notification(body) == [
        ObjectCreated(bucket=SCORING_BUCKET, key="scrubbed/a.csv"),
        ObjectCreated(bucket="other", key="scrubbed/b.csv"),
    ]


def test_body_may_be_text_or_bytes() -> None:
    body = notification(s3_record("scrubbed/a.csv"))

    assert parse_s3_notification(body.decode()) == parse_s3_notification(body)


def test_s3_test_event_announces_nothing() -> None:
    body = orjson.dumps(
        {
            "Service": "Amazon S3",
            "Event": "s3:TestEvent",
            "Time": "2026-10-20T12:00:00.000Z",
            "Bucket": SCORING_BUCKET,
            "RequestId": "5582815E1AEA5ADF",
            "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
        }
    )

    assert parse_s3_notification(body) == []


@pytest.mark.parametrize(
    "event_name", ["ObjectRemoved:Delete", "ObjectRestore:Completed", "LifecycleExpiration:Delete"]
)
def test_events_other_than_object_created_are_skipped(event_name: str) -> None:
    assert parse_s3_notification(notification(s3_record("scrubbed/x.csv", event_name))) == []


def test_only_the_created_objects_of_a_mixed_notification_are_returned() -> None:
    body = notification(
        s3_record("scrubbed/gone.csv", "ObjectRemoved:Delete"),
        s3_record("scrubbed/new.csv"),
    )

    assert parse_s3_notification(body) == [
        ObjectCreated(bucket=SCORING_BUCKET, key="scrubbed/new.csv")
    ]


def test_empty_records_list_announces_nothing() -> None:
    assert parse_s3_notification(b'{"Records": []}') == []


@pytest.mark.parametrize("body", [b"", b"not json", b'{"Records": [', b"\xff\xfe", "{'a': 1}"])
def test_body_that_is_not_json_is_rejected(body: str | bytes) -> None:
    with pytest.raises(NotificationError, match="not JSON"):
        parse_s3_notification(body)


@pytest.mark.parametrize("body", [b"[]", b"[{}]", b'"Records"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object_is_rejected(body: bytes) -> None:
    with pytest.raises(NotificationError, match="not a JSON object"):
        parse_s3_notification(body)


@pytest.mark.parametrize(
    "message",
    [{}, {"Event": "s3:SomethingElse"}, {"Records": None}, {"Records": {}}, {"Records": "x"}],
)
def test_notification_without_a_records_list_is_rejected(message: dict[str, Any]) -> None:
    with pytest.raises(NotificationError, match="no Records list"):
        parse_s3_notification(orjson.dumps(message))


def _without(path: tuple[str, ...]) -> dict:
    record = s3_record("scrubbed/x.csv")
    target = record
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]
    return record


@pytest.mark.parametrize(
    "record",
    [
        _without(("s3",)),
        _without(("s3", "bucket")),
        _without(("s3", "bucket", "name")),
        _without(("s3", "object")),
        _without(("s3", "object", "key")),
        {"eventName": "ObjectCreated:Put", "s3": None},
        {"eventName": "ObjectCreated:Put", "s3": {"bucket": "b", "object": {"key": "k"}}},
        {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": ["k"]}},
        {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {"key": 7}}},
        {
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": None}, "object": {"key": "k"}},
        },
        {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": ""}, "object": {"key": "k"}}},
        {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {"key": ""}}},
        "ObjectCreated:Put",
        ["ObjectCreated:Put"],
        None,
    ],
)
def test_malformed_object_created_record_is_rejected(record: Any) -> None:
    with pytest.raises(NotificationError, match="malformed S3 record"):
        parse_s3_notification(notification(record))


def test_malformed_record_rejects_the_whole_notification() -> None:
    body = notification(s3_record("scrubbed/ok.csv"), _without(("s3", "object", "key")))

    with pytest.raises(NotificationError):
        parse_s3_notification(body)


def test_notification_error_is_a_value_error() -> None:
    assert issubclass(NotificationError, ValueError)


# -- The listener's hold on a message (issue #21 item 4) -----------------------------------


class FakeSqs:
    """An SQS queue in memory: receives hide a message for the visibility timeout and hand
    out a new receipt handle; renewals and deletes must name the newest handle."""

    def __init__(self, visibility: float = 30) -> None:
        self.visibility = visibility
        self.messages: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []
        self.renewals = 0
        self.released: list[str] = []
        self.receives = 0
        self.failing_deletes = 0

    def send(self, body: bytes) -> str:
        message_id = f"m{len(self.messages)}"
        self.messages[message_id] = {"body": body.decode(), "visible_at": 0.0, "handle": None}
        return message_id

    def receive_count(self, message_id: str) -> int:
        return int(self.messages[message_id].get("count", 0))

    async def get_queue_url(self, QueueName: str) -> dict[str, str]:
        return {"QueueUrl": "q"}

    async def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> Any:
        return {"Attributes": {"VisibilityTimeout": str(int(self.visibility))}}

    async def receive_message(
        self, QueueUrl: str, MaxNumberOfMessages: int, WaitTimeSeconds: int
    ) -> Any:
        self.receives += 1
        now, found = time.monotonic(), []
        for message_id, message in self.messages.items():
            if message_id in self.deleted or message["visible_at"] > now:
                continue
            message["visible_at"] = now + self.visibility
            message["count"] = message.get("count", 0) + 1
            message["handle"] = f"{message_id}#{message['count']}"
            found.append(
                {
                    "MessageId": message_id,
                    "ReceiptHandle": message["handle"],
                    "Body": message["body"],
                }
            )
            if len(found) == MaxNumberOfMessages:
                break
        if not found:
            await asyncio.sleep(0.01)
        return {"Messages": found}

    def _by_handle(self, handle: str) -> tuple[str, dict[str, Any]]:
        message_id = handle.split("#")[0]
        message = self.messages[message_id]
        assert message["handle"] == handle, "an old receipt handle"
        return message_id, message

    async def delete_message(self, QueueUrl: str, ReceiptHandle: str) -> None:
        message_id, _ = self._by_handle(ReceiptHandle)
        if self.failing_deletes:
            self.failing_deletes -= 1
            raise ConnectionResetError("SQS went away")
        self.deleted.append(message_id)

    async def change_message_visibility_batch(
        self, QueueUrl: str, Entries: list[dict[str, Any]]
    ) -> Any:
        for entry in Entries:
            _, message = self._by_handle(entry["ReceiptHandle"])
            message["visible_at"] = time.monotonic() + entry["VisibilityTimeout"]
            self.renewals += 1
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}

    async def change_message_visibility(
        self, QueueUrl: str, ReceiptHandle: str, VisibilityTimeout: int
    ) -> None:
        message_id, message = self._by_handle(ReceiptHandle)
        message["visible_at"] = time.monotonic() + VisibilityTimeout
        self.released.append(message_id)


@dataclass
class Summary:
    status: str = "ingested"

    @property
    def settled(self) -> bool:
        return self.status != "incomplete"

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status}


def listener_on(sqs: FakeSqs, ingest: Any) -> NotificationListener:
    listener = NotificationListener(Settings(), ingest, sqs)

    async def no_fencing() -> None:
        return None

    listener._fence = no_fencing  # type: ignore[method-assign]
    return listener


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notifications, "RETRY_BACKOFF", Backoff(0.0, 0.0))


async def test_a_message_is_deleted_once_every_file_it_names_is_settled_and_not_before() -> None:
    sqs = FakeSqs()
    message_id = sqs.send(notification(s3_record("scrubbed/a.csv"), s3_record("fanlist/b.csv")))
    answers = {"scrubbed/a.csv": ["ingested"], "fanlist/b.csv": ["incomplete", "stored"]}
    calls: list[str] = []

    async def ingest(bucket: str, key: str) -> Summary:
        calls.append(key)
        return Summary(answers[key].pop(0))

    listener = listener_on(sqs, ingest)
    assert await listener.poll_once(wait_seconds=0) == 0
    assert sqs.deleted == [] and listener.held == 1
    assert await listener.poll_once(wait_seconds=0) == 1
    assert sqs.deleted == [message_id] and listener.held == 0
    # The file done in the first try is not ingested again; the message came once.
    assert calls == ["scrubbed/a.csv", "fanlist/b.csv", "fanlist/b.csv"]
    assert sqs.receive_count(message_id) == 1


async def test_a_transient_fault_keeps_the_message_and_tries_again_in_place() -> None:
    sqs = FakeSqs()
    message_id = sqs.send(notification(s3_record("scrubbed/a.csv")))
    faults = [S3Unavailable("S3 reset the read"), KafkaConnectionError("no broker")]

    async def ingest(bucket: str, key: str) -> Summary:
        if faults:
            raise faults.pop(0)
        return Summary()

    listener = listener_on(sqs, ingest)
    for _ in range(3):
        await listener.poll_once(wait_seconds=0)
    assert sqs.deleted == [message_id]
    assert sqs.receive_count(message_id) == 1  # never returned to the queue meanwhile


async def test_an_unknown_error_lets_the_message_go_back_for_the_redrive_policy_to_count() -> None:
    sqs = FakeSqs()
    sqs.send(notification(s3_record("scrubbed/a.csv")))

    async def ingest(bucket: str, key: str) -> Summary:
        raise TypeError("a bug")

    listener = listener_on(sqs, ingest)
    await listener.poll_once(wait_seconds=0)
    assert sqs.deleted == [] and listener.held == 0
    await listener.extend_visibility(30)
    assert sqs.renewals == 0  # not held: its visibility lapses, it is received again


async def test_a_refused_file_and_a_bad_notification_delete_their_messages() -> None:
    sqs = FakeSqs()
    refused = sqs.send(notification(s3_record("scrubbed/bad.csv")))
    garbage = sqs.send(b"not json")

    async def ingest(bucket: str, key: str) -> Summary:
        return Summary("failed")

    listener = listener_on(sqs, ingest)
    assert await listener.poll_once(wait_seconds=0) == 2
    assert sorted(sqs.deleted) == sorted([refused, garbage])


async def test_a_file_slower_than_the_visibility_timeout_keeps_its_message_hidden() -> None:
    """Visibility 1 s, a file of 2.5 s: the message is renewed while it is worked on, never
    received twice, and deleted with its newest receipt handle."""
    sqs = FakeSqs(visibility=1)
    message_id = sqs.send(notification(s3_record("scrubbed/slow.csv")))

    async def ingest(bucket: str, key: str) -> Summary:
        await asyncio.sleep(2.5)
        return Summary()

    listener = listener_on(sqs, ingest)
    running = asyncio.create_task(listener.run(lambda: bool(sqs.deleted)))
    await asyncio.wait_for(running, 10)
    assert sqs.deleted == [message_id]
    assert sqs.receive_count(message_id) == 1
    assert sqs.renewals >= 3


async def test_a_stopping_listener_lets_go_of_what_it_holds_at_once() -> None:
    sqs = FakeSqs()
    message_id = sqs.send(notification(s3_record("scrubbed/a.csv")))
    started = asyncio.Event()

    async def ingest(bucket: str, key: str) -> Summary:
        started.set()
        await asyncio.sleep(3600)
        return Summary()

    listener = listener_on(sqs, ingest)
    running = asyncio.create_task(listener.run(lambda: False))
    await started.wait()
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    assert sqs.released == [message_id] and sqs.deleted == []
    assert sqs.messages[message_id]["visible_at"] <= time.monotonic()


async def test_a_delete_sqs_refuses_is_made_again_without_doing_the_files_again() -> None:
    sqs = FakeSqs()
    message_id = sqs.send(notification(s3_record("fanlist/scored/c1/1.csv")))
    sqs.failing_deletes = 1
    calls: list[str] = []

    async def ingest(bucket: str, key: str) -> Summary:
        calls.append(key)
        return Summary("stored")

    listener = listener_on(sqs, ingest)
    with pytest.raises(ConnectionResetError):
        await listener.poll_once(wait_seconds=0)
    assert listener.held == 1
    assert await listener.poll_once(wait_seconds=0) == 1
    assert sqs.deleted == [message_id] and calls == ["fanlist/scored/c1/1.csv"]
