"""kinesalite: a Kinesis emulator that reshards like Kinesis, for the resharding tests.

moto 5.2.5 keeps routing writes to a shard after splitting it and never ends a closed
shard's iterator, so writes after a reshard cannot be followed on it. kinesalite (npm) routes
them to the children and ends a drained closed shard's iterator, as Kinesis does.
``make kinesalite`` installs it into the cache folder (``make test`` does); without it the tests
that need it fail, naming the cause.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vfstream.dev.stack import free_port
from vfstream.settings import Settings

VERSION = "3.3.3"

# Streams change state at once (the defaults keep them CREATING/UPDATING for 500 ms), and
# the server binds the loopback interface only (its own CLI binds all of them).
_LAUNCHER = """
const kinesalite = require(process.argv[1]);
const server = kinesalite({createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0});
server.listen(Number(process.argv[2]), "127.0.0.1");
"""


def module_dir(settings: Settings) -> Path:
    return settings.dev.dev_cache_dir / "kinesalite" / "node_modules" / "kinesalite"


def unavailable_reason(settings: Settings) -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (module_dir(settings) / "package.json").exists():
        return f"kinesalite is not installed in {module_dir(settings)} (run `make kinesalite`)"
    return None


@contextmanager
def running_kinesalite(settings: Settings, log_path: Path) -> Iterator[str]:
    """Start kinesalite on a free loopback port; yields its endpoint URL."""
    port = free_port()
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            ["node", "-e", _LAUNCHER, str(module_dir(settings)), str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ},
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"kinesalite exited; see {log_path}")
            with socket.socket() as sock:
                sock.settimeout(0.2)
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"kinesalite did not listen on {port}; see {log_path}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
