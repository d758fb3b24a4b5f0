"""Which AWS errors are worth the same call again, and what "the object is missing" is."""

from __future__ import annotations

import pytest
from botocore.exceptions import EndpointConnectionError, ParamValidationError

from tests.support.aws import client_error
from vfstream.aws import is_retryable_aws_error, s3_object_missing


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (client_error("ProvisionedThroughputExceededException"), True),
        (client_error("LimitExceededException"), True),
        (client_error("InternalFailure", 500), True),
        (client_error("SomethingNew", 503), True),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
        (client_error("ResourceNotFoundException"), False),
        (client_error("AccessDeniedException"), False),
        (client_error("ExpiredIteratorException"), False),
        (ValueError("bug"), False),
        (ParamValidationError(report="bad parameter"), False),
        (ConnectionResetError(), True),
    ],
)
def test_which_aws_errors_are_retried(error: Exception, retryable: bool) -> None:
    assert is_retryable_aws_error(error) is retryable


@pytest.mark.parametrize(
    ("error", "missing"),
    [
        (client_error("NoSuchKey", 404), True),
        (client_error("404", 404), True),
        (client_error("NoSuchBucket", 404), True),
        (client_error("AccessDenied", 403), False),
        (client_error("InternalError", 500), False),
        (OSError("refused"), False),
    ],
)
def test_only_a_missing_object_or_bucket_is_missing(error: Exception, missing: bool) -> None:
    assert s3_object_missing(error) is missing
