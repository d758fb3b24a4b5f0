"""The security settings of every Kafka connection, as aiokafka's arguments: the security
protocol, the TLS context (CA, client certificate, hostname check) and the SASL mechanism
with its credentials, PLAIN, SCRAM or an AWS MSK IAM token.

The client factory (``vfstream.kafka.clients``) makes every client with these, and the
diagnosis of a refused connection (``vfstream.kafka.access``) probes the broker with the
same ones; both ask this module, so neither imports the other to get them.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from functools import lru_cache
from typing import Any

from aiokafka.abc import AbstractTokenProvider
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context

from vfstream.settings import Settings

# An MSK IAM token lives 15 minutes; a new connection gets a fresh one this long before.
TOKEN_REFRESH_MARGIN_SECONDS = 60.0


class MskIamTokenProvider(AbstractTokenProvider):
    """OAUTHBEARER tokens for AWS MSK IAM, signed with the AWS credentials vfstream uses
    everywhere: the keys in the settings when set, else boto's default chain (environment,
    profile, IRSA web identity, container or instance role). One botocore session is kept,
    so a role's credentials are refreshed by botocore, not fetched per connection, and a
    token is reused until shortly before it expires."""

    def __init__(self, settings: Settings) -> None:
        self._region = settings.aws_region
        self._keys: tuple[str, str, str | None] | None = None
        if settings.aws_access_key_id is not None and settings.aws_secret_access_key is not None:
            token = settings.aws_session_token
            self._keys = (
                settings.aws_access_key_id,
                settings.aws_secret_access_key.get_secret_value(),
                token.get_secret_value() if token is not None else None,
            )
        self._credentials: Any = None
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<MskIamTokenProvider region={self._region}>"

    def _load_credentials(self) -> Any:
        from botocore.credentials import Credentials
        from botocore.session import Session

        if self._keys is not None:
            return Credentials(*self._keys, method="explicit")
        credentials = Session().get_credentials()
        if credentials is None:
            raise KafkaError(
                "AWS MSK IAM: no AWS credentials found in the default chain (environment, "
                "profile, web identity, container or instance role)"
            )
        return credentials

    def _sign(self) -> tuple[str, int]:
        from aws_msk_iam_sasl_signer import MSKAuthTokenProvider
        from botocore.credentials import CredentialProvider

        if self._credentials is None:
            self._credentials = self._load_credentials()
        credentials = self._credentials

        class _Kept(CredentialProvider):  # the signer asks a provider; hand it ours
            METHOD = "vfstream"

            def load(self) -> Any:
                return credentials

        token, expires_ms = MSKAuthTokenProvider.generate_auth_token_from_credentials_provider(
            self._region, _Kept()
        )
        return str(token), int(expires_ms)

    async def token(self) -> str:
        async with self._lock:
            if self._token is None or time.time() > self._expires_at:
                token, expires_ms = await asyncio.get_running_loop().run_in_executor(
                    None, self._sign
                )
                self._token = token
                self._expires_at = expires_ms / 1000 - TOKEN_REFRESH_MARGIN_SECONDS
            return self._token


@lru_cache(maxsize=16)
def _ssl_context(
    cafile: str | None,
    certfile: str | None,
    keyfile: str | None,
    key_password: str | None,
    check_hostname: bool,
) -> ssl.SSLContext:
    context = create_ssl_context(
        cafile=cafile, certfile=certfile, keyfile=keyfile, password=key_password
    )
    context.check_hostname = check_hostname
    return context


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of every connection, or None when the protocol uses no TLS."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    password = settings.kafka_ssl_key_password
    return _ssl_context(
        str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
        str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
        str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        password.get_secret_value() if password is not None else None,
        settings.kafka_ssl_check_hostname,
    )


@lru_cache(maxsize=16)
def token_provider(settings: Settings) -> MskIamTokenProvider:
    return MskIamTokenProvider(settings)


def security_kwargs(settings: Settings) -> dict[str, Any]:
    """aiokafka's security arguments for these settings."""
    kwargs: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    mechanism = settings.kafka_sasl_mechanism
    if mechanism is not None:
        kwargs["sasl_mechanism"] = mechanism
        if mechanism == "OAUTHBEARER":
            kwargs["sasl_oauth_token_provider"] = token_provider(settings)
        else:
            password = settings.kafka_sasl_password
            kwargs["sasl_plain_username"] = settings.kafka_sasl_username
            kwargs["sasl_plain_password"] = (
                password.get_secret_value() if password is not None else None
            )
    return kwargs
