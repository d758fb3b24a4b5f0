"""Shared fixtures: one real local stack (Kafka + moto) per test session, on free ports."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from vfstream.devstack.workers import WorkerProcess
from vfstream.settings import Settings
from vfstream.topics import ensure_topics


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The local stack on ports no running demo uses; stopped at the end of the session."""
    state = tmp_path_factory.mktemp("stack")
    settings = Settings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        aws_endpoint_url=f"http://127.0.0.1:{free_port()}",
        dev_state_dir=state,
        listen_for_notifications=False,
    )
    env = {**os.environ, **settings.to_env()}
    command = [sys.executable, "-m", "vfstream.cli.main", "dev"]
    up = subprocess.run([*command, "up"], env=env, capture_output=True, text=True)
    if up.returncode != 0:
        subprocess.run([*command, "down"], env=env)
        raise RuntimeError(f"vfstream dev up failed:\n{up.stdout}\n{up.stderr}")
    try:
        yield settings
    finally:
        subprocess.run([*command, "down"], env=env, capture_output=True)


@pytest.fixture
def isolated(stack: Settings, tmp_path: Path) -> Settings:
    """Settings with their own app id and topics, so tests never see each other's data."""
    settings = stack.namespaced(uuid.uuid4().hex[:8]).model_copy(
        update={"data_dir": tmp_path / "worker", "web_port": free_port()}
    )
    asyncio.run(ensure_topics(settings))
    return settings


@pytest.fixture
async def worker(isolated: Settings, tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    proc = WorkerProcess(isolated, "worker-1", tmp_path / "logs")
    proc.start()
    try:
        await proc.wait_ready()
        yield proc
    finally:
        proc.stop()
