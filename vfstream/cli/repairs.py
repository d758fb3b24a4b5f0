"""``vfstream replay`` and ``vfstream reconcile``: the operator's repairs, a JSON result on
stdout. The work is in ``vfstream.ops``, which raises the exceptions of ``vfstream.errors``;
the statuses are decided here (``exit_codes``)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson

from vfstream.cli import exit_codes
from vfstream.ops.reconcile import reconcile
from vfstream.ops.replay import ReplayError, rebuild, replay
from vfstream.settings import Settings


def _print_result(result: Any) -> None:
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


def run_replay(
    settings: Settings, to: str, topic: str | None = None, rebuild_state: bool = False
) -> int:
    try:
        if rebuild_state:
            result = asyncio.run(rebuild(settings))
        else:
            result = asyncio.run(replay(settings, to, topic))
    except ReplayError as exc:
        print(f"vfstream replay: {exc}", file=sys.stderr)
        return exit_codes.exit_status_of(exc)
    _print_result(result)
    return exit_codes.OK


def run_reconcile(settings: Settings, campaign: str | None = None, fix: bool = False) -> int:
    result = asyncio.run(reconcile(settings, campaign, fix))
    _print_result(result)
    # Differences a --fix has published are repaired through the tally: nothing is short.
    return exit_codes.OK if result["differences"] == 0 or fix else exit_codes.INCOMPLETE
