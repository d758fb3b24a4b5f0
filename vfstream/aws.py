"""aioboto3 clients pointed at the configured AWS endpoint (moto server locally).

The one place AWS clients are made. Keys are passed only when the settings hold them;
otherwise boto's default chain finds them: environment, shared config and profile, web
identity (IRSA), container credentials (EKS Pod Identity, ECS) and instance metadata.
The session is shared, so a role's credentials are fetched once and refreshed by botocore.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aioboto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from vfstream.settings import Settings

_SESSION = aioboto3.Session()


@asynccontextmanager
async def aws_client(settings: Settings, service: str, **config: Any) -> AsyncIterator[Any]:
    retries = config.pop("retries", {"max_attempts": 5, "mode": "adaptive"})
    client_config = Config(retries=retries, **config)
    async with _SESSION.client(
        service, config=client_config, **settings.aws_client_kwargs()
    ) as client:
        yield client


async def credential_source(settings: Settings) -> str | None:
    """Where the AWS credentials come from, as botocore names the provider (``env``,
    ``shared-credentials-file``, ``assume-role-with-web-identity``, ``container-role``,
    ``iam-role``, ...), ``settings`` for keys set in vfstream's settings, None when the
    chain finds nothing."""
    if settings.aws_access_key_id is not None:
        return "settings"
    credentials = await _SESSION.get_credentials()
    return None if credentials is None else str(credentials.method)


# Error codes AWS answers when the same call can succeed later (throttling, a 5xx).
RETRYABLE_AWS_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "RequestLimitExceeded",
        "ThrottlingException",
        "Throttling",
        "KMSThrottlingException",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)


def is_retryable_aws_error(exc: BaseException) -> bool:
    """Throttling, a 5xx, or the endpoint unreachable: worth the same call again."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return error.get("Code") in RETRYABLE_AWS_CODES or int(status) >= 500
    return isinstance(exc, BotoConnectionError | HTTPClientError | OSError | TimeoutError)


def s3_object_missing(exc: BaseException) -> bool:
    """S3 says the object (or its bucket) is not there: the input is missing, not S3 down."""
    if not isinstance(exc, ClientError):
        return False
    return exc.response.get("Error", {}).get("Code", "") in {"404", "NoSuchKey", "NoSuchBucket"}
