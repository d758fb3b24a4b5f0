"""Worker processes for the demo, tests and benchmarks: start, wait ready, stop or kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from vfstream.settings import Settings


def run_cli(
    settings: Settings, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``vfstream <args>`` in a child process configured by ``settings``."""
    return subprocess.run(
        [sys.executable, "-m", "vfstream.cli.main", *args],
        env={**os.environ, **settings.to_env()},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class WorkerProcess:
    def __init__(self, settings: Settings, name: str, log_dir: Path) -> None:
        self.settings = settings
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.web_host}:{self.settings.web_port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.settings.to_env()}
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vfstream.cli.main", "worker", "--loglevel", "info"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def get_json(self, path: str, timeout: float = 5.0) -> tuple[int, Any]:
        # A worker with tokens is asked with its first one, as its peers ask it.
        tokens = self.settings.web_tokens
        headers = {"Authorization": f"Bearer {tokens[0]}"} if tokens else {}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(self.base_url + path, headers=headers) as resp,
        ):
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = await resp.text()
            return resp.status, body

    async def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"worker {self.name} exited; log: {self.log_path}")
            with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                status, _ = await self.get_json("/ready", timeout=2.0)
                if status == 200:
                    return
            await asyncio.sleep(0.3)
        raise TimeoutError(f"worker {self.name} not ready in {timeout:.0f}s; log: {self.log_path}")

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def rss_mb(self) -> float:
        """The worker's resident memory now, in MB (Linux ``/proc``)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def connections_to(self, port: int) -> int:
        """TCP connections the worker has open to ``port`` (its Kafka clients' to a broker,
        say), from Linux ``/proc``."""
        assert self.proc is not None
        sockets = set()
        for fd in Path(f"/proc/{self.proc.pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    sockets.add(target[8:-1])
        count = 0
        for table in ("tcp", "tcp6"):
            with contextlib.suppress(OSError):
                lines = Path(f"/proc/{self.proc.pid}/net/{table}").read_text().splitlines()
                for line in lines[1:]:
                    fields = line.split()
                    remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                    # state 01 is ESTABLISHED; field 9 the socket's inode
                    if remote_port == port and fields[3] == "01" and fields[9] in sockets:
                        count += 1
        return count

    def kill(self) -> None:
        """kill -9 the worker and everything it started: a crash, not a shutdown."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
