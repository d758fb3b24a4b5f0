"""The Dockerfile and docker-compose.yml agree with the code, since nothing here can run them.

Docker is not available where the tests run, so these checks read both files and hold them
against what they depend on: ``Settings`` fields, the ``vfstream`` argument parser, the
pinned versions, and each other's ports and host names.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from vfstream.cli.main import build_parser
from vfstream.settings import DevStackSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"

ENV_PREFIX = Settings.model_config["env_prefix"]
ENV_NAME = re.compile(rf"\b{re.escape(ENV_PREFIX)}[A-Z0-9_]+\b")


# ---- reading the files -------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert starts, "the Dockerfile has no FROM"
    return instructions[starts[-1] :]


def only(stage: list[tuple[str, str]], keyword: str) -> str:
    found = [args for kw, args in stage if kw == keyword]
    assert len(found) == 1, f"expected one {keyword} in the final stage, found {found}"
    return found[0]


def exec_form(args: str) -> list[str]:
    """The argv of a JSON (exec) form instruction; the shell form is refused."""
    assert args.startswith("["), f"use the exec (JSON) form, not {args!r}"
    argv = json.loads(args)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


def dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in stage:
        if keyword != "ENV":
            continue
        words = shlex.split(args)
        if "=" not in words[0]:  # the legacy `ENV NAME value` form
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            name, _, value = word.partition("=")
            env[name] = value
    return env


def healthcheck_command(stage: list[tuple[str, str]]) -> list[str]:
    args = only(stage, "HEALTHCHECK")
    _, sep, command = args.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {args!r}"
    return exec_form(command.strip())


def service_env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(item.partition("=")[::2] for item in raw)
    return {name: "" if value is None else str(value) for name, value in raw.items()}


def container_ports(service: dict[str, Any]) -> set[int]:
    """Container ports of the ``ports`` entries (short "host:container" or long syntax)."""
    ports: set[int] = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            target = str(entry).split("/")[0].rsplit(":", 1)[-1]
            assert "-" not in target, f"a container port range is not expected: {entry!r}"
            ports.add(int(target))
    return ports


def host_ports(service: dict[str, Any]) -> list[int]:
    published: list[int] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            text = str(entry["published"])
        else:
            parts = str(entry).split("/")[0].split(":")
            assert len(parts) >= 2, f"{entry!r} publishes no host port"
            text = parts[-2]
        low, _, high = text.partition("-")
        published.extend(range(int(low), int(high or low) + 1))
    return published


def image_tag(service: dict[str, Any]) -> str:
    image = service["image"]
    assert ":" in image.rsplit("/", 1)[-1], f"{image} is not pinned to a tag"
    return image.rsplit(":", 1)[1]


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings exactly as a container with this environment would read them."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


DOCKERFILE_TEXT = DOCKERFILE.read_text()
COMPOSE_TEXT = COMPOSE_FILE.read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
STAGE = final_stage(dockerfile_instructions(DOCKERFILE_TEXT))
IMAGE_ENV = dockerfile_env(STAGE)


def vfstream_services() -> dict[str, dict[str, Any]]:
    """Services that run the image this repository builds."""
    return {name: svc for name, svc in SERVICES.items() if "build" in svc}


def worker_env() -> dict[str, str]:
    """What a worker container sees: the image's ENV, overridden by compose."""
    return {**IMAGE_ENV, **service_env(SERVICES["worker"])}


def compose_commands() -> list[tuple[str, list[str]]]:
    commands = []
    for name, service in vfstream_services().items():
        command = service.get("command")
        if command is None:
            continue
        argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
        commands.append((name, argv))
    return commands


def parses(argv: list[str]) -> None:
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        code = exc.code
    else:
        return
    pytest.fail(f"`vfstream {' '.join(argv)}` is not a valid command (exit {code})")


# ---- settings ----------------------------------------------------------------------------


def test_every_vfstream_variable_in_the_deploy_files_is_a_settings_field() -> None:
    used = set(ENV_NAME.findall(DOCKERFILE_TEXT)) | set(ENV_NAME.findall(COMPOSE_TEXT))
    assert {f"{ENV_PREFIX}KAFKA_BOOTSTRAP", f"{ENV_PREFIX}DATA_DIR"} <= used
    fields = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    unknown = sorted(used - fields)
    assert not unknown, f"not Settings fields (silently ignored at runtime): {unknown}"


@pytest.mark.parametrize("service", ["setup", "worker"])
def test_each_vfstream_container_environment_is_accepted_by_settings(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**IMAGE_ENV, **service_env(SERVICES[service])}
    settings = settings_from(env, monkeypatch)
    assert settings.kafka_bootstrap == env[f"{ENV_PREFIX}KAFKA_BOOTSTRAP"]
    assert settings.aws_endpoint_url == env[f"{ENV_PREFIX}AWS_ENDPOINT_URL"]


