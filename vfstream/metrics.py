"""Prometheus metrics of the pipeline stages (Faust's own come from its Prometheus monitor)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

RECORDS_IN = Counter("vfstream_records_in_total", "Records that entered a stage", ["stage"])
RECORDS_OUT = Counter("vfstream_records_out_total", "Records a stage passed on", ["stage"])
WRITE_STATUSES = Counter("vfstream_write_status_total", "Fan-state write outcomes", ["status"])
DEAD_LETTERS = Counter(
    "vfstream_dead_letters_total", "Records sent to a dead-letter topic", ["kind"]
)
FLUSHES = Counter("vfstream_partition_flushes_total", "Partial-count flushes of source partitions")
SNAPSHOTS = Counter("vfstream_snapshots_total", "Partial snapshots announced to the tally agent")
STALE_EVENTS = Counter(
    "vfstream_stale_events_total", "Events fetched before the latest rebalance, ignored"
)
FILLED_RECORDS = Counter(
    "vfstream_filled_records_total",
    "Score records the stream skipped, read directly and applied in order",
)
INGESTED_FILES = Counter("vfstream_ingested_files_total", "Scoring files by outcome", ["status"])
CONSUMER_LAG = Gauge(
    "vfstream_consumer_lag",
    "Messages behind the end of each assigned partition",
    ["topic", "partition"],
)
SINK_RETRIES = Counter("vfstream_sink_retries_total", "Retried calls to a sink", ["sink"])
SINK_FAILURES = Counter("vfstream_sink_failures_total", "Calls to a sink that gave up", ["sink"])
BRIDGE_MILLIS_BEHIND = Gauge(
    "vfstream_bridge_millis_behind",
    "How far the Kinesis bridge is behind the tip of each shard it reads (MillisBehindLatest)",
    ["stream", "shard"],
)
BRIDGE_AWS_RETRIES = Counter(
    "vfstream_bridge_aws_retries_total",
    "Kinesis calls of the bridge retried after a throttling, server or connection error",
    ["call"],
)
REPORTS = Counter(
    "vfstream_reports_total",
    "Verdict report intents by outcome (posted, unchanged, failed, warned, duplicate)",
    ["outcome"],
)
MIRROR_ITEMS = Counter(
    "vfstream_mirror_items_total",
    "DynamoDB mirror items by outcome (written, older_or_same, refused)",
    ["outcome"],
)
ENTRY_RECORDS = Counter(
    "vfstream_entry_records_total",
    "Rank-0 records for the entry service by outcome "
    "(sent, inserted, updated, unknown-market, refused)",
    ["outcome"],
)
RELAY_WAITING = Gauge(
    "vfstream_relay_waiting",
    "Lanes of a relay waiting for their destination (campaigns for the entry forwarder, one "
    "lane for the others); 0 while it delivers",
    ["relay"],
)
RELAY_RETRIES = Counter(
    "vfstream_relay_retries_total",
    "Delivery attempts of a relay that failed and are retried after a backoff, by what it "
    "waits for",
    ["relay", "destination"],
)
RELAY_HELD = Gauge(
    "vfstream_relay_held_records",
    "Parcels a relay has read and not yet delivered (fan states, mirror items, score records)",
    ["relay"],
)
RELAY_OLDEST = Gauge(
    "vfstream_relay_oldest_undelivered_seconds",
    "Age of the oldest record a relay has read and not yet delivered; 0 when none",
    ["relay"],
)
FENCED_INGESTS = Counter(
    "vfstream_fenced_ingests_total",
    "Open transactions of dead ingests aborted by fencing their transactional id",
)
S3_READ_FAULTS = Counter(
    "vfstream_s3_read_faults_total",
    "Reads of a file S3 broke off, by what was done: resumed at the byte reached, or the "
    "file restarted (its transaction aborted) once resuming did not heal it",
    ["action"],
)
HTTP_UNAUTHORIZED = Counter(
    "vfstream_http_unauthorized_total",
    "HTTP requests refused for want of a valid token (missing, wrong, malformed)",
    ["reason"],
)
