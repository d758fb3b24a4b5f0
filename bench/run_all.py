"""``make bench``: every benchmark on a private local stack; ``name=value`` lines and
BENCHMARKS.md. Not part of the test suite."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.agent_bench import agent_benchmark
from bench.bridge_latency_bench import bridge_latency_benchmark
from bench.common import bench_stack, isolated, machine, stop_stack
from bench.console_load import console_load_benchmark
from bench.e2e_bench import e2e_benchmark
from bench.ingest_bench import ingest_benchmark
from bench.latency_bench import RATES, latency_benchmark
from bench.mirror_bench import mirror_benchmark
from bench.tls_bench import tls_benchmark

TARGETS = {
    "ingest_rows_per_s": ">= 50000",
    "ingest_peak_rss_mb": "<= 300",
    "agent_records_per_s": ">= 20000",
    "agent_to_plain_ratio": ">= 0.25",
    "e2e_1w_settled_after_ingest_start_seconds": "<= 90 for 1M rows (goal 60)",
    "mirror_to_naive_ratio": ">= 5",
    "e2e_1w_settled_seconds": "<= 60 for 1M rows",
    "e2e_3w_settled_seconds": "<= 60 for 1M rows",
    "latency_2000_per_s_p99_ms": "<= 250",
    "bridge_latency_2000_per_s_p99_ms": "<= 1000",
    "tls_agent_sasl_ssl_to_plain_ratio": "measured, no target (TLS costs CPU)",
    "console_worst_route_p95_ms": "<= 500 (300 consoles polling as the page does)",
    "console_rss_growth_over_no_pollers_mb": "< 150",
    "console_throughput_ratio": ">= 0.8",
    "console_routes_worst_route_p95_ms": "<= 500 (300 consoles asking five routes each)",
}


def main(argv: list[str]) -> int:
    wanted = set(argv) or {
        "ingest",
        "agent",
        "mirror",
        "e2e",
        "latency",
        "bridge",
        "tls",
        "console",
    }
    results: dict[str, object] = {}
    failed: list[str] = []
    keep = os.environ.get("VFSTREAM_BENCH_KEEP")  # a folder to keep logs in
    with tempfile.TemporaryDirectory(prefix="vfstream-bench-", dir=keep) as tmp:
        work = Path(tmp)
        settings = bench_stack(work / "stack")

        def measure(name: str, run: Callable[[], dict]) -> None:
            # One benchmark failing must not lose the others' figures.
            try:
                results.update(run())
            except Exception:
                failed.append(name)
                traceback.print_exc()

        try:
            if "ingest" in wanted:
                measure(
                    "ingest", lambda: ingest_benchmark(isolated(settings, work / "w1"), work / "f1")
                )
            if "agent" in wanted:
                measure(
                    "agent", lambda: agent_benchmark(isolated(settings, work / "w2"), work / "f2")
                )
            if "mirror" in wanted:
                measure("mirror", lambda: mirror_benchmark(isolated(settings, work / "w3")))
            # "e2e1" or "e2e3" runs one of the two end-to-end figures (a 1M-row run is long).
            for workers in (1, 3):
                if "e2e" in wanted or f"e2e{workers}" in wanted:
                    place = work / f"e2e{workers}"
                    measure(
                        f"e2e{workers}",
                        lambda p=place, w=workers: e2e_benchmark(isolated(settings, p), p, w),
                    )
            if "latency" in wanted:
                for rate in RATES:
                    place = work / f"latency-{rate}"
                    measure(
                        f"latency-{rate}",
                        lambda p=place, r=rate: latency_benchmark(isolated(settings, p), p, r),
                    )
            if "bridge" in wanted:
                place = work / "bridge-latency"
                measure(
                    "bridge",
                    lambda: bridge_latency_benchmark(isolated(settings, place), place),
                )
            if "soak" in wanted:
                # Asked for by name only (about 25 minutes); its own stack, workers, plot.
                from bench.soak import soak_benchmark

                measure("soak", lambda: soak_benchmark(work / "soak"))
            if "tls" in wanted:
                measure("tls", lambda: tls_benchmark(settings, work / "tls"))
            if "console" in wanted:
                measure("console", lambda: console_load_benchmark(settings, work / "console"))
        finally:
            stop_stack(settings)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    for name, value in results.items():
        print(f"{name}={value}")
    write_report(results)
    return 1 if failed else 0


RESULTS = Path("bench/results.json")


def write_report(results: dict[str, object]) -> None:
    """Merge this run's figures into ``bench/results.json`` (so a partial run such as
    ``python -m bench.run_all e2e`` keeps the others) and rewrite BENCHMARKS.md from it."""
    today = time.strftime("%Y-%m-%d")
    recorded: dict[str, dict[str, object]] = (
        json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    )
    for name, value in results.items():
        recorded[name] = {"value": value, "measured": today}
    RESULTS.write_text(json.dumps(recorded, indent=2) + "\n")
    lines = [
        "# Benchmarks",
        "",
        f"Measured on {machine()} with `make bench` or a part of it",
        "(`python -m bench.run_all e2e latency`, say), each on a private local stack:",
        "Kafka 4.1.1 KRaft and moto 5.2.5, all on 127.0.0.1. Figures and dates come from",
        "`bench/results.json`.",
        "",
        "| figure | value | target | measured |",
        "|---|---|---|---|",
    ]
    for name, entry in recorded.items():
        target = TARGETS.get(name, "")
        lines.append(f"| `{name}` | {entry['value']} | {target} | {entry['measured']} |")
    notes = Path("bench/NOTES.md")
    if notes.exists():
        lines += ["", notes.read_text().strip()]
    Path("BENCHMARKS.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
