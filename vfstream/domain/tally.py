"""The campaign tally's rules: the partials-topic message, how a campaign's totals take it,
when runs settle, which runs are overdue, and the windowed change. No I/O.

Every message on the partials topic is a ``PartialsMessage`` holding exactly one of:
- ``partial``: one source partition's counts for a campaign (the verification ledger's
  flush; reconcile ``--fix`` sends one with ``replace`` to override a corrupt watermark);
- ``run``: how many records of a run one source partition applied (the ledger's flush);
- ``announce``: an ingested file's run, what it must reach to settle (the ingestor's
  marker, re-sent by ``replay --rebuild``).
The ledger frames its already-encoded partials with ``partial_message``/``run_message``
(bytes equal to the model's encoding, checked by a test) so its flush builds no model.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from pydantic import BaseModel, model_validator

from vfstream.domain.keys import partition_for
from vfstream.domain.ledger import CampaignTotals, PartialCounts, RunProgress
from vfstream.domain.limits import DEFAULT_LIMITS, MAX_RUN_ID_BYTES, Limits, over_bytes
from vfstream.domain.reports import IntentKind, ReportIntent, RunAnnouncement
from vfstream.domain.state import CountDelta


class PartialsMessage(BaseModel):
    """One message of the partials topic, keyed by its campaign id."""

    partial: PartialCounts | None = None
    replace: bool = False
    run: RunProgress | None = None
    announce: RunAnnouncement | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> PartialsMessage:
        held = [part for part in (self.partial, self.run, self.announce) if part is not None]
        if len(held) != 1:
            raise ValueError("a partials message holds exactly one of partial, run, announce")
        return self

    def to_bytes(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self, exclude_defaults=True)

    @classmethod
    def from_bytes(cls, value: bytes) -> PartialsMessage:
        return cls.model_validate_json(value)


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
    return PartialsMessage(partial=partial, replace=True).to_bytes()


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
    part = message.partial or message.run or message.announce
    assert part is not None
    if part.campaignId != campaign:
        return f"campaignId {part.campaignId[:40]!r} is not the message key {campaign[:40]!r}"
    size = over_bytes(campaign, limits.id_bytes)
    if size is not None:
        return f"campaignId: {size} bytes, over the limit of {limits.id_bytes}"
    partition = getattr(part, "partition", 0)
    if not 0 <= partition < partitions:
        return f"partition {partition} is not one of the {partitions} partitions"
    if message.partial is not None:
        partial = message.partial
        if min(partial.verified, partial.rejected, partial.selected) < 0:
            return "a partition's counts cannot be negative"
    run_id = getattr(part, "runId", None)
    if run_id is not None:
        size = over_bytes(run_id, MAX_RUN_ID_BYTES)
        if size is not None:
            return f"runId: {size} bytes, over the limit of {MAX_RUN_ID_BYTES}"
    if message.run is not None and message.run.applied < 0:
        return "applied cannot be negative"
    if message.announce is not None:
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
    if message.partial is not None:
        moved = totals.merge_partial(message.partial, replace=message.replace)
    elif message.run is not None:
        totals.merge_run(message.run)
    elif message.announce is not None:
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
