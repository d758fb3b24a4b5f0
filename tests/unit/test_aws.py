"""Which AWS errors are worth the same call again, what "the object is missing" is, and
which credentials a client signs with."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aioboto3
import pytest
from aiohttp import web
from botocore.exceptions import EndpointConnectionError, ParamValidationError
from pydantic import SecretStr

import vfstream.aws
from tests.support.aws import client_error
from vfstream.aws import aws_client, credential_source, is_retryable_aws_error, s3_object_missing
from vfstream.settings import Settings


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


# ---- credentials: the settings' keys, else boto's default chain ------------------------

LIST_BUCKETS = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<ListAllMyBucketsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b"<Owner><ID>x</ID></Owner><Buckets></Buckets></ListAllMyBucketsResult>"
)


@pytest.fixture
async def signed_by() -> AsyncIterator[tuple[str, list[str]]]:
    """An endpoint that answers S3 ListBuckets and keeps each request's Authorization."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.Response(body=LIST_BUCKETS, content_type="application/xml")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


@pytest.fixture
def no_ambient_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A fresh boto session seeing no credentials of this machine or the CI runner."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(vfstream.aws, "_SESSION", aioboto3.Session())
    return monkeypatch


async def list_buckets(settings: Settings) -> None:
    async with aws_client(settings, "s3", retries={"max_attempts": 1}) as s3:
        await s3.list_buckets()


async def test_without_keys_in_the_settings_the_client_signs_with_the_environments(
    signed_by: tuple[str, list[str]], no_ambient_aws: pytest.MonkeyPatch
) -> None:
    endpoint, seen = signed_by
    no_ambient_aws.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    no_ambient_aws.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    settings = Settings(aws_endpoint_url=endpoint)

    await list_buckets(settings)

    assert "Credential=AKIDFROMENV/" in seen[0]
    assert await credential_source(settings) == "env"


async def test_a_shared_credentials_file_is_used_when_nothing_else_is_set(
    signed_by: tuple[str, list[str]], no_ambient_aws: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    endpoint, seen = signed_by
    (tmp_path / "credentials").write_text(
        "[default]\naws_access_key_id = AKIDFROMFILE\naws_secret_access_key = file-secret\n"
    )
    no_ambient_aws.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    settings = Settings(aws_endpoint_url=endpoint)

    await list_buckets(settings)

    assert "Credential=AKIDFROMFILE/" in seen[0]
    assert await credential_source(settings) == "shared-credentials-file"


async def test_keys_in_the_settings_win_over_the_chain(
    signed_by: tuple[str, list[str]], no_ambient_aws: pytest.MonkeyPatch
) -> None:
    endpoint, seen = signed_by
    no_ambient_aws.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    no_ambient_aws.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    settings = Settings(
        aws_endpoint_url=endpoint,
        aws_access_key_id="AKIDSETTINGS",
        aws_secret_access_key=SecretStr("settings-secret"),
    )

    await list_buckets(settings)

    assert "Credential=AKIDSETTINGS/" in seen[0]
    assert await credential_source(settings) == "settings"


async def test_no_credentials_anywhere_is_reported_as_none(
    no_ambient_aws: pytest.MonkeyPatch,
) -> None:
    assert await credential_source(Settings()) is None
