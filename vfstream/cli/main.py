"""The ``vfstream`` command line. Exit statuses: ``vfstream.cli.exit_codes``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from aiokafka.errors import KafkaError
from pydantic import ValidationError

from vfstream.cli import exit_codes
from vfstream.errors import DependencyUnavailable, VfStreamError
from vfstream.kafka.access import explain, redact
from vfstream.settings import Settings, get_settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _dev(args: argparse.Namespace, settings: Settings) -> int:
    from vfstream.dev.stack import (
        LocalStack,
        StackError,
        fetch_kafka,
        secure_stack_settings,
        stack_env,
        status_json,
    )

    if args.secure or settings.dev.kafka_secure:
        settings = secure_stack_settings(settings)
    stack = LocalStack(settings)
    try:
        if args.action == "env":
            print(stack_env(stack.settings))
        elif args.action == "fetch-kafka":
            print(fetch_kafka(settings))
        elif args.action == "up":
            print(status_json(asyncio.run(stack.up())))
        elif args.action == "provision":
            asyncio.run(stack.provision())
            print(json.dumps({"provisioned": True}))
        elif args.action == "down":
            stopped = stack.down()
            print(json.dumps({"stopped": stopped}))
        elif args.action == "reset":
            wiped = stack.wipe()
            statuses = asyncio.run(stack.up())
            print(json.dumps({"wiped": wiped, "components": [s.__dict__ for s in statuses]}))
        else:
            statuses = stack.status()
            print(status_json(statuses))
            return exit_codes.OK if all(s.running for s in statuses) else exit_codes.INCOMPLETE
    except StackError as exc:
        print(f"vfstream dev {args.action}: {exc}", file=sys.stderr)
        return exit_codes.exit_status_of(exc)
    if args.action == "up" and stack.wiped:
        print(
            f"vfstream dev up: moto had stopped, and it keeps S3, DynamoDB, SQS and Kinesis "
            f"data only in memory; wiped {' and '.join(stack.wiped)} so the stack starts "
            "clean instead of half-restored",
            file=sys.stderr,
        )
    return exit_codes.OK


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from vfstream.cli.ingest import run_ingest

    return run_ingest(settings, args.url, force=args.force, progress=not args.no_progress)


def _fanlist(args: argparse.Namespace, settings: Settings) -> int:
    from vfstream.cli.ingest import run_fanlist

    return run_fanlist(settings, args.url)


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from vfstream.stream.assembly import run_worker

    return run_worker(settings, loglevel=args.loglevel)


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from vfstream.cli.repairs import run_replay

    if not args.rebuild and not args.to:
        print("vfstream replay: --to is required (or --rebuild)", file=sys.stderr)
        return exit_codes.USAGE
    return run_replay(settings, args.to or "earliest", topic=args.topic, rebuild_state=args.rebuild)


def _reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from vfstream.cli.repairs import run_reconcile

    return run_reconcile(settings, campaign=args.campaign, fix=args.fix)


def _listen(args: argparse.Namespace, settings: Settings) -> int:
    from vfstream.cli.pipeline import run_listener

    return run_listener(settings)


def _bridge(args: argparse.Namespace, settings: Settings) -> int:
    from vfstream.cli.pipeline import run_bridge

    return run_bridge(settings, args.stream, once=args.once)


def _runs(args: argparse.Namespace, settings: Settings) -> int:
    from vfstream.cli.operator import run_runs

    return run_runs(settings, args.campaign, args.json)


def _dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    from vfstream.cli.operator import run_dead_letters

    return run_dead_letters(settings, args.campaign, args.kind, args.limit, args.json)


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from vfstream.cli.operator import run_status

    return run_status(settings, args.json)


def _generate(args: argparse.Namespace, settings: Settings) -> int:
    from vfstream.dev.generator import main as generator_main

    return generator_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vfstream",
        description="Verified Fan scoring on Kafka. Exit status: 0 done, 1 input refused, "
        "2 wrong request, 3 done but incomplete, 4 a service unreachable (see README), "
        "128+N stopped by signal N.",
    )
    # --verbose is taken before or after the command; SUPPRESS keeps a subcommand's unset
    # default from overwriting the value the main parser read.
    verbosity = argparse.ArgumentParser(add_help=False)
    verbosity.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the libraries' logs too (aiokafka, Faust, botocore)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[verbosity], **kwargs)

    _pipeline_commands(command)
    _operator_commands(command)
    # The generator has its own options: everything after `generate` goes to it, --help too.
    generate = command("generate", help="write a realistic scoring file", add_help=False)
    generate.add_argument("rest", nargs=argparse.REMAINDER)
    generate.set_defaults(func=_generate)
    return parser


Command = Callable[..., argparse.ArgumentParser]


def _pipeline_commands(command: Command) -> None:
    """The commands that run the pipeline's parts."""
    worker = command("worker", help="run a Faust worker (all agents, web server)")
    worker.add_argument("--loglevel", default="info")
    worker.set_defaults(func=_worker)

    ingest = command("ingest", help="ingest one scoring file from S3")
    ingest.add_argument("url", help="s3://<bucket>/<key>")
    ingest.add_argument("--force", action="store_true", help="ingest even if done before")
    ingest.add_argument("--no-progress", action="store_true", help="no progress bar")
    ingest.set_defaults(func=_ingest)

    fanlist = command(
        "fanlist",
        help="store one fanlist file from S3 in DynamoDB and the campaign-data stream",
        description="Exit status: 0 stored, 1 file refused, 2 bad URL, "
        "3 some items not stored or not streamed, 4 a service unreachable.",
    )
    fanlist.add_argument("url", help="s3://<bucket>/fanlist/scored/<campaignId>/<timestamp>.csv")
    fanlist.set_defaults(func=_fanlist)

    listen = command(
        "listen",
        help="ingest the files the S3 notification queue announces (the worker's listener alone)",
    )
    listen.set_defaults(func=_listen)

    bridge = command(
        "bridge", help="copy score records from a Kinesis stream to the score-record topic"
    )
    bridge.add_argument("--stream", default=None, help="the stream (default: bridge_stream)")
    bridge.add_argument(
        "--once", action="store_true", help="copy what the stream holds now, print a summary, exit"
    )
    bridge.set_defaults(func=_bridge)


