"""Bounds on what one row, record, fan state or file may hold (SPEC 2.1 "Limits"). No I/O.

Every bound is a setting (``VFSTREAM_LIMIT_*``, README "Limits"); these are the defaults.
A row or record past a field, id or events bound is invalid and dead-lettered with its
reason; a fan state past its bound is refused by the verification agent (the fan keeps its
last good state); a file past a file bound fails as a whole.

Why they exist: a fan state is one Kafka message on the changelog. Unbounded, one crafted file
(25 rows of 60,000-character event ids) built a 1.5 MB state, the changelog write failed with
MessageSizeTooLargeError and every worker died on every restart.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class Limits:
    # Any text field of a row or record (event ids, names, notes, codes, contact data).
    field_bytes: int = 1 * KIB
    # campaignId and globalUserId: they are part of every key, item and index entry.
    id_bytes: int = 256
    # Ranks 0 .. events_per_fan - 1; a fan's events list is indexed by rank.
    events_per_fan: int = 100
    # One fan's stored state (one changelog message; the broker takes 1 MiB by default).
    state_bytes: int = 64 * KIB
    # A scoring file, decompressed.
    file_bytes: int = 512 * MIB
    file_rows: int = 3_000_000
    # How far in the future a scoring time (a key's dateTime, a record's scoredAt) may be.
    # Ordering is by scoring time: one far in the future would make every real later score
    # of the fan "stale" for good.
    future_skew_seconds: float = 86_400.0
    # A gzip file may decompress to at most this many times its compressed size, checked
    # once compression_check_bytes are out (real scoring files compress 5-10 times).
    compression_ratio: float = 50.0
    compression_check_bytes: int = 8 * MIB

    @property
    def future_skew_us(self) -> int:
        return int(self.future_skew_seconds * 1_000_000)


DEFAULT_LIMITS = Limits()


# A run id (a file ingestion's, ``kinesis://<stream>/<campaign>`` for a feed): it keys run
# progress and the runs a campaign remembers, so it is bounded for any producer.
MAX_RUN_ID_BYTES = 512

# DynamoDB numbers, the narrowest store a score reaches: 0, or a magnitude from 1e-130 to
# under 1e126 (and at most 38 significant digits, which every float's 17 are within).
SMALLEST_STORABLE = 1e-130
LARGEST_STORABLE = 1e126


def number_refusal(value: float) -> str | None:
    """Why ``value`` cannot be stored everywhere a score goes (DynamoDB included), or None.

    ``1e-320`` is a valid float that DynamoDB cannot hold (it underflowed in the mirror and
    the fan's item was lost); such a value is refused where it enters, with this reason.
    """
    if value != value or value in (math.inf, -math.inf):
        return "not a finite number"
    magnitude = abs(value)
    if magnitude == 0.0 or SMALLEST_STORABLE <= magnitude < LARGEST_STORABLE:
        return None
    return (
        f"{value!r} cannot be stored (DynamoDB numbers are 0 or of magnitude "
        f"{SMALLEST_STORABLE:g} to under {LARGEST_STORABLE:g})"
    )


def underflows(text: str, value: float) -> bool:
    """Whether written ``text`` stands for a number other than 0 that parsed to 0.0 (``1e-400``):
    storing 0 would not be lossless."""
    if value != 0.0:
        return False
    mantissa = text.lower().split("e", 1)[0]
    return any(digit in mantissa for digit in "123456789")


def utf8_size(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (lone surrogates from undecodable input count as one)."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogateescape"))


def over_bytes(text: str, limit: int) -> int | None:
    """The UTF-8 size of ``text`` when it is over ``limit`` bytes, else None.

    Cheap for the common short text: a string of at most limit/4 characters cannot be over.
    """
    if len(text) * 4 <= limit:
        return None
    size = utf8_size(text)
    return size if size > limit else None


def has_control_characters(text: str) -> bool:
    """C0 controls and DEL: never part of an id, and a way to forge log lines."""
    return _CONTROL.search(text) is not None


_CONTROL = re.compile("[\x00-\x1f\x7f]")
