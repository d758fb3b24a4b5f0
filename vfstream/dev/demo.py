"""``make demo``: the main job end to end on the local stack, then a summary; exit 0 if exact.

Starts the stack if it is not running (and stops it again), generates a ~100k-row scoring
file, uploads it to S3, ingests it, runs a worker until the counts settle, and compares them
with the generator's truth. Each run uses its own topics and consumer group, so repeating
the demo never mixes runs.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from vfstream.dev.generator import GeneratorConfig, expected_counts, generate_run
from vfstream.dev.scenario import demand_item, upload_run, wait_for_counts, wait_for_json
from vfstream.dev.stack import LocalStack, secure_stack_settings
from vfstream.dev.workers import WorkerProcess
from vfstream.settings import Settings, get_settings
from vfstream.sources.s3.ingestor import ScoringFileIngestor
from vfstream.topics import ensure_topics

DEMO_FANS = 45_000  # about 100k rows at 1-3 preferences a fan


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


async def run_demo(work: Path, *, secure: bool = False) -> int:
    base = get_settings()
    if secure or base.dev.kafka_secure:
        base = secure_stack_settings(base)
    stack = LocalStack(base)
    started_stack = not all(s.running for s in stack.status())
    if started_stack:
        kind = "secured (SASL_SSL, SCRAM-SHA-512, ACLs) " if base.dev.kafka_secure else ""
        _say(f"starting the {kind}local stack (Kafka KRaft broker + moto) ...")
    await stack.up()
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    # The stack's clients: its test keys, and on the secured broker the vfstream principal.
    settings = stack.settings.namespaced(f"demo{stamp}").model_copy(
        update={
            "data_dir": work / "worker",
            "listen_for_notifications": False,
            # The local stack has no entry service to forward rank-0 fans to.
            "forward_to_entry_service": False,
        }
    )
    await ensure_topics(settings)
    worker = WorkerProcess(settings, "demo-worker", work / "logs")
    try:
        config = GeneratorConfig(
            campaign_id=f"demo{stamp}", campaign_name="summer-tour", fans=DEMO_FANS, seed=7
        )
        run = generate_run(config)
        truth = expected_counts([run])[config.campaign_id]
        _say(f"generated {run.expected_rows:,} rows for {DEMO_FANS:,} fans; truth {truth}")
        key = await upload_run(settings, run, work / "files")
        _say(f"uploaded s3://{settings.scoring_bucket}/{key}")
        worker.start()
        await worker.wait_ready()
        _say(f"worker ready at {worker.base_url}")
        started = time.monotonic()
        summary = await ScoringFileIngestor(settings, progress=True).ingest(
            settings.scoring_bucket, key
        )
        print(orjson.dumps(summary.as_dict(), option=orjson.OPT_INDENT_2).decode(), flush=True)
        if summary.status != "ingested":
            _say(f"ingestion failed: {summary.error}")
            return 1
        counts, _ = await wait_for_counts(worker, config.campaign_id, truth, timeout=600)
        settled = time.monotonic() - started
        _, statuses = await worker.get_json("/statuses")
        print(
            orjson.dumps(
                {
                    "campaign": config.campaign_id,
                    "kafka": {
                        "bootstrap": settings.kafka_bootstrap,
                        "securityProtocol": settings.kafka_security_protocol,
                        "saslMechanism": settings.kafka_sasl_mechanism,
                        "principal": settings.kafka_sasl_username,
                    },
                    "counts": counts,
                    "expected": truth,
                    "exact": all(counts[k] == v for k, v in truth.items()),
                    "rows": summary.rows_in,
                    "validRows": summary.valid,
                    "invalidRows": summary.invalid,
                    "ingestSeconds": round(summary.seconds, 2),
                    "settledSeconds": round(settled, 2),
                    "rowsPerSecondEndToEnd": round(summary.rows_in / settled),
                    "worker": statuses,
                },
                option=orjson.OPT_INDENT_2,
            ).decode(),
            flush=True,
        )
        _say("counts equal the generator's truth: OK")
        book = await wait_for_json(
            worker,
            f"/campaigns/{config.campaign_id}/reports",
            lambda body: bool(body.get("lastText")),
        )
        _say("Slack verdict report of this run (no webhook configured, so the worker logged it):")
        print(book["lastText"], flush=True)
        mirrored = await _mirrored_counts(settings, config.campaign_id, counts)
        _say(f"DynamoDB campaign:{config.campaign_id} / meta:counts = {mirrored}")
        return 0
    finally:
        worker.stop()
        if started_stack:
            stack.down()
            _say("stopped the local stack")


async def _mirrored_counts(
    settings: Settings, campaign: str, counts: dict[str, Any], timeout: float = 120.0
) -> dict[str, Any]:
    """The mirror's meta:counts item, once it equals the counts view."""
    started = time.monotonic()
    item: dict[str, Any] | None = None
    while time.monotonic() - started < timeout:
        item = await demand_item(settings, f"campaign:{campaign}", "meta:counts")
        if item and all(item.get(k) == counts[k] for k in ("verified", "rejected", "selected")):
            return {k: int(item[k]) for k in ("verified", "rejected", "selected")}
        await asyncio.sleep(1)
    raise TimeoutError(f"the DynamoDB mirror did not reach {counts} in {timeout:.0f}s: {item}")


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="vfstream-demo-") as work:
        try:
            return asyncio.run(run_demo(Path(work), secure="--secure" in sys.argv[1:]))
        except Exception as exc:
            _say(f"FAILED: {exc}")
            return 1


if __name__ == "__main__":
    sys.exit(main())