def test_setup_provisions_the_same_broker_and_aws_endpoint_the_workers_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup = settings_from({**IMAGE_ENV, **service_env(SERVICES["setup"])}, monkeypatch)
    worker = settings_from(worker_env(), monkeypatch)
    for field in (
        "kafka_bootstrap",
        "aws_endpoint_url",
        "app_id",
        "topic_partitions",
        "score_records_topic",
        "scoring_bucket",
        "notification_queue",
    ):
        assert getattr(setup, field) == getattr(worker, field), field


# ---- commands ----------------------------------------------------------------------------


def test_the_image_entrypoint_is_the_vfstream_console_script() -> None:
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    entrypoint = exec_form(only(STAGE, "ENTRYPOINT"))
    assert entrypoint == ["vfstream"]
    assert scripts.get("vfstream") == "vfstream.cli.main:main"


def test_the_image_default_command_is_a_valid_vfstream_command() -> None:
    argv = exec_form(only(STAGE, "CMD"))
    assert argv == ["worker"]
    parses(argv)


@pytest.mark.parametrize(("service", "argv"), compose_commands(), ids=lambda v: str(v))
def test_every_compose_command_is_a_valid_vfstream_command(service: str, argv: list[str]) -> None:
    assert "entrypoint" not in SERVICES[service], f"{service} must run through `vfstream`"
    parses(argv)


def test_setup_and_workers_run_the_commands_they_are_for() -> None:
    commands = dict(compose_commands())
    assert commands.get("worker") == ["worker"]
    setup = build_parser().parse_args(commands["setup"])
    assert (setup.command, getattr(setup, "action", None)) == ("dev", "provision")


# ---- ports and addresses -----------------------------------------------------------------


