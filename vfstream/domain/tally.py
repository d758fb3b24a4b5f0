"""The campaign tally's rules: the partials-topic message, how a campaign's totals take it,
when runs settle, which runs are overdue, and the windowed change. No I/O.

Every message on the partials topic is a ``PartialsMessage``, a tagged union of three
kinds, each its own type, told apart by the one key it holds (``read_message``; a message
holding none or more than one is refused). The topic's four writers, each by the kind it
writes:
- ``PartialMessage`` (``{"partial": ...}``): one source partition's counts for a campaign.
  Written by the verification ledger's flush and re-announcement
  (``vfstream.stream.counting``, framed by ``partial_message``), and by ``reconcile --fix``
  (``vfstream.ops.reconcile``, ``correction_message``: with ``replace``, to override a
  corrupt watermark).
- ``RunMessage`` (``{"run": ...}``): how many records of a run one source partition applied.
  Written by the ledger's flush and re-announcement (``run_message``).
- ``AnnounceMessage`` (``{"announce": ...}``): an ingested file's run, what it must reach to
  settle. Written by the ingestor's marker (``vfstream.sources.s3.ingested``,
  ``run_announcement``, with ``announce_message``) and re-sent by ``replay --rebuild``
  (``vfstream.ops.replay``).
The ledger frames its already-encoded partials with ``partial_message``/``run_message``
(bytes equal to the model's encoding, checked by a test) so its flush builds no model.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, Discriminator, Tag, TypeAdapter

from vfstream.domain.keys import partition_for
from vfstream.domain.ledger import CampaignTotals, PartialCounts, RunProgress
from vfstream.domain.limits import DEFAULT_LIMITS, MAX_RUN_ID_BYTES, Limits, over_bytes
from vfstream.domain.reports import IntentKind, ReportIntent, RunAnnouncement
from vfstream.domain.state import CountDelta


class _Message(BaseModel):
    def to_bytes(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self, exclude_defaults=True)


class PartialMessage(_Message):
    """One source partition's counts for a campaign, keyed by its campaign id."""

    partial: PartialCounts
    replace: bool = False  # override the stored partial whatever its watermark


class RunMessage(_Message):
    """How many records of a run one source partition applied, keyed by its campaign id."""

    run: RunProgress


class AnnounceMessage(_Message):
    """An ingested file's run and what it must reach to settle, keyed by its campaign id."""

    announce: RunAnnouncement


PartialsMessage = PartialMessage | RunMessage | AnnounceMessage

_KINDS = ("partial", "run", "announce")


def _kind(value: Any) -> str | None:
    """The one kind a message holds (a key whose value is not null), or None."""
    if isinstance(value, dict):
        held = [kind for kind in _KINDS if value.get(kind) is not None]
        return held[0] if len(held) == 1 else None
    for kind, cls in zip(_KINDS, (PartialMessage, RunMessage, AnnounceMessage), strict=True):
        if isinstance(value, cls):
            return kind
    return None


_MESSAGES: TypeAdapter[PartialsMessage] = TypeAdapter(
    Annotated[
        Annotated[PartialMessage, Tag("partial")]
        | Annotated[RunMessage, Tag("run")]
        | Annotated[AnnounceMessage, Tag("announce")],
        Discriminator(
            _kind,
            custom_error_type="partials_kind",
            custom_error_message="a partials message holds exactly one of partial, run, announce",
        ),
    ]
)


def read_message(value: bytes) -> PartialsMessage:
    """A partials-topic message; ``pydantic.ValidationError`` when it is not one."""
    return _MESSAGES.validate_json(value)


def partial_message(partial_json: bytes) -> bytes:
    """The message of an encoded ``PartialTally``/``PartialCounts`` (the ledger's flush)."""
    return b'{"partial":' + partial_json + b"}"


def run_message(run_json: bytes) -> bytes:
    """The message of an encoded ``RunTally``/``RunProgress`` (the ledger's flush)."""
    return b'{"run":' + run_json + b"}"


def announce_message(run: RunAnnouncement) -> bytes:
    return orjson.dumps({"announce": run.model_dump(mode="json")})


def correction_message(partial: PartialCounts) -> bytes:
    """A recounted partial that replaces the stored one whatever its watermark."""
    return PartialMessage(partial=partial, replace=True).to_bytes()


@dataclass(frozen=True)
class TallyEffect:
    moved: CountDelta  # how the campaign's counts moved (the windowed change)
    intents: list[ReportIntent]  # runs this message settled: their reports


