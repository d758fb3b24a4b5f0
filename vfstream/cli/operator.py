"""``vfstream runs``, ``dead-letters`` and ``status``: the operator's three questions on the
command line. Human tables by default, ``--json`` for scripts; the data comes from
``vfstream.ops.console``, so no worker has to run."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import orjson

from vfstream.cli import exit_codes
from vfstream.cli.render import number, printable, table
from vfstream.ops.console import read_dead_letters, read_runs, read_status
from vfstream.settings import Settings


def _emit(answer: Any, as_json: bool, human: Callable[[Any], str]) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(human(answer) + "\n")


def _when(text: str | None) -> str:
    return (text or "")[:19].replace("T", " ")


def runs_table(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return "no scoring runs yet"
    rows = [
        (
            run["campaignId"],
            run["key"],
            number(run["rowsIn"]),
            number(run["valid"]),
            number(run["invalid"]),
            f"{number(run['applied'])} / {number(run['expected'])}",
            _when(run["settledAt"]) if run["settled"] else "no",
            run["report"],
        )
        for run in runs
    ]
    header = ("campaign", "file", "rows in", "valid", "invalid", "applied", "settled", "Slack")
    return table(header, rows, right=(2, 3, 4, 5), widths={0: 30, 1: 100})


def run_runs(settings: Settings, campaign: str | None, as_json: bool) -> int:
    # Kafka away: StackUnavailable, which the command line reports with exit status 4.
    runs = asyncio.run(read_runs(settings, campaign))
    _emit({"runs": runs} if as_json else runs, as_json, runs_table)
    return exit_codes.OK


def dead_letters_table(letters: list[dict[str, Any]]) -> str:
    if not letters:
        return "no dead letters"
    rows = [
        (
            _when(letter["at"]),
            letter["kind"],
            letter["campaignId"],
            letter["where"],
            "; ".join(letter["reasons"]),
            letter["raw"],
        )
        for letter in letters
    ]
    header = ("when", "kind", "campaign", "where", "reasons", "raw")
    return table(header, rows, widths={2: 24, 3: 60, 4: 80, 5: 60})


def run_dead_letters(
    settings: Settings, campaign: str | None, kind: str | None, limit: int, as_json: bool
) -> int:
    if limit < 1:
        print("vfstream dead-letters: --limit must be at least 1", file=sys.stderr)
        return exit_codes.USAGE
    reading = read_dead_letters(settings, campaign=campaign, kind=kind, limit=limit)
    letters = asyncio.run(reading)
    _emit({"deadLetters": letters} if as_json else letters, as_json, dead_letters_table)
    return exit_codes.OK


def status_text(status: dict[str, Any]) -> str:
    def up(reachable: bool | None) -> str:
        return {True: "up", False: "DOWN", None: "not probed"}[reachable]

    stack = status["stack"]
    parts = [
        table(
            ("part", "address", "state", "connects with"),
            [
                (
                    "kafka",
                    stack["kafka"]["address"],
                    up(stack["kafka"]["reachable"]),
                    stack["kafka"]["security"],
                ),
                (
                    "aws",
                    stack["aws"]["endpoint"],
                    up(stack["aws"]["reachable"]),
                    f"credentials: {stack['aws']['credentials'] or 'none found'}",
                ),
            ],
        ),
        "",
        f"group {printable(status['group']['id'])}: {status['group']['state']}, "
        f"{len(status['workers'])} worker(s)",
    ]
    if status["workers"]:
        rows = [
            (w["worker"], w["clientId"], ", ".join(map(str, w["partitions"])) or "none")
            for w in status["workers"]
        ]
        parts.append(table(("worker", "client", "score partitions"), rows))
    parts += ["", f"partitions of {printable(status['topic'])}"]
    rows = [
        (p["partition"], p["owner"] or "-", *map(number, (p["committed"], p["end"], p["lag"])))
        for p in status["partitions"]
    ]
    parts.append(table(("partition", "owner", "committed", "end", "lag"), rows, right=(0, 2, 3, 4)))
    parts.append(f"total lag: {number(status['lag'])} message(s)")
    return "\n".join(parts)


def run_status(settings: Settings, as_json: bool) -> int:
    status = asyncio.run(read_status(settings))
    _emit(status, as_json, status_text)
    aws_down = status["stack"]["aws"]["reachable"] is False
    return exit_codes.INCOMPLETE if aws_down or not status["workers"] else exit_codes.OK
