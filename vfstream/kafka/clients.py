"""The one place Kafka clients are made: every producer, consumer and admin client of
vfstream, and the credentials Faust builds its own clients with.

Settings become connection arguments here once (``connection_kwargs``): the bootstrap
servers and the security settings (``vfstream.kafka.security``: the security protocol, the
TLS context, the SASL mechanism with its credentials, PLAIN, SCRAM or an AWS MSK IAM
token). A unit test walks the package and fails on a client constructed anywhere else, so
no corner of the pipeline can forget the security settings.

The clients made here are aiokafka's, with one addition: a failed start is diagnosed
(``vfstream.kafka.access``) into an error that says what is wrong (a TLS port spoken to in
plaintext, a certificate not trusted, SASL authentication refused, an ACL missing) and
never shows a password.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from vfstream.kafka.access import denied, explain, explain_start_failure
from vfstream.kafka.security import security_kwargs, ssl_context, token_provider
from vfstream.settings import Settings


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
        credentials: Any = OAuthCredentials(oauth_cb=token_provider(settings), ssl_context=context)
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
