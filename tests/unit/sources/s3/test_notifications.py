"""Behaviour of S3 event-notification parsing for SQS messages (SPEC 2.1)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from vfstream.sources.s3.notifications import (
    NotificationError,
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
