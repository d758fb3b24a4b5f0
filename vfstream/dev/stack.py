"""The local stack: a single-node KRaft Kafka broker and a moto server, both on 127.0.0.1.

Each process is started in its own session with its pid in ``<state>/<name>.pid`` and its
output in ``<state>/<name>.log``; ``down`` stops only processes whose pid files ``up`` wrote.

The stack comes back whole or clean, never half. moto keeps S3 objects, DynamoDB items, SQS
messages and Kinesis records in memory only, and its recorder replays requests rather than
restoring state (new sequence numbers, receipt handles and timestamps), so nothing can
bring its data back after it stops. Kafka's log would then refer to files, items and shard
positions that are gone. So when moto has to start, ``up`` wipes Kafka's data and the local
worker state first and says so; when moto is still running, a restarted broker keeps its
data and the stack is whole.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pydantic import SecretStr

from vfstream.dev.secure import ADMIN_USER, CLIENT_USER, SCRAM_MECHANISM, SecureMaterial
from vfstream.errors import DependencyUnavailable
from vfstream.settings import DevStackSettings, Settings

log = logging.getLogger(__name__)

STACK_FILES = resources.files("vfstream.dev")


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in URL-safe base64. Like Kafka's own ``random-uuid``
    it never starts with "-": the storage tool would read such an id as an option (1 in 64
    fresh stacks failed to format before)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class StackError(DependencyUnavailable):
    """The local stack could not be brought to the wanted state."""


@dataclass
class ComponentStatus:
    name: str
    running: bool
    pid: int | None
    address: str
    log: str


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); /proc tells it apart.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def free_port() -> int:
    """A port nothing listens on now: private stacks and workers never collide."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# moto takes any keys; the local stack sets these so that nothing reaches for a real chain.
LOCAL_AWS_ACCESS_KEY_ID = "testing"
LOCAL_AWS_SECRET_ACCESS_KEY = "testing"

# The secured stack's own defaults, so it runs beside the plain one (vfstream dev --secure).
# What the secured broker's SASL_SSL listener offers.
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")

SECURE_STACK_DEFAULTS = {
    "dev_state_dir": Path(".state/dev-secure"),
    "kafka_controller_port": 9095,
    "kafka_bootstrap": "127.0.0.1:9094",
    "aws_endpoint_url": "http://127.0.0.1:5001",
}


def as_principal(settings: Settings, user: str) -> Settings:
    """``settings`` connecting to the secured local stack as ``user`` (SCRAM over TLS)."""
    material = SecureMaterial.ensure(settings.dev.dev_state_dir, settings.kafka_host)
    return settings.model_copy(
        update={
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": SCRAM_MECHANISM,
            "kafka_sasl_username": user,
            "kafka_sasl_password": SecretStr(material.password(user)),
            "kafka_ssl_cafile": material.ca_file.resolve(),
        }
    )


def local_stack_settings(settings: Settings) -> Settings:
    """What the local stack's clients connect with: its test AWS keys unless keys are set,
    and on the secured stack the ``vfstream`` principal unless Kafka security is set."""
    update: dict[str, object] = {}
    if settings.aws_access_key_id is None:
        update["aws_access_key_id"] = LOCAL_AWS_ACCESS_KEY_ID
        update["aws_secret_access_key"] = SecretStr(LOCAL_AWS_SECRET_ACCESS_KEY)
    if settings.dev.kafka_secure and settings.kafka_security_protocol == "PLAINTEXT":
        settings = as_principal(settings, CLIENT_USER)
    return settings.model_copy(update=update)


def secure_stack_settings(settings: Settings) -> Settings:
    """``settings`` for the secured local stack: what was left at its default takes the
    secured stack's own (another state folder and ports), so both stacks run side by side."""
    dev_update: dict[str, object] = {"kafka_secure": True}
    update: dict[str, object] = {}
    for name, value in SECURE_STACK_DEFAULTS.items():
        if name in DevStackSettings.model_fields:
            if getattr(settings.dev, name) == DevStackSettings.model_fields[name].default:
                dev_update[name] = value
        elif getattr(settings, name) == Settings.model_fields[name].default:
            update[name] = value
    return settings.model_copy(update={**update, "dev": settings.dev.model_copy(update=dev_update)})


