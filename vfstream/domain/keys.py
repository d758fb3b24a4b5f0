"""The keys of the fan-state table and the score-record topic. No I/O.

A fan's key joins its campaign and its globalUserId. Both come from outside (the S3 key, the
row, a Kinesis record) and may hold any character, the separator included: with a plain
``<campaignId>:<globalUserId>``, campaign ``p3col:a`` fan ``b`` and campaign ``p3col`` fan
``a:b`` shared one key and overwrote each other's state. So the campaign part is escaped:
``%``, ``:`` and ``#`` become ``%25``, ``%3A`` and ``%23``. The first ``:`` of a key is then
always the separator, and no fan key starts with ``#``, which the ledger's own keys
(``#counts:``, ``#run:``, ``#index:``, ``#position:``) do. Ids without those characters (all
real ones) keep today's readable ``<campaignId>:<globalUserId>``.
"""

from __future__ import annotations

import re
import zlib

SEPARATOR = ":"
BOOKKEEPING_PREFIX = "#"
_ESCAPES = {"%": "%25", ":": "%3A", "#": "%23"}
_NEEDS_ESCAPE = frozenset(_ESCAPES)
_UNESCAPES = {code: char for char, code in _ESCAPES.items()}
_ESCAPED = re.compile("|".join(_UNESCAPES))


def _escape(part: str) -> str:
    if _NEEDS_ESCAPE.isdisjoint(part):
        return part
    return "".join(_ESCAPES.get(char, char) for char in part)


def _unescape(part: str) -> str:
    if "%" not in part:
        return part
    return _ESCAPED.sub(lambda match: _UNESCAPES[match.group()], part)


def fan_key(campaign_id: str, global_user_id: str) -> str:
    """The one key of a (campaign, fan) pair: distinct pairs never share it."""
    return f"{_escape(campaign_id)}{SEPARATOR}{global_user_id}"


def split_fan_key(key: str) -> tuple[str, str]:
    """(campaignId, globalUserId) of a key made by ``fan_key``."""
    if key.startswith(BOOKKEEPING_PREFIX):
        raise ValueError(f"{key!r} is a bookkeeping key, not a fan's")
    campaign, separator, user = key.partition(SEPARATOR)
    if not separator:
        raise ValueError(f"{key!r} is not a fan key")
    return _unescape(campaign), user


def is_fan_key(key: bytes) -> bool:
    """Whether a fan-state table key holds a fan (not the ledger's bookkeeping)."""
    return not key.startswith(b"#")


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of a key, for every topic and table the pipeline partitions by key.

    One hash everywhere: the ingestor and the Kinesis bridge send a fan's records to this
    partition of the score-record topic (the fan-state table's partition), the campaign's
    partials and reports go to this partition of theirs, and the web views route a key to
    the worker owning this partition. CRC-32 (``zlib.crc32``, C speed, in every language's
    standard library) of the key's UTF-8 bytes; Kafka's murmur2 costs 2.5 us a key in Python.
    """
    return zlib.crc32(key) % partitions


# The state table's own keys beside the fans' (a fan key never starts with "#"): one
# partition's partial counts of a campaign, its progress of a run, the index of both, and
# the score-record position its last flush covered.
def partial_key(partition: int, campaign_id: str) -> bytes:
    return f"#counts:{partition}:{campaign_id}".encode()


def partials_prefix(partition: int) -> bytes:
    """What every partial of ``partition`` starts with (a key-ordered scan finds them all)."""
    return f"#counts:{partition}:".encode()


def run_key(partition: int, run_id: str) -> bytes:
    return f"#run:{partition}:{run_id}".encode()


def index_key(partition: int) -> bytes:
    return f"#index:{partition}".encode()


def position_key(partition: int) -> bytes:
    return f"#position:{partition}".encode()


def is_partial_key(key: bytes) -> bool:
    return key.startswith(b"#counts:")
