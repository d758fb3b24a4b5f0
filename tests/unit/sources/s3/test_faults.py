"""Which failures are the file's, and which are a service's (SPEC 2 "Transient is not
invalid"): only the file's own bytes refuse it; S3, DynamoDB, Kinesis or the broker away is
retried."""

from __future__ import annotations

import gzip
import zlib

import aiohttp
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    NotLeaderForPartitionError,
    ProducerFenced,
    TopicAuthorizationFailedError,
)
from botocore.exceptions import (
    ConnectionClosedError,
    EndpointConnectionError,
    IncompleteReadError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from tests.support.aws import client_error
from vfstream.domain.records import ScoringFileError
from vfstream.errors import AccessRefused, DependencyUnavailable, OperatorError
from vfstream.sources.s3.faults import (
    FILE_BYTE_ERRORS,
    ObjectReplaced,
    S3Unavailable,
    is_object_replaced,
    is_s3_fault,
    is_transient,
)
from vfstream.sources.s3.s3body import FileTooLarge

URL = "http://127.0.0.1:5000/vf-scoring/scrubbed/x.csv.gz"

S3_FAULTS = [
    ConnectionResetError(104, "Connection reset by peer"),
    TimeoutError("timed out"),
    aiohttp.ClientPayloadError("Response payload is not completed"),
    aiohttp.ServerDisconnectedError(),
    ReadTimeoutError(endpoint_url=URL),
    ResponseStreamingError(error=ConnectionResetError()),
    IncompleteReadError(actual_bytes=10, expected_bytes=20),
    EndpointConnectionError(endpoint_url=URL),
    ConnectionClosedError(endpoint_url=URL),
    client_error("SlowDown", 503, "GetObject"),
    client_error("InternalError", 500, "GetObject"),
    client_error("RequestTimeout", 400, "GetObject"),
    client_error("ThrottlingException", 400, "GetObject"),
    S3Unavailable("S3 broke off"),
    ObjectReplaced("changed"),
]

FILE_FAULTS = [
    gzip.BadGzipFile("Not a gzipped file (b'pl')"),
    zlib.error("Error -3 while decompressing data: invalid block type"),
    EOFError("Compressed file ended before the end-of-stream marker was reached"),
    ScoringFileError("the file has no header row"),
    FileTooLarge("the file is larger than 10 bytes (decompressed)"),
]

NOT_S3 = [
    client_error("AccessDenied", 403, "GetObject"),
    client_error("NoSuchKey", 404, "GetObject"),
    client_error("PreconditionFailed", 412, "GetObject"),
    NoCredentialsError(),
    ValueError("a bug"),
]


@pytest.mark.parametrize("exc", S3_FAULTS, ids=lambda e: type(e).__name__)
def test_s3_answers_broken_off_or_refused_for_now_are_s3_faults_and_transient(
    exc: BaseException,
) -> None:
    assert is_s3_fault(exc)
    assert is_transient(exc)


@pytest.mark.parametrize("exc", FILE_FAULTS, ids=lambda e: type(e).__name__)
def test_the_files_own_bytes_are_never_an_s3_fault_nor_transient(exc: BaseException) -> None:
    assert not is_s3_fault(exc)
    assert not is_transient(exc)


def test_a_corrupt_gzip_is_still_the_files_fault_though_gzip_names_it_an_os_error() -> None:
    # BadGzipFile derives from OSError, as a connection reset does: the type decides.
    assert issubclass(gzip.BadGzipFile, OSError)
    assert isinstance(gzip.BadGzipFile("x"), FILE_BYTE_ERRORS)
    assert not isinstance(ConnectionResetError(), FILE_BYTE_ERRORS)
    assert not isinstance(S3Unavailable("x"), (*FILE_BYTE_ERRORS, OSError))


@pytest.mark.parametrize("exc", NOT_S3, ids=lambda e: type(e).__name__)
def test_refusals_missing_objects_and_bugs_are_not_s3_faults(exc: BaseException) -> None:
    assert not is_s3_fault(exc)


@pytest.mark.parametrize(
    ("code", "status", "replaced"),
    [
        ("PreconditionFailed", 412, True),
        ("NoSuchKey", 404, True),
        ("InvalidRange", 416, True),
        ("AccessDenied", 403, False),
        ("SlowDown", 503, False),
    ],
)
def test_a_conditional_read_that_finds_another_version_or_none_is_a_replaced_object(
    code: str, status: int, replaced: bool
) -> None:
    assert is_object_replaced(client_error(code, status, "GetObject")) is replaced
    assert not is_object_replaced(ConnectionResetError())


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (DependencyUnavailable("the entry service did not answer"), True),
        (KafkaConnectionError("Unable to bootstrap"), True),
        (KafkaTimeoutError(), True),
        (NotLeaderForPartitionError(), True),
        (client_error("ProvisionedThroughputExceededException", 400, "BatchWriteItem"), True),
        (client_error("ServiceUnavailable", 503, "PutRecords"), True),
        (ProducerFenced(), False),
        (TopicAuthorizationFailedError(), False),
        (AccessRefused("SASL authentication failed"), False),
        (OperatorError("replay while workers run"), False),
        (client_error("ValidationException", 400, "BatchWriteItem"), False),
        (TypeError("a bug"), False),
        (KeyError("Body"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_what_the_listener_retries_in_place_and_what_it_lets_go(
    exc: BaseException, transient: bool
) -> None:
    assert is_transient(exc) is transient
