"""The one place Kafka clients are made: every producer, consumer and admin client of
vfstream, and the credentials Faust builds its own clients with.

Settings become connection arguments here once (``connection_kwargs``): the bootstrap
servers, the security protocol, the TLS context (CA, client certificate, hostname check)
and the SASL mechanism with its credentials, PLAIN, SCRAM or an AWS MSK IAM token. A unit
test walks the package and fails on a client constructed anywhere else, so no corner of
the pipeline can forget the security settings.

The clients made here are aiokafka's, with one addition: a failed start is diagnosed
(``vfstream.kafka.access``) into an error that says what is wrong (a TLS port spoken to in
plaintext, a certificate not trusted, SASL authentication refused, an ACL missing) and
never shows a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from functools import lru_cache
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.abc import AbstractTokenProvider
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)
from aiokafka.helpers import create_ssl_context

from vfstream.kafka.access import denied, explain, explain_start_failure
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
def _token_provider(settings: Settings) -> MskIamTokenProvider:
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
            kwargs["sasl_oauth_token_provider"] = _token_provider(settings)
        else:
            password = settings.kafka_sasl_password
            kwargs["sasl_plain_username"] = settings.kafka_sasl_username
            kwargs["sasl_plain_password"] = (
                password.get_secret_value() if password is not None else None
            )
    return kwargs


def connection_kwargs(settings: Settings) -> dict[str, Any]:
    """Where and how to connect: what every client here is made with."""
    return {"bootstrap_servers": settings.kafka_bootstrap, **security_kwargs(settings)}


class _Diagnosed:
    """A client whose failed start says why (``vfstream.kafka.access.diagnose``) and
    leaves nothing open behind it."""

    _vf_settings: Settings

    async def start(self) -> None:
        try:
            await super().start()  # type: ignore[misc]
        except KafkaError as exc:
            with contextlib.suppress(Exception):
                close = getattr(self, "stop", None) or self.close  # type: ignore[attr-defined]
                await close()
            raise await explain_start_failure(self._vf_settings, exc) from exc


class Producer(_Diagnosed, AIOKafkaProducer):
    """Names the topic and the Write permission when the cluster refuses a send."""

    async def send(self, topic: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().send(topic, *args, **kwargs)
        except TopicAuthorizationFailedError as exc:
            raise denied(self._vf_settings, "topic", topic, "Write") from exc

    async def send_and_wait(self, topic: str, *args: Any, **kwargs: Any) -> Any:
        future = await self.send(topic, *args, **kwargs)
        try:
            return await future
        except TopicAuthorizationFailedError as exc:
            raise denied(self._vf_settings, "topic", topic, "Write") from exc

    async def partitions_for(self, topic: str) -> Any:
        # A producer asks for a topic's partitions to write to it.
        try:
            return await super().partitions_for(topic)
        except TopicAuthorizationFailedError as exc:
            raise denied(self._vf_settings, "topic", topic, "Write") from exc

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any:
        try:
            return await super().send_batch(batch, topic, partition=partition)
        except TopicAuthorizationFailedError as exc:
            raise denied(self._vf_settings, "topic", topic, "Write") from exc


class Consumer(_Diagnosed, AIOKafkaConsumer):
    """Names the topic or group and the Read permission when the cluster refuses a fetch."""

    async def getmany(self, *partitions: Any, **kwargs: Any) -> Any:
        try:
            return await super().getmany(*partitions, **kwargs)
        except (TopicAuthorizationFailedError, GroupAuthorizationFailedError) as exc:
            raise explain(exc, self._vf_settings, "Read") from exc

    async def getone(self, *partitions: Any) -> Any:
        try:
            return await super().getone(*partitions)
        except (TopicAuthorizationFailedError, GroupAuthorizationFailedError) as exc:
            raise explain(exc, self._vf_settings, "Read") from exc


class Admin(_Diagnosed, AIOKafkaAdminClient):
    pass


def producer(settings: Settings, **options: Any) -> Producer:
    """An aiokafka producer on the configured cluster; ``options`` are aiokafka's."""
    client = Producer(**connection_kwargs(settings), **options)
    client._vf_settings = settings
    return client


def consumer(settings: Settings, *topics: str, **options: Any) -> Consumer:
    """An aiokafka consumer on the configured cluster; ``options`` are aiokafka's."""
    client = Consumer(*topics, **connection_kwargs(settings), **options)
    client._vf_settings = settings
    return client


def admin(settings: Settings, **options: Any) -> Admin:
    """An aiokafka admin client on the configured cluster."""
    client = Admin(**connection_kwargs(settings), **options)
    client._vf_settings = settings
    return client


def faust_credentials(settings: Settings) -> Any:
    """Faust's ``broker_credentials`` for these settings (None: plaintext, no SASL).

    Faust makes its own aiokafka clients (the stream consumer, its producer, the topic
    creator) from these, through ``credentials_to_aiokafka_auth``: the same protocol,
    TLS context and SASL arguments as ``security_kwargs``.
    """
    from faust.auth import OAuthCredentials, SASLCredentials, SSLCredentials

    protocol = settings.kafka_security_protocol
    context = ssl_context(settings)
    mechanism = settings.kafka_sasl_mechanism
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return SSLCredentials(context)
    if mechanism == "OAUTHBEARER":
        credentials: Any = OAuthCredentials(oauth_cb=_token_provider(settings), ssl_context=context)
    else:
        password = settings.kafka_sasl_password
        credentials = SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password.get_secret_value() if password is not None else None,
            ssl_context=context,
            mechanism=mechanism,
        )
    return credentials


async def protocol_client(settings: Settings) -> Any:
    """aiokafka's low-level client, bootstrapped: for requests its high-level clients do
    not offer (CreateAcls for the local stack). Close it with ``await client.close()``."""
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(**connection_kwargs(settings))
    await client.bootstrap()
    return client