# What a client of the local stack needs to be told: where it is and how to connect.
CLIENT_ENV_FIELDS = (
    "kafka_bootstrap",
    "kafka_security_protocol",
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_ssl_cafile",
    "aws_endpoint_url",
    "aws_access_key_id",
    "aws_secret_access_key",
)
DEV_ENV_FIELDS = ("dev_state_dir", "kafka_controller_port", "kafka_secure")


def stack_env(settings: Settings) -> str:
    """Shell exports that point other commands at this local stack (``vfstream dev env``).
    They hold the local stack's own test password: the stack is on loopback, made for it."""
    env = settings.to_env()
    names = [f"VFSTREAM_{name.upper()}" for name in (*CLIENT_ENV_FIELDS, *DEV_ENV_FIELDS)]
    return "\n".join(f"export {name}={shlex.quote(env[name])}" for name in names if name in env)


def private_stack_settings(
    state_dir: Path, *, secure: bool = False, **overrides: object
) -> Settings:
    """Settings for a local stack of its own (tests, benchmarks) on free ports, with the
    stack's test keys (and, ``secure``, the ``vfstream`` principal of a secured broker);
    overrides of the local stack's own fields (``kafka_heap``) go to its
    ``DevStackSettings``."""
    dev_fields = set(DevStackSettings.model_fields)
    dev = DevStackSettings(
        kafka_controller_port=free_port(),
        dev_state_dir=state_dir,
        kafka_secure=secure,
        **{k: v for k, v in overrides.items() if k in dev_fields},  # type: ignore[arg-type]
    )
    settings = Settings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        aws_endpoint_url=f"http://127.0.0.1:{free_port()}",
        listen_for_notifications=False,
        dev=dev,
        **{k: v for k, v in overrides.items() if k not in dev_fields},  # type: ignore[arg-type]
    )
    return local_stack_settings(settings)


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class ManagedProcess:
    """A background server process tracked by a pid file."""

    def __init__(self, name: str, state_dir: Path, host: str, port: int) -> None:
        self.name = name
        self.state_dir = state_dir
        self.host = host
        self.port = port
        self.pid_file = state_dir / f"{name}.pid"
        self.log_file = state_dir / f"{name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def status(self) -> ComponentStatus:
        pid = self.pid()
        return ComponentStatus(
            self.name, pid is not None, pid, f"{self.host}:{self.port}", str(self.log_file)
        )

    def spawn(self, argv: list[str], env: dict[str, str] | None = None) -> int:
        if _port_open(self.host, self.port):
            raise StackError(
                f"{self.name}: port {self.host}:{self.port} is already taken by another "
                "process; choose another port (see README, VFSTREAM_* settings)"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def stop(self, timeout: float = 20.0) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.1)
        if _pid_alive(pid):
            log.warning("%s did not stop within %.0fs; killing it", self.name, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def tail_log(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def kafka_libs_dir(settings: Settings) -> Path:
    return settings.dev.dev_cache_dir / f"kafka-{settings.dev.kafka_version}" / "libs"


def fetch_kafka(settings: Settings) -> Path:
    """Resolve the broker jars from Maven Central once, into the cache folder."""
    libs = kafka_libs_dir(settings)
    marker = libs.parent / ".complete"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("Maven (mvn) is needed to resolve the Kafka broker jars")
    libs.mkdir(parents=True, exist_ok=True)
    with resources.as_file(STACK_FILES / "pom.xml") as pom:
        print(
            f"resolving Apache Kafka {settings.dev.kafka_version} jars into {libs} ...", flush=True
        )
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-Dkafka.version={settings.dev.kafka_version}",
                f"-DoutputDirectory={libs}",
            ],
            capture_output=True,
            text=True,
        )
    if result.returncode != 0:
        raise StackError(f"mvn could not resolve Kafka:\n{result.stdout}\n{result.stderr}")
    marker.write_text(settings.dev.kafka_version)
    return libs


