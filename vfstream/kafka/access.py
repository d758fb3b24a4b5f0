"""Why Kafka refused a connection or a request, said so an operator can act on it.

aiokafka reports every failed bootstrap as "Unable to bootstrap from [...]" and logs the
cause on another line, whatever it was: a plaintext client on a TLS port, a certificate not
trusted, a wrong password. ``explain_start_failure`` finds the cause by probing the first
bootstrap server step by step (TCP, TLS, SASL) and answers with one of vfstream's errors:

- ``AccessRefused`` (exit 5) when the cluster turned vfstream down: SASL authentication
  failed (naming the principal, never the password), a certificate not trusted, a protocol
  mismatch, an ACL missing (naming the resource and the operation);
- ``DependencyUnavailable`` (exit 4) when the broker did not answer: retry later.

Every message passes ``redact``: no configured password, key password or token can leak
through a broker's or a library's text.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnsupportedSaslMechanismError,
)

from vfstream.errors import AccessRefused, DependencyUnavailable, VfStreamError
from vfstream.kafka.security import security_kwargs, ssl_context
from vfstream.settings import Settings

PROBE_TIMEOUT_SECONDS = 10.0
GRANTS_HINT = "README 'Connecting to a production cluster' lists what vfstream needs"


def secrets_of(settings: Settings) -> list[str]:
    """Every secret a Kafka connection is made with."""
    found = [
        secret.get_secret_value()
        for secret in (settings.kafka_sasl_password, settings.kafka_ssl_key_password)
        if secret is not None
    ]
    return [value for value in found if value]


def redact(text: str, settings: Settings) -> str:
    for secret in secrets_of(settings):
        text = text.replace(secret, "***")
    return text


def principal_of(settings: Settings) -> str:
    """Who vfstream says it is, as an operator would look it up (never a secret)."""
    mechanism = settings.kafka_sasl_mechanism
    if mechanism == "OAUTHBEARER":
        return f"the AWS identity of the MSK IAM token (region {settings.aws_region})"
    if mechanism is not None:
        return repr(settings.kafka_sasl_username)
    if settings.kafka_ssl_certfile is not None:
        return f"the subject of {settings.kafka_ssl_certfile}"
    return "ANONYMOUS"


def _bootstrap_server(settings: Settings) -> tuple[str, int]:
    first = settings.kafka_bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host.strip("[]"), int(port)


def denied(settings: Settings, resource: str, name: str, operation: str) -> AccessRefused:
    """The principal lacks ``operation`` on ``resource`` ``name``."""
    return AccessRefused(
        f"Kafka refused principal {principal_of(settings)}: no {operation} permission on "
        f"{resource} {name!r} (an ACL is missing; {GRANTS_HINT})"
    )


def explain_authorization(
    exc: BaseException, settings: Settings, operation: str = "access"
) -> AccessRefused | None:
    """An aiokafka authorization error as ``denied``; None for any other error."""
    names = [str(arg) for arg in getattr(exc, "args", ()) if arg]
    name = names[0] if names else "?"
    if isinstance(exc, TopicAuthorizationFailedError):
        name = name.strip("{}'\"")
        return denied(settings, "topic", name, operation)
    if isinstance(exc, GroupAuthorizationFailedError):
        return denied(settings, "group", name, "Read")
    if isinstance(exc, TransactionalIdAuthorizationFailed):
        return denied(settings, "transactional id", name, "Write")
    if isinstance(exc, ClusterAuthorizationFailedError):
        return denied(settings, "cluster", "kafka-cluster", "IdempotentWrite")
    return None


async def _tls_handshake(host: str, port: int, context: ssl.SSLContext) -> None:
    server_name = host if context.check_hostname else None
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=context, server_hostname=server_name),
        PROBE_TIMEOUT_SECONDS,
    )
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


def _any_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def diagnose(settings: Settings) -> VfStreamError | None:
    """Connect to the first bootstrap server step by step; the first step that fails, as an
    error, or None when a whole connection (TLS and SASL included) succeeds."""
    from aiokafka.conn import create_conn

    host, port = _bootstrap_server(settings)
    where = f"{host}:{port}"
    protocol = settings.kafka_security_protocol
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), PROBE_TIMEOUT_SECONDS
        )
        writer.close()
    except (OSError, TimeoutError) as exc:
        return DependencyUnavailable(f"Kafka at {where} does not answer: {exc or 'timed out'}")
    context = ssl_context(settings)
    if context is None:
        with contextlib.suppress(ssl.SSLError, OSError, TimeoutError):
            await _tls_handshake(host, port, _any_tls())
            return AccessRefused(
                f"the broker at {where} expects TLS, but VFSTREAM_KAFKA_SECURITY_PROTOCOL is "
                f"{protocol}: set it to SSL or SASL_SSL"
            )
    else:
        try:
            await _tls_handshake(host, port, context)
        except ssl.SSLCertVerificationError as exc:
            trusted = settings.kafka_ssl_cafile or "the system's CA certificates"
            return AccessRefused(
                f"the certificate of the broker at {where} is not trusted "
                f"({exc.verify_message}); vfstream trusts {trusted}: set "
                "VFSTREAM_KAFKA_SSL_CAFILE to the CA that signed the broker's certificate"
            )
        except ssl.SSLError as exc:
            if "WRONG_VERSION_NUMBER" in str(exc) or "record layer" in str(exc):
                return AccessRefused(
                    f"the broker at {where} does not speak TLS, but "
                    f"VFSTREAM_KAFKA_SECURITY_PROTOCOL is {protocol}: set it to PLAINTEXT or "
                    "SASL_PLAINTEXT"
                )
            return AccessRefused(redact(f"TLS with the broker at {where} failed: {exc}", settings))
        except (OSError, TimeoutError) as exc:
            return DependencyUnavailable(f"Kafka at {where}: TLS did not finish: {exc}")
    try:
        connection = await asyncio.wait_for(
            create_conn(host, port, **security_kwargs(settings)), PROBE_TIMEOUT_SECONDS
        )
    except SaslAuthenticationFailed as exc:
        return AccessRefused(
            redact(
                f"SASL authentication failed for principal {principal_of(settings)} with "
                f"{settings.kafka_sasl_mechanism} at {where}: {exc.args[0] if exc.args else exc}"
                "; check VFSTREAM_KAFKA_SASL_USERNAME and VFSTREAM_KAFKA_SASL_PASSWORD",
                settings,
            )
        )
    except UnsupportedSaslMechanismError as exc:
        return AccessRefused(redact(f"the broker at {where} refused SASL: {exc}", settings))
    except (KafkaError, OSError, TimeoutError) as exc:
        if protocol in ("PLAINTEXT", "SSL") and "closed" in str(exc):
            wanted = "SASL (VFSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL)"
            if protocol == "SSL" and settings.kafka_ssl_certfile is None:
                wanted += " or a client certificate (VFSTREAM_KAFKA_SSL_CERTFILE and _KEYFILE)"
            return AccessRefused(
                f"the broker at {where} closed the connection before any request "
                f"(VFSTREAM_KAFKA_SECURITY_PROTOCOL is {protocol}): it may require {wanted}"
            )
        return DependencyUnavailable(redact(f"Kafka at {where}: {exc}", settings))
    connection.close()
    return None


async def explain_start_failure(settings: Settings, exc: BaseException) -> VfStreamError:
    """Why a client could not start, as vfstream's error (``AccessRefused`` or
    ``DependencyUnavailable``); the message never holds a secret."""
    refused = explain_authorization(exc, settings)
    if refused is not None:
        return refused
    try:
        found = await diagnose(settings)
    except Exception as probe_failure:  # the probe is a help: never hide the first error
        found = DependencyUnavailable(
            redact(f"Kafka at {settings.kafka_bootstrap}: {exc} ({probe_failure})", settings)
        )
    if found is not None:
        return found
    return DependencyUnavailable(redact(f"Kafka at {settings.kafka_bootstrap}: {exc}", settings))


def explain(exc: BaseException, settings: Settings, operation: str = "access") -> Any:
    """``exc`` as vfstream's error when it is Kafka's refusal, else ``exc`` itself."""
    return explain_authorization(exc, settings, operation) or exc