def test_worker_container_port_matches_its_web_port_expose_and_healthcheck(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    web_port = settings_from(worker_env(), monkeypatch).web_port
    assert container_ports(SERVICES["worker"]) == {web_port}
    exposed = {int(p.split("/")[0]) for p in only(STAGE, "EXPOSE").split()}
    assert exposed == {web_port}
    health_urls = re.findall(r"https?://[^\s'\"]+", " ".join(healthcheck_command(STAGE)))
    assert len(health_urls) == 1, health_urls
    health = urlsplit(health_urls[0])
    assert (health.hostname, health.port, health.path) == ("127.0.0.1", web_port, "/health")


def test_image_web_port_default_matches_expose() -> None:
    exposed = {int(p.split("/")[0]) for p in only(STAGE, "EXPOSE").split()}
    port = int(IMAGE_ENV.get(f"{ENV_PREFIX}WEB_PORT", Settings.model_fields["web_port"].default))
    assert exposed == {port}


def test_workers_listen_on_all_interfaces_so_published_ports_reach_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert settings_from(worker_env(), monkeypatch).web_host == "0.0.0.0"


def test_each_worker_replica_gets_its_own_host_port() -> None:
    worker = SERVICES["worker"]
    published = host_ports(worker)
    assert len(published) == len(set(published))
    assert len(published) >= worker["deploy"]["replicas"]


def test_workers_bootstrap_from_the_listener_kafka_advertises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kafka_env = service_env(SERVICES["kafka"])
    advertised = {
        name: address.split("//", 1)[1]
        for name, _, address in (
            entry.partition(":") for entry in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
        )
    }
    worker = settings_from(worker_env(), monkeypatch)
    assert advertised["PLAINTEXT"] == worker.kafka_bootstrap
    assert worker.kafka_host == "kafka", "the broker must be reached by its service name"
    listeners = {
        name: address.rsplit(":", 1)[1]
        for name, _, address in (
            entry.partition(":") for entry in kafka_env["KAFKA_LISTENERS"].split(",")
        )
    }
    assert int(listeners["PLAINTEXT"]) == worker.kafka_port


def test_kafka_is_a_single_node_kraft_broker_and_controller() -> None:
    env = service_env(SERVICES["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    listeners = dict(
        (name, address.rsplit(":", 1)[1])
        for name, _, address in (
            entry.partition(":") for entry in env["KAFKA_LISTENERS"].split(",")
        )
    )
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert len(voters) == 1
    voter_id, _, voter_address = voters[0].partition("@")
    assert voter_id == env["KAFKA_NODE_ID"]
    assert voter_address.rsplit(":", 1)[1] == listeners[controller]
    assert (
        int(listeners[controller]) == DevStackSettings.model_fields["kafka_controller_port"].default
    )
    for name in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[name] == "1", name
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_every_service_using_the_aws_endpoint_sets_both_keys_or_neither(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = (f"{ENV_PREFIX}AWS_ACCESS_KEY_ID", f"{ENV_PREFIX}AWS_SECRET_ACCESS_KEY")
    for name, service in vfstream_services().items():
        env = {**IMAGE_ENV, **service_env(service)}
        given = [key for key in names if key in env]
        assert len(given) in (0, len(names)), f"{name}: only {given} (Settings refuses that)"
        settings = settings_from(env, monkeypatch)
        endpoint = urlsplit(settings.aws_endpoint_url or "").hostname
        if endpoint in SERVICES:
            # No default chain finds credentials in a container: the emulator needs the keys.
            assert given, f"{name} calls the AWS emulator without keys"
            # moto's test keys, never a real one committed.
            assert all(env[key] == "testing" for key in names), name
            assert settings.aws_client_kwargs()["aws_access_key_id"] == "testing"


def test_workers_talk_to_kafka_in_the_protocol_of_the_listener_they_bootstrap_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kafka_env = service_env(SERVICES["kafka"])
    protocols = dict(
        entry.split(":", 1)
        for entry in kafka_env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    for name in ("setup", "worker", "bridge"):
        settings = settings_from({**IMAGE_ENV, **service_env(SERVICES[name])}, monkeypatch)
        listener = next(
            entry.partition(":")[0]
            for entry in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
            if entry.split("//", 1)[1] == settings.kafka_bootstrap
        )
        assert settings.kafka_security_protocol == protocols[listener], name


def test_workers_reach_aws_at_the_port_the_aws_service_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = settings_from(worker_env(), monkeypatch)
    endpoint = urlsplit(worker.aws_endpoint_url or "")
    assert endpoint.hostname == "aws", "the AWS endpoint must be reached by its service name"
    assert "aws" in SERVICES
    assert worker.aws_port in container_ports(SERVICES["aws"])


# ---- versions ----------------------------------------------------------------------------


def test_kafka_image_is_the_version_the_local_stack_runs() -> None:
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert image_tag(SERVICES["kafka"]) == DevStackSettings().kafka_version


def test_moto_image_is_the_moto_version_pinned_in_dev_extras() -> None:
    dev = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]["dev"]
    pins = [m.group(1) for r in dev if (m := re.fullmatch(r"moto(?:\[[^]]*\])?==(\S+)", r))]
    assert len(pins) == 1, f"moto is not pinned with == in the dev extras: {dev}"
    assert SERVICES["aws"]["image"].startswith("motoserver/moto:")
    assert image_tag(SERVICES["aws"]) == pins[0]


def test_both_dockerfile_stages_are_python_311_slim() -> None:
    bases = [
        args.split()[0] for kw, args in dockerfile_instructions(DOCKERFILE_TEXT) if kw == "FROM"
    ]
    assert len(bases) >= 2, "expected a builder stage and a runtime stage"
    assert all(base == "python:3.11-slim" for base in bases), bases


# ---- running it --------------------------------------------------------------------------


def test_workers_run_at_least_three_replicas_with_standby_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = SERVICES["worker"]
    assert worker["deploy"]["replicas"] >= 3
    assert "container_name" not in worker, "a fixed container name forbids replicas"
    assert settings_from(worker_env(), monkeypatch).standby_replicas >= 1


def test_workers_wait_for_healthy_dependencies_and_a_finished_setup() -> None:
    depends = SERVICES["worker"]["depends_on"]
    assert depends["kafka"]["condition"] == "service_healthy"
    assert depends["aws"]["condition"] == "service_healthy"
    assert depends["setup"]["condition"] == "service_completed_successfully"
    for name in ("kafka", "aws"):
        assert "test" in SERVICES[name]["healthcheck"], f"{name} needs a healthcheck"


def test_each_worker_keeps_state_in_its_own_mount_at_the_data_dir(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data_dir = str(settings_from(worker_env(), monkeypatch).data_dir)
    assert data_dir == IMAGE_ENV[f"{ENV_PREFIX}DATA_DIR"]
    tmpfs = SERVICES["worker"].get("tmpfs") or []
    tmpfs_targets = {tmpfs} if isinstance(tmpfs, str) else {t.split(":")[0] for t in tmpfs}
    assert data_dir in tmpfs_targets, "replicas must not share one RocksDB directory"


def test_the_image_runs_as_a_non_root_user() -> None:
    user = only(STAGE, "USER").split(":")[0]
    assert user not in {"root", "0"}
    assert user == "vfstream"


def test_compose_declares_no_networks_of_its_own() -> None:
    assert "networks" not in COMPOSE
    assert not any("networks" in svc or "network_mode" in svc for svc in SERVICES.values())


def test_the_build_context_keeps_the_package_and_drops_local_state() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(
            fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in patterns
        )

    for needed in ("pyproject.toml", "README.md", "vfstream/__init__.py", "vfstream/cli/main.py"):
        assert not ignored(needed), f"{needed} is excluded from the build context"
    for dropped in (".venv/bin/python", ".git/HEAD", ".state/dev/kafka.log"):
        assert ignored(dropped), f"{dropped} is sent to the build context"


def test_an_empty_aws_endpoint_means_aws_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VFSTREAM_AWS_ENDPOINT_URL", "")
    assert Settings().aws_endpoint_url is None
    assert Settings().aws_client_kwargs()["endpoint_url"] is None