class KafkaBroker(ManagedProcess):
    def __init__(self, settings: Settings) -> None:
        super().__init__(
            "kafka", settings.dev.dev_state_dir, settings.kafka_host, settings.kafka_port
        )
        self.settings = settings
        self.data_dir = settings.dev.dev_state_dir / "kafka-data"
        self.config_file = settings.dev.dev_state_dir / "kafka-server.properties"

    @property
    def secure(self) -> bool:
        return self.settings.dev.kafka_secure

    def material(self) -> SecureMaterial:
        return SecureMaterial.ensure(self.state_dir, self.host)

    def _listeners(self) -> dict[str, str]:
        """Listener name -> its props. The plain stack has one PLAINTEXT listener; the secured
        one serves clients SASL_SSL (SCRAM-SHA-512), optionally SSL with client certificates
        (mTLS) on a port of its own, and the controller SASL_PLAINTEXT (PLAIN, the super user
        only: SCRAM users live in the metadata the controller serves, so it cannot use them)."""
        host, port = self.host, self.port
        ctl = self.settings.dev.kafka_controller_port
        if not self.secure:
            return {
                "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{ctl}",
                "advertised.listeners": f"PLAINTEXT://{host}:{port}",
                "inter.broker.listener.name": "PLAINTEXT",
                "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            }
        material = self.material()
        admin = material.password(ADMIN_USER)
        client = material.password(CLIENT_USER)
        listeners = [f"SASL_SSL://{host}:{port}"]
        protocols = ["SASL_SSL:SASL_SSL", "CONTROLLER:SASL_PLAINTEXT"]
        mtls_port = self.settings.dev.kafka_mtls_port
        if mtls_port:
            listeners.append(f"MTLS://{host}:{mtls_port}")
            protocols.append("MTLS:SSL")
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
        plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
        return {
            "listeners": ",".join([*listeners, f"CONTROLLER://{host}:{ctl}"]),
            "advertised.listeners": ",".join(listeners),
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": ",".join(protocols),
            # SCRAM-SHA-512 is the stack's; SCRAM-SHA-256 and PLAIN (users in the JAAS
            # line, as Confluent Cloud's API keys) let the suite try every mechanism.
            "sasl.enabled.mechanisms": ",".join(SASL_MECHANISMS),
            "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                f'{scram} required username="{ADMIN_USER}" password="{admin}";'
            ),
            "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": f"{scram} required;",
            "listener.name.sasl_ssl.plain.sasl.jaas.config": (
                f'{plain} required user_{ADMIN_USER}="{admin}" user_{CLIENT_USER}="{client}";'
            ),
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": (
                f'{plain} required username="{ADMIN_USER}" password="{admin}" '
                f'user_{ADMIN_USER}="{admin}";'
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(material.broker_keystore.resolve()),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(material.ca_file.resolve()),
            "listener.name.mtls.ssl.client.auth": "required",
            # A client certificate's CN is its principal: CN=vfstream is User:vfstream.
            "ssl.principal.mapping.rules": "RULE:^CN=([^,]+).*$/$1/,DEFAULT",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": f"User:{ADMIN_USER}",
        }

    def _write_config(self) -> None:
        host = self.host
        ctl = self.settings.dev.kafka_controller_port
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{host}:{ctl}",
            **self._listeners(),
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(self.data_dir.resolve()),
            "num.partitions": str(self.settings.topic_partitions),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Auto-created topics get the wrong partition count for co-partitioned tables.
            "auto.create.topics.enable": "false",
            "log.segment.bytes": str(256 * 1024 * 1024),
        }
        self.config_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        self.config_file.chmod(0o600)  # the secured stack's holds the super user's password

    def _java(self, main: str, *args: str, heap: str | None = None) -> list[str]:
        libs = kafka_libs_dir(self.settings)
        with resources.as_file(STACK_FILES / "log4j2.properties") as log_config:
            argv = ["java"]
            if heap:
                argv += [f"-Xmx{heap}", f"-Xms{heap}", "-XX:+UseSerialGC"]
            argv += [
                "-XX:TieredStopAtLevel=1",
                "-Xshare:auto",
                f"-Dlog4j2.configurationFile={log_config}",
                "-cp",
                f"{libs}/*",
                main,
                *args,
            ]
        return argv

    def _scram_users(self) -> list[str]:
        """The SCRAM users, written into the metadata log when the storage is formatted."""
        if not self.secure:
            return []
        users: list[str] = []
        for user, password in self.material().passwords().items():
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                users += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
        return users

    def has_data(self) -> bool:
        return (self.data_dir / "meta.properties").exists()

    def wipe(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def start(self) -> int:
        fetch_kafka(self.settings)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        if not (self.data_dir / "meta.properties").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            cluster_id = new_cluster_id()
            result = subprocess.run(
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(self.config_file),
                    *self._scram_users(),
                ),
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise StackError(f"formatting Kafka storage failed:\n{result.stderr[-2000:]}")
        return self.spawn(
            self._java("kafka.Kafka", str(self.config_file), heap=self.settings.dev.kafka_heap)
        )

    @property
    def admin_settings(self) -> Settings:
        """How the stack itself connects: as the super user on the secured broker."""
        return as_principal(self.settings, ADMIN_USER) if self.secure else self.settings

    async def grant_client_acls(self) -> int:
        """Give the ``vfstream`` principal the ACLs vfstream needs, and no more."""
        from vfstream.kafka.acls import grant, required_acls

        if not self.secure:
            return 0
        return await grant(self.admin_settings, f"User:{CLIENT_USER}", required_acls(self.settings))

    async def wait_ready(self, timeout: float = 90.0) -> None:
        from vfstream import kafka

        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise StackError(f"the Kafka broker exited:\n{self.tail_log()}")
            if _port_open(self.host, self.port):
                admin = kafka.admin(self.admin_settings, request_timeout_ms=5000)
                try:
                    await admin.start()
                    cluster = await admin.describe_cluster()
                    if cluster.get("brokers"):
                        return
                except Exception as exc:
                    last_error = exc
                finally:
                    with contextlib.suppress(Exception):
                        await admin.close()
            await asyncio.sleep(0.3)
        raise StackError(f"the Kafka broker did not answer in {timeout:.0f}s: {last_error}")


class MotoServer(ManagedProcess):
    def __init__(self, settings: Settings) -> None:
        host = (settings.aws_endpoint_url or "").split("//", 1)[-1].rsplit(":", 1)[0]
        super().__init__("moto", settings.dev.dev_state_dir, host or "127.0.0.1", settings.aws_port)

    def start(self) -> int:
        return self.spawn(
            [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            env={"MOTO_PORT": str(self.port)},
        )

    async def wait_ready(self, timeout: float = 30.0) -> None:
        import aiohttp

        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.pid() is None:
                    raise StackError(f"the moto server exited:\n{self.tail_log()}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"http://{self.host}:{self.port}/moto-api/") as resp:
                        if resp.status < 500:
                            return
                await asyncio.sleep(0.2)
        raise StackError(f"the moto server did not answer in {timeout:.0f}s")


class LocalStack:
    def __init__(self, settings: Settings) -> None:
        # The stack's clients: its test keys, the vfstream principal on a secured broker.
        settings = local_stack_settings(settings)
        self.settings = settings
        self.kafka = KafkaBroker(settings)
        self.moto = MotoServer(settings)
        self.wiped: list[str] = []

    def components(self) -> list[ManagedProcess]:
        return [self.kafka, self.moto]

    async def provision(self) -> None:
        from vfstream.dev.provision import provision_aws
        from vfstream.topics import ensure_topics

        await self.kafka.grant_client_acls()
        await ensure_topics(self.settings)
        await provision_aws(self.settings)

    def wipe(self) -> list[str]:
        """Stop both servers and remove what they and local workers kept; what was wiped."""
        self.down()
        wiped = []
        if self.kafka.has_data():
            self.kafka.wipe()
            wiped.append(f"Kafka data ({self.kafka.data_dir})")
        if self.settings.data_dir.exists():
            shutil.rmtree(self.settings.data_dir, ignore_errors=True)
            wiped.append(f"local worker state ({self.settings.data_dir})")
        return wiped

    def _keep_whole(self) -> list[str]:
        """Before ``up``: a moto that must start comes back empty, so Kafka must too."""
        if self.moto.pid() is not None or not self.kafka.has_data():
            return []
        wiped = self.wipe()
        log.warning(
            "moto was not running and keeps its data only in memory: wiped %s so Kafka "
            "does not refer to S3 objects, DynamoDB items and Kinesis records that are gone",
            " and ".join(wiped),
        )
        return wiped

    async def up(self) -> list[ComponentStatus]:
        started = time.monotonic()
        self.wiped = self._keep_whole()
        for component in (self.kafka, self.moto):
            if component.pid() is None:
                component.start()
        await asyncio.gather(self.kafka.wait_ready(), self.moto.wait_ready())
        await self.provision()
        log.info("local stack ready in %.1fs", time.monotonic() - started)
        return self.status()

    def down(self) -> list[str]:
        return [c.name for c in self.components() if c.stop()]

    def status(self) -> list[ComponentStatus]:
        return [c.status() for c in self.components()]


def status_json(statuses: list[ComponentStatus]) -> str:
    return json.dumps([s.__dict__ for s in statuses], indent=2)
