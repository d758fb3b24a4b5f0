"""The one place configuration is read: environment variables prefixed ``VFSTREAM_``.

Defaults point at the local stack started by ``vfstream dev up``.
"""

from __future__ import annotations

import socket
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vfstream.domain.limits import DEFAULT_LIMITS, Limits

# An HTTP API token shorter than this is refused at start (Settings.web_auth_tokens).
MIN_WEB_TOKEN_CHARS = 16

# A fan state is one changelog message; the broker's default message.max.bytes is 1 MiB.
MAX_STATE_BYTES = 900 * 1024


def _as_env(model: BaseSettings) -> dict[str, str]:
    env: dict[str, str] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if value is None:
            continue
        if isinstance(value, BaseSettings):
            env.update(_as_env(value))
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, bool):
            value = "true" if value else "false"
        env[f"VFSTREAM_{name.upper()}"] = str(value)
    return env


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]


class DevStackSettings(BaseSettings):
    """The local stack's own settings (``vfstream dev``, tests, benchmarks): where it keeps
    its state and jars, and which Kafka it runs. A deployment never reads these."""

    model_config = SettingsConfigDict(env_prefix="VFSTREAM_", extra="ignore", frozen=True)

    dev_state_dir: Path = Path(".state/dev")
    dev_cache_dir: Path = Path.home() / ".cache" / "vfstream"
    kafka_version: str = "4.1.1"
    kafka_controller_port: int = 9093
    kafka_heap: str = "512m"
    # A secured broker (vfstream dev up --secure): SASL_SSL with SCRAM-SHA-512, TLS
    # certificates made at first start, ACLs enforced; see vfstream.dev.secure.
    kafka_secure: bool = False
    # The secured broker's optional SSL listener that requires a client certificate (mTLS).
    kafka_mtls_port: int | None = None


