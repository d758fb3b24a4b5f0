"""Writing a Faust table key so that the caller can wait until the changelog holds it."""

from __future__ import annotations

from typing import Any


def durable_set(table: Any, partition: int, key: bytes, value: bytes) -> Any:
    """Set ``key`` in the table's local store and its changelog; returns the changelog send.

    Faust's own ``table[key] = value`` does not let anyone wait for the changelog, and it
    commits source offsets without waiting either; awaiting this future does. Must run inside
    an event of ``partition`` (the local store is chosen by the current event).
    """
    sent = table.send_changelog(partition, key, value)
    table.data[key] = value
    return sent
