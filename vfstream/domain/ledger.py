"""Exact counts under at-least-once delivery: the bookkeeping of one source partition. No I/O.

Why this exists (README "Exact counts"): Faust's exactly-once mode picks a transaction by
the *destination* partition of a send, so re-keying deltas by campaign escapes the source
partition's transaction. Instead, each source partition keeps its own partial counts in the
same changelog-backed table as the fan states, and writes go to one changelog partition in
program order. After a crash the table is therefore a *prefix* of what was written, and:

* a fan's stored envelope remembers the source position of its last transition (the offset
  of the batch message and the record's index in it, ``fans.position_of``) and the count
  change not yet folded into a flushed partial (``pending``);
* a partial remembers the highest source position it has folded in (``watermark``);
* a redelivered record whose position is at or below its fan's stored position changes no
  state; if it *is* that position and the partial's watermark is below it, the partial never
  saw the change, so ``pending`` is folded in then.

Replay of already-applied batches is thus a no-op, record by record (a fan with several rows
in one batch included), and a crash anywhere loses nothing and counts nothing twice. Run
progress uses the same watermark rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, Field

from vfstream.domain.fans import (
    Delta,
    Envelope,
    ScoreRow,
    WriteStatus,
    apply_row,
    content_refusal,
    encode_envelope,
)
from vfstream.domain.limits import DEFAULT_LIMITS, Limits
from vfstream.domain.reports import REMEMBERED_RUNS, RunAnnouncement
from vfstream.domain.state import (
    CountDelta,
    Counts,
)


class PartialCounts(BaseModel):
    """The counts one source partition contributes to one campaign."""

    campaignId: str
    partition: int
    verified: int = 0
    rejected: int = 0
    selected: int = 0
    watermark: int = -1

    @property
    def counts(self) -> Counts:
        return Counts(verified=self.verified, rejected=self.rejected, selected=self.selected)

    def fold(self, delta: Delta, position: int) -> None:
        self.verified += delta[0]
        self.rejected += delta[1]
        self.selected += delta[2]
        if position > self.watermark:
            self.watermark = position


class RunProgress(BaseModel):
    """How many records of one ingestion run one source partition has applied."""

    runId: str
    campaignId: str
    partition: int
    applied: int = 0
    watermark: int = -1


@dataclass(slots=True)
class PartialTally:
    """``PartialCounts`` on the hot path: folded once a record, so a plain slotted class
    (pydantic's attribute setting cost about 10% of the agent's time). Same JSON."""

    campaignId: str
    partition: int
    verified: int = 0
    rejected: int = 0
    selected: int = 0
    watermark: int = -1

    def fold(self, delta: Delta, position: int) -> None:
        self.verified += delta[0]
        self.rejected += delta[1]
        self.selected += delta[2]
        if position > self.watermark:
            self.watermark = position

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, raw: bytes) -> PartialTally:
        return cls(**PartialCounts.model_validate_json(raw).model_dump())


@dataclass(slots=True)
class RunTally:
    """``RunProgress`` on the hot path (see ``PartialTally``). Same JSON."""

    runId: str
    campaignId: str
    partition: int
    applied: int = 0
    watermark: int = -1

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, raw: bytes) -> RunTally:
        return cls(**RunProgress.model_validate_json(raw).model_dump())


@dataclass(slots=True)
class Applied:
    """What applying one record did."""

    status: WriteStatus
    envelope: Envelope | None = None  # the envelope to write; None when nothing changes
    encoded: bytes | None = None  # ``envelope`` as stored
    counted_for_run: bool = False
    # The state already covers this position: a redelivery after a crash or a replay. The
    # stored envelope may exist only in the local store (written there just before a crash,
    # never acknowledged by the changelog), so the caller writes it again.
    redelivered: bool = False
    reasons: tuple[str, ...] = ()  # why an ``invalid`` record was refused


def apply_record(
    stored: Envelope | None,
    row: ScoreRow,
    position: int,
    partial: PartialTally | PartialCounts,
    flushed_watermark: int,
    run: RunTally | RunProgress | None,
    now: str,
    limits: Limits = DEFAULT_LIMITS,
    now_us: int | None = None,
) -> Applied:
    """Apply one record at ``position``; mutates ``partial`` and ``run`` in place.

    ``flushed_watermark`` is the partial's watermark as last written to the table: a fan's
    pending change may only be forgotten once a flushed partial covers it.

    A record that would take the fan past a limit (its rank past the events limit, its state
    past the state limit), or that ``fans.content_refusal`` refuses when ``now_us`` is given
    (a scoring time past the future skew, a number no store holds), is ``invalid`` with its
    reasons and changes nothing: the fan keeps its last good state. It still counts towards
    its run, which would otherwise never settle.
    """
    counted = False
    if run is not None and position > run.watermark:
        run.applied += 1
        run.watermark = position
        counted = True
    if stored is not None and position <= stored.position:
        if position == stored.position and partial.watermark < position:
            partial.fold(stored.pending, position)
        return Applied(WriteStatus.UNCHANGED, counted_for_run=counted, redelivered=True)
    if row.rank >= limits.events_per_fan:
        limit = limits.events_per_fan
        return _refused(counted, f"rank {row.rank} is past the limit of {limit} events")
    trusted_until = None
    if now_us is not None:
        refusal = content_refusal(row, now_us, limits)
        if refusal is not None:
            return _refused(counted, refusal)
        trusted_until = now_us + limits.future_skew_us
    status, state, delta = apply_row(stored.state if stored else None, row, now, trusted_until)
    if state is None:
        return Applied(status, counted_for_run=counted)
    pending = delta
    if stored is not None and stored.position > flushed_watermark:
        before = stored.pending
        pending = (before[0] + delta[0], before[1] + delta[1], before[2] + delta[2])
    envelope = Envelope(position=position, pending=pending, state=state)
    encoded = encode_envelope(envelope)
    if len(encoded) > limits.state_bytes:
        return _refused(
            counted,
            f"the fan state would be {len(encoded)} bytes, over the limit of {limits.state_bytes}",
        )
    partial.fold(delta, position)
    return Applied(status, envelope, encoded, counted)


def _refused(counted_for_run: bool, reason: str) -> Applied:
    return Applied(WriteStatus.INVALID, counted_for_run=counted_for_run, reasons=(reason,))


# Settled runs a campaign's totals remember in full (the runs view); older ones by id only.
HISTORY_RUNS = 50
# Runs whose per-partition progress a campaign's totals keep, and announced runs waiting to
# settle: bounds for any input (``CampaignTotals.bound``). A real campaign has a handful.
TRACKED_RUNS = 256
PENDING_RUNS = 64


class SettledRun(BaseModel):
    """A run that settled: its announcement, the records applied, and when."""

    run: RunAnnouncement
    applied: int
    settledAt: datetime


class CampaignTotals(BaseModel):
    """The campaign counts table's value: the latest partial of every source partition."""

    campaignId: str
    partials: dict[int, PartialCounts] = Field(default_factory=dict)
    runs: dict[str, dict[int, int]] = Field(default_factory=dict)
    # Runs whose ingestion marker arrived and that have not settled yet; then the ids of
    # settled runs, so a redelivered marker or snapshot cannot settle a run twice.
    announced: dict[str, RunAnnouncement] = Field(default_factory=dict)
    settled: list[str] = Field(default_factory=list)
    # The newest settled runs with what they reached and when: the operator's runs view.
    history: list[SettledRun] = Field(default_factory=list)

    @property
    def counts(self) -> Counts:
        total = Counts()
        for partial in self.partials.values():
            total = total.apply(
                CountDelta(
                    verified=partial.verified,
                    rejected=partial.rejected,
                    selected=partial.selected,
                )
            )
        return total

    def merge_partial(self, partial: PartialCounts, *, replace: bool = False) -> CountDelta:
        """Take a partial unless an older one; returns how the campaign total moved.

        ``replace`` (reconcile --fix) takes it whatever its watermark, so a corrupt partial
        with a too-high watermark cannot block the real ones that follow.
        """
        current = self.partials.get(partial.partition)
        if current is not None and partial.watermark < current.watermark and not replace:
            return CountDelta()
        before = current.counts if current else Counts()
        self.partials[partial.partition] = partial
        return partial.counts.difference(before)

    def merge_run(self, progress: RunProgress) -> None:
        per_partition = self.runs.setdefault(progress.runId, {})
        if progress.applied >= per_partition.get(progress.partition, 0):
            per_partition[progress.partition] = progress.applied

    def run_applied(self, run_id: str) -> int:
        return sum(self.runs.get(run_id, {}).values())

    def announce(self, run: RunAnnouncement) -> None:
        if run.runId not in self.announced and run.runId not in self.settled:
            self.announced[run.runId] = run

    def settle(self, now: datetime | None = None) -> list[RunAnnouncement]:
        """Announced runs whose records are all applied, marked settled; each only once.

        Partials are flushed before the run progress that covers them (one partition of
        the partials topic per campaign, in order), so the counts are final for these runs.
        """
        done = [run for run in self.announced.values() if self.run_applied(run.runId) >= run.valid]
        settled_at = now or datetime.now(UTC)
        for run in done:
            del self.announced[run.runId]
            self.settled.append(run.runId)
            self.history.append(
                SettledRun(run=run, applied=self.run_applied(run.runId), settledAt=settled_at)
            )
        del self.settled[:-REMEMBERED_RUNS]
        del self.history[:-HISTORY_RUNS]
        return done

    def bound(self) -> list[str]:
        """Keep what only grows within bounds that hold for any input (the value is one
        changelog message): the progress of at most ``TRACKED_RUNS`` runs, settled ones
        dropped first, and at most ``PENDING_RUNS`` announced runs waiting to settle, the
        oldest dropped. Returns the runs it let go of that had not settled."""
        settled = set(self.settled)
        for run_id in [r for r in self.runs if r in settled]:
            if len(self.runs) <= TRACKED_RUNS:
                break
            del self.runs[run_id]
        while len(self.runs) > TRACKED_RUNS:
            del self.runs[next(iter(self.runs))]
        dropped: list[str] = []
        while len(self.announced) > PENDING_RUNS:
            run_id = next(iter(self.announced))
            del self.announced[run_id]
            dropped.append(run_id)
        return dropped

    def to_bytes(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> CampaignTotals:
        return cls.model_validate_json(data)

    def as_public(self) -> dict[str, Any]:
        counts = self.counts
        return {
            "campaignId": self.campaignId,
            "verified": counts.verified,
            "rejected": counts.rejected,
            "selected": counts.selected,
        }


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)
