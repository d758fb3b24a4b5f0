"""``vfstream bridge`` and ``vfstream listen``: one part of the pipeline run alone, outside
a worker, until SIGINT or SIGTERM. The parts themselves (``vfstream.sources``) raise the
exceptions of ``vfstream.errors``; the statuses are decided here (``exit_codes``)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import orjson
from aiokafka.errors import ProducerFenced

from vfstream.cli import exit_codes
from vfstream.settings import Settings
from vfstream.sources.kinesis_bridge import BridgeError, BridgeSummary, KinesisBridge
from vfstream.sources.s3.notifications import listen_for_files
from vfstream.topics import ensure_topics


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


def run_bridge(settings: Settings, stream: str | None = None, *, once: bool = False) -> int:
    """``vfstream bridge``: copy until SIGINT/SIGTERM (or, with ``once``, what is there now)."""

    async def main() -> BridgeSummary:
        await ensure_topics(settings)
        bridge = KinesisBridge(settings, stream=stream)
        if once:
            return await bridge.drain()
        return await bridge.run(_stop_on_signals().is_set)

    try:
        summary = asyncio.run(main())
    except BridgeError as exc:
        print(f"vfstream bridge: {exc}", file=sys.stderr)
        return exit_codes.exit_status_of(exc)
    except ProducerFenced:
        print(
            f"vfstream bridge: another bridge took over stream {stream or settings.bridge_stream}",
            file=sys.stderr,
        )
        return exit_codes.FAILED
    sys.stdout.write(orjson.dumps(summary.as_dict()).decode() + "\n")
    return exit_codes.OK


def run_listener(settings: Settings) -> int:
    """``vfstream listen``: the notification listener alone (one Deployment replica on
    Kubernetes, beside workers that do not listen). Stops on SIGINT or SIGTERM."""

    async def main() -> None:
        stop = _stop_on_signals()
        listening = asyncio.create_task(listen_for_files(settings, stop.is_set))
        await stop.wait()
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening

    asyncio.run(main())
    return exit_codes.OK
