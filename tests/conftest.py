"""Shared fixtures: one real local stack (Kafka + moto) per test session, on free ports."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from tests.support.settings import isolated_settings
from vfstream.dev.stack import private_stack_settings
from vfstream.dev.workers import WorkerProcess, run_cli
from vfstream.settings import Settings
from vfstream.topics import ensure_topics

# No per-example deadline: the suite shares a 2-core machine with a broker and workers, and
# an example that takes 250 ms there is slow, not wrong (a deadline flaked on one property).
# Speed goals live in bench/. A test that sets its own settings keeps them.
hypothesis_settings.register_profile("vfstream", deadline=None)
hypothesis_settings.load_profile("vfstream")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The local stack on ports no running demo uses; stopped at the end of the session."""
    state = tmp_path_factory.mktemp("stack")
    settings = private_stack_settings(state)
    up = run_cli(settings, "dev", "up")
    if up.returncode != 0:
        run_cli(settings, "dev", "down")
        raise RuntimeError(f"vfstream dev up failed:\n{up.stdout}\n{up.stderr}")
    try:
        yield settings
    finally:
        run_cli(settings, "dev", "down")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests leave files for a person to look at (screenshots): kept after the run,
    ``test-artifacts/`` in the checkout unless ``VFSTREAM_TEST_ARTIFACTS`` names another."""
    place = Path(
        os.environ.get("VFSTREAM_TEST_ARTIFACTS") or Path(__file__).parents[1] / "test-artifacts"
    )
    place.mkdir(parents=True, exist_ok=True)
    return place


@pytest.fixture
def isolated(stack: Settings, tmp_path: Path) -> Settings:
    """Settings with their own app id and topics, so tests never see each other's data."""
    settings = isolated_settings(stack, tmp_path / "worker")
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
