"""Is a failure about the file, or about a service the file passes through?

SPEC 2 "Transient is not invalid": a file is refused only for what is in it. An S3 read cut
off mid-body, a DynamoDB or Kinesis outage, a broker that does not answer say nothing about
the file; they are retried, and the file is never dead-lettered for them. Only the file's
own bytes (a bad key or header, a corrupt or truncated gzip, a size limit) refuse it.

Pure: these functions look at exception types and codes, nothing else.
"""

from __future__ import annotations

import gzip
import zlib

import aiohttp
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from botocore.exceptions import (
    ClientError,
    HTTPClientError,
    IncompleteReadError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from vfstream.aws import is_retryable_aws_error
from vfstream.errors import AccessRefused, DependencyUnavailable, InputRejected, OperatorError


class S3Unavailable(DependencyUnavailable):
    """S3 did not answer, or broke off an answer, for longer than vfstream waits: the file
    is not at fault, and another try later can read it whole (exit status 4)."""


class ObjectReplaced(S3Unavailable):
    """The object read was replaced or deleted while it was read: reading it again from the
    start reads the new version (or finds it gone)."""


# S3's own names for answers a later call can get right (beside throttling and any 5xx).
_S3_TRANSIENT_CODES = frozenset({"RequestTimeout", "SlowDown", "InternalError", "503", "500"})

# The codes S3 answers a conditional or ranged read with when the version read is gone.
_S3_REPLACED_CODES = frozenset(
    {"PreconditionFailed", "412", "NoSuchKey", "404", "NotFound", "InvalidRange", "416"}
)

# What the file's own bytes raise in the gzip and text layers above the S3 body.
FILE_BYTE_ERRORS: tuple[type[BaseException], ...] = (gzip.BadGzipFile, zlib.error, EOFError)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_s3_fault(exc: BaseException) -> bool:
    """S3 failed to serve the object (a connection refused, reset or timed out, an answer
    broken off, throttling, a 5xx): the same read can succeed later."""
    if isinstance(exc, S3Unavailable):
        return True
    if isinstance(exc, FILE_BYTE_ERRORS):
        return False
    if isinstance(exc, ClientError):
        return _code(exc) in _S3_TRANSIENT_CODES or is_retryable_aws_error(exc)
    if isinstance(exc, HTTPClientError | BotoConnectionError | IncompleteReadError):
        return True
    if isinstance(exc, aiohttp.ClientError):
        return True
    return isinstance(exc, OSError | TimeoutError)  # asyncio.TimeoutError is TimeoutError


def is_object_replaced(exc: BaseException) -> bool:
    """A conditional read (``IfMatch`` the ETag read first) that found another version, or
    none: the object changed under the reader."""
    return isinstance(exc, ClientError) and _code(exc) in _S3_REPLACED_CODES


def is_transient(exc: BaseException) -> bool:
    """Worth the same work again later: a service did not answer (S3, DynamoDB, Kinesis,
    the broker). False for a refused input, a refused identity or permission, a wrong
    request, a fenced producer, and anything unknown (a bug): those are not retried in
    place, so a message that always fails this way ends in the dead-letter queue."""
    if isinstance(exc, (InputRejected, AccessRefused, OperatorError, *FILE_BYTE_ERRORS)):
        return False
    if isinstance(exc, DependencyUnavailable):
        return True
    if isinstance(exc, KafkaError):
        return bool(
            isinstance(exc, KafkaConnectionError | KafkaTimeoutError)
            or getattr(exc, "retriable", False)
        )
    return is_s3_fault(exc) or is_retryable_aws_error(exc)