class Settings(BaseSettings):
    # Frozen: read once at start and passed in; a changed copy is model_copy(update=...).
    # hide_input_in_errors: a refused setting's error must not print the other values read
    # with it (passwords, tokens, keys).
    model_config = SettingsConfigDict(
        env_prefix="VFSTREAM_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    # Connection security, named after Kafka's client properties (security.protocol,
    # sasl.mechanism, ssl.truststore...); every client vfstream makes takes them from
    # vfstream.kafka (README "Connecting to a production cluster").
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, or OAUTHBEARER (AWS MSK IAM tokens, signed with the
    # AWS credentials below; AWS_MSK_IAM is accepted as its other name).
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # PEM files: the CA that signed the brokers' certificates (else the system's CAs), and a
    # client certificate and key for mutual TLS (Strimzi's tls users, Aiven's access keys).
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_check_hostname: bool = True
    app_id: str = "vfstream"
    topic_partitions: int = Field(default=6, ge=1)
    topic_replication_factor: int = Field(default=1, ge=1)
    score_records_topic: str = "vf-score-records"
    dead_letter_topic: str = "vf-dead-letters"
    ingested_files_topic: str = "vf-ingested-files"
    partials_topic: str = "vf-campaign-partials"
    # Settled-run report intents, keyed by campaign, for the Slack reporter agent.
    reports_topic: str = "vf-slack-reports"
    # Compacted: one announcement per ingest transaction, refreshed while it is open, so a
    # dead ingest's transaction is fenced at once instead of stalling every worker.
    ingest_inflight_topic: str = "vf-ingest-inflight"
    # Records a score batch holds at most (one message of the score-record topic; README
    # "Score batches"); batches also close before 512 KiB.
    score_batch_records: int = Field(default=1_000, ge=1, le=10_000)
    # Kafka caps a transaction at transaction.max.timeout.ms (15 min by default);
    # one scoring file is one transaction, so a big file needs most of that.
    ingest_transaction_timeout_ms: int = 600_000

    # Worker
    data_dir: Path = Path(".state/worker")
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    # Comma-separated: every route but /health and /ready asks for one of these, as a Bearer
    # token or as the password of HTTP Basic (a browser prompts). Two at once let a token be
    # rotated. Unset: the API is open, and the worker says so at start.
    web_auth_tokens: SecretStr | None = None
    # Whether /metrics is served without a token (a Prometheus scraper inside the network).
    web_metrics_public: bool = False
    # The host other workers use to reach this one (table views are proxied to the owner).
    # Defaults to web_host, or the machine's hostname when binding all interfaces.
    web_advertised_host: str | None = None
    window_seconds: float = Field(default=60.0, gt=0)
    window_expires_seconds: float = Field(default=86_400.0, gt=0)
    listen_for_notifications: bool = True
    # Relays every worker runs (each a consumer group of its own); turn one off only where
    # its destination does not exist (tests, benchmarks).
    mirror_to_dynamodb: bool = True
    forward_to_entry_service: bool = True
    forward_to_kinesis: bool = True
    standby_replicas: int = Field(default=0, ge=0)
    # Events Faust buffers per stream; score-record events are batches of up to 512 KiB.
    stream_buffer_maxsize: int = Field(default=32, ge=1)
    # The verification ledger flushes a partition's states, partials and acks after this
    # many records or seconds, and checks a partition this long quiet for a missed tail.
    flush_every_records: int = Field(default=2_000, ge=1)
    flush_every_seconds: float = Field(default=0.05, gt=0)
    tail_check_idle_seconds: float = Field(default=5.0, ge=0)
    # Partials and run tallies a partition's book keeps in memory between flushes; past it
    # the oldest clean ones are dropped (read again from the table when needed), so a
    # worker's memory does not grow with every campaign its partitions ever saw.
    ledger_cached_tallies: int = Field(default=4_096, ge=16)
    # Memory of each RocksDB database (one per table partition a worker holds, standbys
    # included): its memtables (write buffers) and its block cache. Faust's defaults are
    # 3 x 64 MiB and a 2 GiB cache per database, so a worker's RSS grew with every state it
    # wrote until those filled: "bounded" only by luck. A memtable full is flushed to disk.
    rocksdb_write_buffer_mib: int = Field(default=4, ge=1)
    rocksdb_write_buffers: int = Field(default=2, ge=2)
    rocksdb_block_cache_mib: int = Field(default=8, ge=1)
    # How fast the group notices a dead worker (kill -9, lost pod) and rebalances.
    session_timeout_seconds: float = Field(default=15.0, gt=0)

    # AWS (moto server locally)
    aws_endpoint_url: str | None = "http://127.0.0.1:5000"
    aws_region: str = "us-east-1"
    # Unset: boto's default chain decides (environment, shared config and profile, web
    # identity / IRSA, container and instance metadata). The local stack sets test keys.
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    scoring_bucket: str = "vf-scoring"
    notification_queue: str = "vf-scoring-events"
    # The redrive policy `vfstream dev up` gives the queue: a message received this many
    # times goes to <queue>-dlq (a poison message; transient faults are retried in place and
    # do not count). Production queues need the same (README "Ingestion").
    notification_max_receive_count: int = Field(default=5, ge=1, le=1000)
    # S3 faults while a file is read (README "Ingestion"): a read broken off resumes at the
    # byte reached for this long; then the file's transaction is aborted and the file starts
    # again after a backoff, for s3_retry_seconds (unset: as long as the process runs).
    s3_resume_seconds: float = Field(default=20.0, ge=0)
    s3_retry_seconds: float | None = Field(default=None, gt=0)
    # How long a fanlist ingest retries DynamoDB (throttling, outage, unprocessed items)
    # before it ends incomplete; the SQS listener then keeps the message and tries again.
    fanlist_retry_seconds: float = Field(default=60.0, gt=0)
    demand_table: str = "vf-demand"
    scores_stream: str = "vf-scores"
    campaign_data_stream: str = "vf-campaign-data"

    # Third-party services
    slack_webhook_url: SecretStr | None = None
    slack_request_timeout_seconds: float = Field(default=10.0, gt=0)
    # A report still undelivered after this long (429s, 5xx, Slack down) is given up:
    # counted as failed and logged; the next report diffs against the last one posted.
    slack_give_up_seconds: float = Field(default=300.0, gt=0)
    # A scoring run not settled this long after its file was ingested gets a warning report.
    report_overdue_seconds: float = Field(default=900.0, gt=0)
    entry_service_url: str = "http://127.0.0.1:8081"
    campaign_service_url: str = "http://127.0.0.1:8082"

    # Local stack (vfstream dev)
    # The local stack's settings, read from the same VFSTREAM_* names (VFSTREAM_KAFKA_HEAP).
    dev: DevStackSettings = Field(default_factory=DevStackSettings)

    # Limits on hostile or careless input (README "Limits"): past a field, id or events
    # limit a row or record is dead-lettered; past the state limit the fan keeps its last
    # good state; past a file limit the whole file fails.
    limit_field_bytes: int = Field(default=DEFAULT_LIMITS.field_bytes, ge=16)
    limit_id_bytes: int = Field(default=DEFAULT_LIMITS.id_bytes, ge=8)
    limit_events_per_fan: int = Field(default=DEFAULT_LIMITS.events_per_fan, ge=1, le=1000)
    limit_state_bytes: int = Field(default=DEFAULT_LIMITS.state_bytes, ge=1024, le=MAX_STATE_BYTES)
    limit_file_bytes: int = Field(default=DEFAULT_LIMITS.file_bytes, ge=1)
    limit_file_rows: int = Field(default=DEFAULT_LIMITS.file_rows, ge=1)
    # A scoring time further in the future than this is refused (README "Limits").
    limit_future_skew_seconds: float = Field(default=DEFAULT_LIMITS.future_skew_seconds, ge=0)
    # A gzip scoring file past this many times its compressed size is refused (a bomb).
    limit_compression_ratio: float = Field(default=DEFAULT_LIMITS.compression_ratio, gt=1)

    # Kinesis bridge (SPEC 2.3): score records published to a Kinesis stream, copied to Kafka
    bridge_stream: str = "vf-score-feed"
    # Compacted; keyed <stream>/<shardId>, committed in the same transaction as the records.
    bridge_checkpoints_topic: str = "vf-bridge-checkpoints"
    # How long to wait before asking again once every shard is caught up.
    bridge_poll_seconds: float = Field(default=1.0, gt=0)
    # The shortest time between two reads of the shards (Kinesis: 5 reads a shard a second).
    bridge_pass_seconds: float = Field(default=0.2, ge=0)
    # GetRecords Limit per shard and call (Kinesis takes at most 10,000).
    bridge_batch_records: int = Field(default=1_000, ge=1, le=10_000)
    # How often to look for shards opened by a reshard (a drained shard also triggers a look).
    bridge_shard_refresh_seconds: float = Field(default=30.0, gt=0)

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _kafka_names_in_any_case(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().upper().replace("_", "-") if value.strip() else None
            # Kafka spells protocols with "_" and mechanisms with "-"; MSK's own name for
            # its IAM mechanism is AWS_MSK_IAM (an OAUTHBEARER token here).
            if value in ("SASL-SSL", "SASL-PLAINTEXT"):
                value = value.replace("-", "_")
            if value == "AWS-MSK-IAM":
                value = "OAUTHBEARER"
        return value

    @model_validator(mode="after")
    def _kafka_security_is_whole(self) -> Settings:
        """Refuse a security set-up that cannot connect, at start and naming the setting,
        rather than as a broker's hang-up later."""
        protocol, mechanism = self.kafka_security_protocol, self.kafka_sasl_mechanism
        sasl = protocol.startswith("SASL_")
        if sasl and mechanism is None:
            raise ValueError(
                f"VFSTREAM_KAFKA_SECURITY_PROTOCOL={protocol} needs VFSTREAM_KAFKA_SASL_MECHANISM"
            )
        if mechanism is not None and not sasl:
            raise ValueError(
                f"VFSTREAM_KAFKA_SASL_MECHANISM={mechanism} needs "
                "VFSTREAM_KAFKA_SECURITY_PROTOCOL SASL_SSL or SASL_PLAINTEXT"
            )
        if mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and (
            not self.kafka_sasl_username or self.kafka_sasl_password is None
        ):
            raise ValueError(
                f"SASL {mechanism} needs VFSTREAM_KAFKA_SASL_USERNAME and "
                "VFSTREAM_KAFKA_SASL_PASSWORD"
            )
        tls_files = {
            "VFSTREAM_KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
            "VFSTREAM_KAFKA_SSL_CERTFILE": self.kafka_ssl_certfile,
            "VFSTREAM_KAFKA_SSL_KEYFILE": self.kafka_ssl_keyfile,
        }
        if not protocol.endswith("SSL"):
            given = [name for name, value in tls_files.items() if value is not None]
            if given:
                raise ValueError(
                    f"{', '.join(given)} set, but VFSTREAM_KAFKA_SECURITY_PROTOCOL="
                    f"{protocol} does not use TLS (SSL or SASL_SSL)"
                )
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError(
                "a client certificate needs both VFSTREAM_KAFKA_SSL_CERTFILE "
                "and VFSTREAM_KAFKA_SSL_KEYFILE"
            )
        if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
            raise ValueError(
                "set both VFSTREAM_AWS_ACCESS_KEY_ID and "
                "VFSTREAM_AWS_SECRET_ACCESS_KEY, or neither (the default chain)"
            )
        return self

    @model_validator(mode="after")
    def _web_tokens_are_strong(self) -> Settings:
        """A guessable token guards nothing: refuse a short one or a placeholder at start
        (deploy/k8s ships ``change-me``), without showing it."""
        for token in self.web_tokens:
            if len(token) < MIN_WEB_TOKEN_CHARS or "change-me" in token:
                raise ValueError(
                    f"VFSTREAM_WEB_AUTH_TOKENS holds a token of {len(token)} characters or a "
                    f"placeholder; use {MIN_WEB_TOKEN_CHARS} characters or more, e.g. "
                    "`openssl rand -hex 32`"
                )
        return self

    @property
    def web_tokens(self) -> tuple[str, ...]:
        """The accepted HTTP tokens; empty when the API is open."""
        if self.web_auth_tokens is None:
            return ()
        raw = self.web_auth_tokens.get_secret_value()
        return tuple(token.strip() for token in raw.split(",") if token.strip())

    @field_validator("aws_endpoint_url", mode="before")
    @classmethod
    def _no_endpoint_when_empty(cls, value: object) -> object:
        # VFSTREAM_AWS_ENDPOINT_URL="" means AWS itself (no emulator), not an empty URL.
        return None if value == "" else value

    @property
    def limits(self) -> Limits:
        return Limits(
            field_bytes=self.limit_field_bytes,
            id_bytes=self.limit_id_bytes,
            events_per_fan=self.limit_events_per_fan,
            state_bytes=self.limit_state_bytes,
            file_bytes=self.limit_file_bytes,
            file_rows=self.limit_file_rows,
            future_skew_seconds=self.limit_future_skew_seconds,
            compression_ratio=self.limit_compression_ratio,
        )

    @property
    def advertised_web_url(self) -> str:
        host = self.web_advertised_host
        if not host:
            host = socket.gethostname() if self.web_host in ("0.0.0.0", "::") else self.web_host
        return f"http://{host}:{self.web_port}"

    @property
    def kafka_host(self) -> str:
        return self.kafka_bootstrap.split(",")[0].rsplit(":", 1)[0]

    @property
    def kafka_port(self) -> int:
        return int(self.kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])

    @property
    def aws_port(self) -> int:
        if not self.aws_endpoint_url:
            raise ValueError("no AWS endpoint configured")
        return int(self.aws_endpoint_url.rstrip("/").rsplit(":", 1)[1])

    def to_env(self) -> dict[str, str]:
        """These settings as ``VFSTREAM_*`` variables, to hand to a child process."""
        return _as_env(self)

    def namespaced(self, suffix: str) -> Settings:
        """A copy whose app id and topics carry ``suffix``: isolated runs on one broker."""
        return self.model_copy(
            update={
                "app_id": f"{self.app_id}-{suffix}",
                "score_records_topic": f"{self.score_records_topic}-{suffix}",
                "dead_letter_topic": f"{self.dead_letter_topic}-{suffix}",
                "ingested_files_topic": f"{self.ingested_files_topic}-{suffix}",
                "ingest_inflight_topic": f"{self.ingest_inflight_topic}-{suffix}",
                "partials_topic": f"{self.partials_topic}-{suffix}",
                "reports_topic": f"{self.reports_topic}-{suffix}",
                "bridge_checkpoints_topic": f"{self.bridge_checkpoints_topic}-{suffix}",
            }
        )

    def aws_client_kwargs(self) -> dict[str, str | None]:
        """What every AWS client is built with: keys only when they are set, so that
        otherwise boto's default chain finds the pod's role."""
        kwargs: dict[str, str | None] = {
            "endpoint_url": self.aws_endpoint_url,
            "region_name": self.aws_region,
        }
        if self.aws_access_key_id is not None and self.aws_secret_access_key is not None:
            kwargs["aws_access_key_id"] = self.aws_access_key_id
            kwargs["aws_secret_access_key"] = self.aws_secret_access_key.get_secret_value()
            if self.aws_session_token is not None:
                kwargs["aws_session_token"] = self.aws_session_token.get_secret_value()
        return kwargs


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