def message_refusal(
    key: bytes | None,
    message: PartialsMessage,
    partitions: int,
    limits: Limits = DEFAULT_LIMITS,
    arrived_on: int | None = None,
) -> str | None:
    """Why a partials message cannot be taken as it is, or None.

    Any producer may write the topic. A message keyed by one campaign must speak of that
    campaign, of a partition that exists, with counts that can be; its ids are bounded like
    the ledger's (``fans.bookkeeping_refusal``), so no message can grow a campaign's totals,
    one changelog message, past what the broker takes.
    """
    campaign = (key or b"").decode("utf-8", "replace")
    if arrived_on is not None and arrived_on != partition_for(key or b"", partitions):
        # A campaign's totals live in the partition its key hashes to; a message elsewhere
        # would start a second, diverging copy of them.
        return (
            f"arrived on partition {arrived_on}, but its key belongs to partition "
            f"{partition_for(key or b'', partitions)}"
        )
    part: PartialCounts | RunProgress | RunAnnouncement
    if isinstance(message, PartialMessage):
        part = message.partial
    elif isinstance(message, RunMessage):
        part = message.run
    else:
        part = message.announce
    if part.campaignId != campaign:
        return f"campaignId {part.campaignId[:40]!r} is not the message key {campaign[:40]!r}"
    size = over_bytes(campaign, limits.id_bytes)
    if size is not None:
        return f"campaignId: {size} bytes, over the limit of {limits.id_bytes}"
    partition = getattr(part, "partition", 0)
    if not 0 <= partition < partitions:
        return f"partition {partition} is not one of the {partitions} partitions"
    if isinstance(message, PartialMessage):
        partial = message.partial
        if min(partial.verified, partial.rejected, partial.selected) < 0:
            return "a partition's counts cannot be negative"
    run_id = getattr(part, "runId", None)
    if run_id is not None:
        size = over_bytes(run_id, MAX_RUN_ID_BYTES)
        if size is not None:
            return f"runId: {size} bytes, over the limit of {MAX_RUN_ID_BYTES}"
    if isinstance(message, RunMessage) and message.run.applied < 0:
        return "applied cannot be negative"
    if isinstance(message, AnnounceMessage):
        announce = message.announce
        if announce.valid < 0 or announce.invalid < 0:
            return "row counts cannot be negative"
        for name, text in (("key", announce.key), ("campaignName", announce.campaignName)):
            size = over_bytes(text, limits.field_bytes)
            if size is not None:
                return f"{name}: {size} bytes, over the limit of {limits.field_bytes}"
    return None


def apply_message(totals: CampaignTotals, message: PartialsMessage, now: datetime) -> TallyEffect:
    """Take one message into a campaign's totals; settle what it completes."""
    moved = CountDelta()
    if isinstance(message, PartialMessage):
        moved = totals.merge_partial(message.partial, replace=message.replace)
    elif isinstance(message, RunMessage):
        totals.merge_run(message.run)
    else:
        totals.announce(message.announce.model_copy(update={"announcedAt": now}))
    counts = totals.counts
    intents = [
        ReportIntent(kind=IntentKind.SETTLED, run=run, counts=counts, applied=run.valid)
        for run in totals.settle(now)
    ]
    totals.bound()
    return TallyEffect(moved=moved, intents=intents)


def overdue_intents(
    totals: CampaignTotals, now: datetime, limit: timedelta, warned: Collection[str]
) -> list[ReportIntent]:
    """Warnings for the campaign's runs announced longer than ``limit`` ago and not settled,
    except those already ``warned`` of."""
    return [
        ReportIntent(
            kind=IntentKind.OVERDUE,
            run=run,
            counts=totals.counts,
            applied=totals.run_applied(run.runId),
        )
        for run in totals.announced.values()
        if run.announcedAt is not None and now - run.announcedAt > limit and run.runId not in warned
    ]


EMPTY_WINDOW = {"verified": 0, "rejected": 0, "selected": 0}


def add_to_window(current: bytes | None, moved: CountDelta) -> bytes:
    """A window's value (the change of counts within it) after another move."""
    before = orjson.loads(current) if current else EMPTY_WINDOW
    return orjson.dumps(
        {
            "verified": before["verified"] + moved.verified,
            "rejected": before["rejected"] + moved.rejected,
            "selected": before["selected"] + moved.selected,
        }
    )