def _operator_commands(command: Command) -> None:
    """The operator's commands: questions, repairs, the local stack."""
    runs = command("runs", help="scoring runs: did my file go through? (newest first)")
    runs.add_argument("--campaign", default=None)
    runs.add_argument("--json", action="store_true", help="JSON for scripts")
    runs.set_defaults(func=_runs)

    letters = command("dead-letters", help="refused rows, files and records, newest first")
    letters.add_argument("--campaign", default=None)
    letters.add_argument("--kind", default=None, help="scoring-row, scoring-file, ...")
    letters.add_argument("--limit", type=int, default=20, help="per campaign and kind")
    letters.add_argument("--json", action="store_true", help="JSON for scripts")
    letters.set_defaults(func=_dead_letters)

    status = command(
        "status",
        help="the stack, the workers, their partitions and the lag",
        description="Exit status: 0 workers running, "
        "3 no worker in the group or the AWS endpoint down, 4 Kafka unreachable.",
    )
    status.add_argument("--json", action="store_true", help="JSON for scripts")
    status.set_defaults(func=_status)

    replay = command("replay", help="move the worker group's offsets (workers stopped)")
    replay.add_argument("--to", default=None, help="earliest | <ISO datetime> | <offset>")
    replay.add_argument("--topic", default=None, help="source topic (default: score records)")
    replay.add_argument(
        "--rebuild",
        action="store_true",
        help="wipe all state and counts (changelogs, local data dir) and replay from earliest",
    )
    replay.set_defaults(func=_replay)

    reconcile = command("reconcile", help="recount from state; report or fix")
    reconcile.add_argument("--campaign", default=None)
    reconcile.add_argument("--fix", action="store_true")
    reconcile.set_defaults(func=_reconcile)

    dev = command("dev", help="the local stack: Kafka broker and AWS endpoint")
    dev.add_argument(
        "action",
        choices=["up", "down", "status", "reset", "fetch-kafka", "provision", "env"],
        help="provision: create topics and AWS resources on already running services; "
        "reset: stop both, wipe Kafka's data and local worker state, start clean. "
        "up after down starts clean too (moto keeps its data only in memory); "
        "env: the VFSTREAM_* exports other commands need for this stack "
        '(eval "$(vfstream dev env --secure)")',
    )
    dev.add_argument(
        "--secure",
        action="store_true",
        help="the secured stack: SASL_SSL (SCRAM-SHA-512) with TLS certificates made at first "
        "start and ACLs enforced, in .state/dev-secure on its own ports (Kafka 9094, moto "
        "5001) unless VFSTREAM_* settings say otherwise",
    )
    dev.set_defaults(func=_dev)


class _OursOnly(logging.Filter):
    """Keeps the terminal to vfstream's own log lines (library ones with --verbose)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == "vfstream" or record.name.startswith("vfstream.")


def configure_logging(command: str, verbose: bool) -> None:
    # The worker is a service: Faust sets up its logging from --loglevel, libraries included.
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    if command != "worker" and not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_OursOnly())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["generate"]:
        # The generator owns its options (argparse's REMAINDER would not pass `--help` on).
        from vfstream.dev.generator import main as generator_main

        return generator_main(argv[1:])
    args = build_parser().parse_args(argv)
    configure_logging(args.command, args.verbose)
    # Read once, here, and passed down: nothing below the command line reads configuration.
    try:
        settings = get_settings()
    except ValidationError as exc:
        # Each refused setting and why; never the values (hide_input_in_errors).
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "settings"
            print(f"vfstream: {where}: {error['msg']}", file=sys.stderr)
        return exit_codes.USAGE
    try:
        return int(args.func(args, settings) or 0)
    except VfStreamError as exc:
        # Whatever a command did not handle itself: its branch decides the status.
        print(f"vfstream {args.command}: {exc}", file=sys.stderr)
        return exit_codes.exit_status_of(exc)
    except KafkaError as exc:
        # A refusal the clients did not name (vfstream.kafka.access), or Kafka away.
        error = explain(exc, settings)
        if not isinstance(error, VfStreamError):
            error = DependencyUnavailable(redact(f"Kafka: {exc!r}", settings))
        print(f"vfstream {args.command}: {error}", file=sys.stderr)
        return exit_codes.exit_status_of(error)


if __name__ == "__main__":
    sys.exit(main())
