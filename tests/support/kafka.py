"""Reading what the pipeline committed to Kafka (shared with the reconcile command)."""

from vfstream.kafka_read import latest_values, read_committed

__all__ = ["latest_values", "read_committed"]
