"""The ``vfstream`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from vfstream.settings import get_settings


def _dev(args: argparse.Namespace) -> int:
    from vfstream.devstack.stack import LocalStack, StackError, fetch_kafka, status_json

    settings = get_settings()
    stack = LocalStack(settings)
    try:
        if args.action == "fetch-kafka":
            print(fetch_kafka(settings))
        elif args.action == "up":
            print(status_json(asyncio.run(stack.up())))
        elif args.action == "provision":
            asyncio.run(stack.provision())
            print(json.dumps({"provisioned": True}))
        elif args.action == "down":
            stopped = stack.down()
            print(json.dumps({"stopped": stopped}))
        else:
            statuses = stack.status()
            print(status_json(statuses))
            return 0 if all(s.running for s in statuses) else 3
    except StackError as exc:
        print(f"vfstream dev {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from vfstream.ingest.cli import run_ingest

    return run_ingest(args.url, force=args.force, progress=not args.no_progress)


def _fanlist(args: argparse.Namespace) -> int:
    from vfstream.ingest.cli import run_fanlist

    return run_fanlist(args.url)


def _worker(args: argparse.Namespace) -> int:
    from vfstream.app import run_worker

    return run_worker(loglevel=args.loglevel)


def _replay(args: argparse.Namespace) -> int:
    from vfstream.replay import run_replay

    if not args.rebuild and not args.to:
        print("vfstream replay: --to is required (or --rebuild)", file=sys.stderr)
        return 2
    return run_replay(args.to or "earliest", topic=args.topic, rebuild_state=args.rebuild)


def _reconcile(args: argparse.Namespace) -> int:
    from vfstream.reconcile import run_reconcile

    return run_reconcile(campaign=args.campaign, fix=args.fix)


def _listen(args: argparse.Namespace) -> int:
    from vfstream.ingest.notifications import run_listener

    return run_listener()


def _bridge(args: argparse.Namespace) -> int:
    from vfstream.sources.kinesis_bridge import run_bridge

    return run_bridge(args.stream, once=args.once)


def _generate(args: argparse.Namespace) -> int:
    from vfstream.generator import main as generator_main

    return generator_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vfstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run a Faust worker (all agents, web server)")
    worker.add_argument("--loglevel", default="info")
    worker.set_defaults(func=_worker)

    ingest = sub.add_parser("ingest", help="ingest one scoring file from S3")
    ingest.add_argument("url", help="s3://<bucket>/<key>")
    ingest.add_argument("--force", action="store_true", help="ingest even if done before")
    ingest.add_argument("--no-progress", action="store_true", help="no progress bar")
    ingest.set_defaults(func=_ingest)

    fanlist = sub.add_parser(
        "fanlist",
        help="store one fanlist file from S3 in DynamoDB and the campaign-data stream",
        description="Exit status: 0 stored, 1 file refused or a service unreachable, "
        "2 bad URL, 3 some items not stored or not streamed.",
    )
    fanlist.add_argument("url", help="s3://<bucket>/fanlist/scored/<campaignId>/<timestamp>.csv")
    fanlist.set_defaults(func=_fanlist)

    replay = sub.add_parser("replay", help="move the worker group's offsets (workers stopped)")
    replay.add_argument("--to", default=None, help="earliest | <ISO datetime> | <offset>")
    replay.add_argument("--topic", default=None, help="source topic (default: score records)")
    replay.add_argument(
        "--rebuild",
        action="store_true",
        help="wipe all state and counts (changelogs, local data dir) and replay from earliest",
    )
    replay.set_defaults(func=_replay)

    reconcile = sub.add_parser("reconcile", help="recount from state; report or fix")
    reconcile.add_argument("--campaign", default=None)
    reconcile.add_argument("--fix", action="store_true")
    reconcile.set_defaults(func=_reconcile)

    dev = sub.add_parser("dev", help="the local stack: Kafka broker and AWS endpoint")
    dev.add_argument(
        "action",
        choices=["up", "down", "status", "fetch-kafka", "provision"],
        help="provision: create topics and AWS resources on already running services",
    )
    dev.set_defaults(func=_dev)

    listen = sub.add_parser(
        "listen",
        help="ingest the files the S3 notification queue announces (the worker's listener alone)",
    )
    listen.set_defaults(func=_listen)

    bridge = sub.add_parser(
        "bridge", help="copy score records from a Kinesis stream to the score-record topic"
    )
    bridge.add_argument("--stream", default=None, help="the stream (default: bridge_stream)")
    bridge.add_argument(
        "--once", action="store_true", help="copy what the stream holds now, print a summary, exit"
    )
    bridge.set_defaults(func=_bridge)

    # The generator has its own options: everything after `generate` goes to it, --help too.
    generate = sub.add_parser("generate", help="write a realistic scoring file", add_help=False)
    generate.add_argument("rest", nargs=argparse.REMAINDER)
    generate.set_defaults(func=_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["generate"]:
        # The generator owns its options (argparse's REMAINDER would not pass `--help` on).
        from vfstream.generator import main as generator_main

        return generator_main(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
