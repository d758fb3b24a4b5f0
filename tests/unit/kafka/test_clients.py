"""Every Kafka client is made in vfstream.kafka.clients, from the settings' security."""

from __future__ import annotations

import ast
import base64
import ssl
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import trustme
from pydantic import SecretStr, ValidationError

import vfstream
from vfstream import kafka
from vfstream.kafka.security import MskIamTokenProvider, ssl_context
from vfstream.settings import Settings

PACKAGE = Path(vfstream.__file__).parent
CONSTRUCTORS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AIOKafkaClient"}
FACTORY = PACKAGE / "kafka" / "clients.py"


def constructions(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    """Calls of an aiokafka client class in ``path`` (a subclass's ``super()`` is not one)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in CONSTRUCTORS:
                found.append(f"{path.relative_to(root)}:{node.lineno} {name}(")
    return found


def test_no_module_but_the_factory_constructs_a_kafka_client() -> None:
    outside = [
        found
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != FACTORY
        for found in constructions(path)
    ]

    assert outside == []
    assert constructions(FACTORY), "the walk found no construction at all: it cannot see any"


def test_the_walk_sees_a_construction_written_in_any_form(tmp_path: Path) -> None:
    module = tmp_path / "vfstream_like.py"
    module.write_text(
        "import aiokafka\nfrom aiokafka import AIOKafkaProducer\n"
        "a = AIOKafkaProducer(bootstrap_servers='x')\n"
        "b = aiokafka.AIOKafkaConsumer('t', bootstrap_servers='x')\n"
    )

    assert constructions(module, tmp_path) == [
        "vfstream_like.py:3 AIOKafkaProducer(",
        "vfstream_like.py:4 AIOKafkaConsumer(",
    ]


def secured(**changes: object) -> Settings:
    base = {
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "vfstream",
        "kafka_sasl_password": SecretStr("s3cret-pw"),
    }
    return Settings(**{**base, **changes})  # type: ignore[arg-type]


def test_plaintext_is_the_default_and_carries_no_tls_or_sasl() -> None:
    kwargs = kafka.connection_kwargs(Settings(kafka_bootstrap="b1:9092,b2:9092"))

    assert kwargs == {"bootstrap_servers": "b1:9092,b2:9092", "security_protocol": "PLAINTEXT"}
    assert kafka.faust_credentials(Settings()) is None


async def test_sasl_ssl_with_scram_gives_every_client_the_same_credentials_and_tls() -> None:
    settings = secured()

    kwargs = kafka.security_kwargs(settings)

    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "vfstream"
    assert kwargs["sasl_plain_password"] == "s3cret-pw"
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname is True
    assert context.verify_mode == ssl.CERT_REQUIRED
    producer = kafka.producer(settings)
    assert producer.client._security_protocol == "SASL_SSL"
    assert producer.client._sasl_plain_password == "s3cret-pw"


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_faust_gets_the_same_protocol_mechanism_and_context(mechanism: str) -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    settings = secured(kafka_sasl_mechanism=mechanism)

    faust_kwargs = dict(credentials_to_aiokafka_auth(kafka.faust_credentials(settings)))

    assert faust_kwargs == kafka.security_kwargs(settings)


def test_mutual_tls_loads_the_client_certificate_and_faust_uses_it(tmp_path: Path) -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    ca = trustme.CA()
    leaf = ca.issue_cert("vfstream-client")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    leaf.cert_chain_pems[0].write_to_path(tmp_path / "client.crt")
    leaf.private_key_pem.write_to_path(tmp_path / "client.key")
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=tmp_path / "ca.pem",
        kafka_ssl_certfile=tmp_path / "client.crt",
        kafka_ssl_keyfile=tmp_path / "client.key",
        kafka_ssl_check_hostname=False,
    )

    kwargs = kafka.security_kwargs(settings)

    assert kwargs["security_protocol"] == "SSL"
    assert "sasl_mechanism" not in kwargs
    assert kwargs["ssl_context"].check_hostname is False
    assert dict(credentials_to_aiokafka_auth(kafka.faust_credentials(settings))) == kwargs


def test_a_missing_ca_file_fails_at_once_naming_the_file(tmp_path: Path) -> None:
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "nope.pem")

    with pytest.raises(FileNotFoundError):
        ssl_context(settings)


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "VFSTREAM_KAFKA_SASL_MECHANISM"),
        ({"kafka_sasl_mechanism": "PLAIN"}, "SASL_SSL or SASL_PLAINTEXT"),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-256"},
            "VFSTREAM_KAFKA_SASL_PASSWORD",
        ),
        ({"kafka_ssl_cafile": "/ca.pem"}, "does not use TLS"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_certfile": "/c.pem"},
            "VFSTREAM_KAFKA_SSL_KEYFILE",
        ),
        ({"aws_access_key_id": "AKIA"}, "VFSTREAM_AWS_SECRET_ACCESS_KEY"),
    ],
)
def test_a_security_setup_that_cannot_connect_is_refused_naming_the_setting(
    changes: dict[str, object], names: str
) -> None:
    with pytest.raises(ValidationError, match=names):
        Settings(**changes)  # type: ignore[arg-type]


def test_kafkas_own_spellings_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VFSTREAM_KAFKA_SECURITY_PROTOCOL", "sasl_ssl")
    monkeypatch.setenv("VFSTREAM_KAFKA_SASL_MECHANISM", "AWS_MSK_IAM")

    settings = Settings()

    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_mechanism == "OAUTHBEARER"


def test_secrets_stay_out_of_the_settings_repr_and_faust_credentials_repr() -> None:
    settings = secured(kafka_ssl_key_password=SecretStr("key-pw-9"))

    shown = repr(settings) + str(settings) + repr(kafka.faust_credentials(settings))

    assert "s3cret-pw" not in shown
    assert "key-pw-9" not in shown


async def test_msk_iam_tokens_are_signed_with_the_default_chains_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDCHAINENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "chain-secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="OAUTHBEARER",
        aws_region="eu-west-1",
    )
    kwargs = kafka.security_kwargs(settings)
    provider = kwargs["sasl_oauth_token_provider"]
    assert isinstance(provider, MskIamTokenProvider)

    token = await provider.token()

    url = urlparse(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode())
    query = parse_qs(url.query)
    assert url.hostname == "kafka.eu-west-1.amazonaws.com"
    assert query["Action"] == ["kafka-cluster:Connect"]
    assert query["X-Amz-Credential"][0].startswith("AKIDCHAINENV/")
    assert await provider.token() == token, "a live token is reused, not signed again"
    assert provider._credentials.method == "env"


async def test_msk_iam_tokens_use_the_keys_of_the_settings_when_they_are_set() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="OAUTHBEARER",
        aws_access_key_id="AKIDSETTINGS",
        aws_secret_access_key=SecretStr("settings-secret"),
    )

    token = await MskIamTokenProvider(settings).token()

    url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    assert "AKIDSETTINGS%2F" in url
    assert "settings-secret" not in url
