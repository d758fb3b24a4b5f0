"""Reading order of resharded Kinesis streams: children only after their parents (SPEC 2.3).

The recorded graphs in tests/data/kinesis_shards are ListShards answers taken from moto
5.2.5 and kinesalite 3.3.3 after SplitShard, MergeShards and UpdateShardCount; the
property tests build random reshard histories of their own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfstream.domain.shards import (
    ShardCheckpoint,
    ShardInfo,
    drained_by_position,
    readable_shards,
    waiting_shards,
)

RECORDED = Path(__file__).parents[2] / "data" / "kinesis_shards"


def recorded_graphs() -> list[tuple[str, list[dict[str, Any]]]]:
    graphs = []
    for path in sorted(RECORDED.glob("*.json")):
        for name, listing in json.loads(path.read_text()).items():
            graphs.append((f"{path.stem}:{name}", listing))
    return graphs


RECORDED_GRAPHS = recorded_graphs()


def shard_ids(listing: Sequence[dict[str, Any]]) -> list[str]:
    return [entry["ShardId"] for entry in listing]


def sid(n: int) -> str:
    return f"shardId-{n:012d}"


def read_in_some_order(shards: Sequence[ShardInfo], choose: Any) -> list[str]:
    """Finish shards one at a time, each picked by ``choose`` among those readable then."""
    finished: set[str] = set()
    order: list[str] = []
    while True:
        readable = readable_shards(shards, finished)
        if not readable:
            return order
        picked = choose(readable)
        finished.add(picked)
        order.append(picked)


def assert_parents_first(shards: Sequence[ShardInfo], order: list[str]) -> None:
    position = {shard_id: index for index, shard_id in enumerate(order)}
    listed = {shard.shard_id for shard in shards}
    for shard in shards:
        for parent in shard.parents:
            if parent in listed:
                assert position[parent] < position[shard.shard_id], (parent, shard.shard_id)


# ---- recorded graphs ---------------------------------------------------------------------


def test_the_recorded_graphs_cover_splits_and_merges() -> None:
    names = {name.split(":")[1] for name, _ in RECORDED_GRAPHS}
    assert {"split", "merge", "split_then_merge", "merge_then_split"} <= names
    sources = {name.split(":")[0] for name, _ in RECORDED_GRAPHS}
    assert sources == {"moto-5.2.5", "kinesalite-3.3.3"}


@pytest.mark.parametrize(("name", "listing"), RECORDED_GRAPHS, ids=[n for n, _ in RECORDED_GRAPHS])
def test_a_listing_is_parsed_with_both_parents_and_the_sequence_range(
    name: str, listing: list[dict[str, Any]]
) -> None:
    shards = [ShardInfo.from_listing(entry) for entry in listing]
    assert [s.shard_id for s in shards] == shard_ids(listing)
    for shard, entry in zip(shards, listing, strict=True):
        expected = [entry.get("ParentShardId"), entry.get("AdjacentParentShardId")]
        assert list(shard.parents) == [p for p in expected if p]
        assert shard.closed == ("EndingSequenceNumber" in entry["SequenceNumberRange"])


@pytest.mark.parametrize(("name", "listing"), RECORDED_GRAPHS, ids=[n for n, _ in RECORDED_GRAPHS])
@pytest.mark.parametrize("pick", ["first", "last"])
def test_every_recorded_shard_is_read_once_and_after_its_parents(
    name: str, listing: list[dict[str, Any]], pick: str
) -> None:
    shards = [ShardInfo.from_listing(entry) for entry in listing]
    order = read_in_some_order(shards, (lambda r: r[0]) if pick == "first" else (lambda r: r[-1]))
    assert sorted(order) == sorted(shard_ids(listing))
    assert_parents_first(shards, order)


def graph(source: str, name: str) -> list[ShardInfo]:
    listing = dict(RECORDED_GRAPHS)[f"{source}:{name}"]
    return [ShardInfo.from_listing(entry) for entry in listing]


@pytest.mark.parametrize("source", ["moto-5.2.5", "kinesalite-3.3.3"])
def test_after_a_split_the_children_wait_for_the_parent_only(source: str) -> None:
    shards = graph(source, "split")
    assert readable_shards(shards, set()) == [sid(0), sid(1)]
    assert waiting_shards(shards, set()) == [sid(2), sid(3)]
    # The untouched sibling finishing changes nothing for the children.
    assert readable_shards(shards, {sid(1)}) == [sid(0)]
    assert readable_shards(shards, {sid(0)}) == [sid(1), sid(2), sid(3)]


@pytest.mark.parametrize("source", ["moto-5.2.5", "kinesalite-3.3.3"])
def test_after_a_merge_the_child_waits_for_both_parents(source: str) -> None:
    shards = graph(source, "merge")
    assert readable_shards(shards, set()) == [sid(0), sid(1)]
    assert readable_shards(shards, {sid(0)}) == [sid(1)]
    assert readable_shards(shards, {sid(1)}) == [sid(0)]
    assert readable_shards(shards, {sid(0), sid(1)}) == [sid(2)]
    assert waiting_shards(shards, {sid(0)}) == [sid(2)]


@pytest.mark.parametrize("source", ["moto-5.2.5", "kinesalite-3.3.3"])
def test_a_merge_of_split_children_waits_for_the_whole_lineage(source: str) -> None:
    shards = graph(source, "split_then_merge")
    assert readable_shards(shards, {sid(0)}) == [sid(1), sid(2), sid(3)]
    assert readable_shards(shards, {sid(0), sid(2)}) == [sid(1), sid(3)]
    assert readable_shards(shards, {sid(0), sid(2), sid(3)}) == [sid(1), sid(4)]


def test_a_child_whose_parents_expired_from_the_listing_is_readable() -> None:
    shards = [s for s in graph("kinesalite-3.3.3", "merge_then_split") if s.shard_id != sid(2)]
    # 000 and 001 are still listed but are not 003's parents; 002 is past retention.
    assert readable_shards(shards, set()) == [sid(0), sid(1), sid(3), sid(4)]


def test_finished_shards_are_never_readable_again() -> None:
    shards = graph("moto-5.2.5", "split")
    everything = {s.shard_id for s in shards}
    assert readable_shards(shards, everything) == []
    assert waiting_shards(shards, everything) == []


def test_readable_shards_accepts_any_iterable_once() -> None:
    shards = graph("kinesalite-3.3.3", "split")
    assert readable_shards(iter(shards), {sid(0)}) == [sid(1), sid(2), sid(3)]


# ---- drained closed shards ---------------------------------------------------------------


def test_a_closed_shard_is_drained_once_read_up_to_its_ending_sequence_number() -> None:
    parent = graph("moto-5.2.5", "split")[0]  # closed, records 1..8
    assert parent.closed and parent.ending_sequence == "8"
    assert not drained_by_position(parent, "7")
    assert drained_by_position(parent, "8")
    assert not drained_by_position(parent, None)


def test_an_open_shard_is_never_drained() -> None:
    open_shard = graph("moto-5.2.5", "split")[1]
    assert not open_shard.closed
    assert not drained_by_position(open_shard, "10000")


def test_a_shard_closed_before_any_record_is_drained_without_a_position() -> None:
    # moto: a merge child split again before any write reached it.
    empty = graph("moto-5.2.5", "merge_then_split")[2]
    assert empty.closed and empty.ending_sequence == empty.starting_sequence == "0"
    assert drained_by_position(empty, None)


def test_real_sequence_numbers_compare_as_numbers_not_text() -> None:
    parent = graph("kinesalite-3.3.3", "split")[0]
    ending = int(parent.ending_sequence or 0)
    assert not drained_by_position(parent, str(ending - 1))
    assert drained_by_position(parent, str(ending))
    assert not drained_by_position(parent, parent.starting_sequence)
    assert not drained_by_position(parent, None)
    assert not drained_by_position(ShardInfo("s", (), "9", "10"), "9")
    assert drained_by_position(ShardInfo("s", (), "9", "10"), "10")


def test_a_checkpoint_is_keyed_by_stream_and_shard_and_round_trips() -> None:
    checkpoint = ShardCheckpoint(
        stream="feed",
        shardId=sid(3),
        sequenceNumber="49680649071105295300697532952493127979113668236288196610",
        finished=True,
        updated=datetime(2026, 10, 20, 12, tzinfo=UTC),
    )
    assert checkpoint.key == f"feed/{sid(3)}"
    assert ShardCheckpoint.model_validate_json(checkpoint.to_json()) == checkpoint


# ---- random reshard histories ------------------------------------------------------------

HASH_SPACE = 1 << 16


@dataclass
class _Shard:
    shard_id: str
    low: int
    high: int  # exclusive
    parents: tuple[str, ...]
    open: bool = True


@st.composite
def reshard_histories(draw: st.DrawFn) -> list[ShardInfo]:
    """A stream of 1-4 shards after up to 12 random splits and merges of open shards."""
    count = draw(st.integers(1, 4))
    step = HASH_SPACE // count
    shards = [
        _Shard(sid(i), i * step, HASH_SPACE if i == count - 1 else (i + 1) * step, ())
        for i in range(count)
    ]
    for _ in range(draw(st.integers(0, 12))):
        live = sorted((s for s in shards if s.open), key=lambda s: s.low)
        splittable = [s for s in live if s.high - s.low >= 2]
        adjacent = list(pairwise(live))
        kinds = (["split"] if splittable else []) + (["merge"] if adjacent else [])
        if not kinds:
            break
        if draw(st.sampled_from(kinds)) == "split":
            shard = draw(st.sampled_from(splittable))
            cut = draw(st.integers(shard.low + 1, shard.high - 1))
            shard.open = False
            shards.append(_Shard(sid(len(shards)), shard.low, cut, (shard.shard_id,)))
            shards.append(_Shard(sid(len(shards)), cut, shard.high, (shard.shard_id,)))
        else:
            left, right = draw(st.sampled_from(adjacent))
            left.open = right.open = False
            shards.append(
                _Shard(sid(len(shards)), left.low, right.high, (left.shard_id, right.shard_id))
            )
    return [
        ShardInfo(
            shard_id=s.shard_id,
            parents=s.parents,
            starting_sequence="1",
            ending_sequence=None if s.open else "100",
        )
        for s in shards
    ]


def ancestors(shards: Sequence[ShardInfo], shard_id: str) -> set[str]:
    by_id = {s.shard_id: s for s in shards}
    found: set[str] = set()
    todo = list(by_id[shard_id].parents)
    while todo:
        parent = todo.pop()
        if parent in by_id and parent not in found:
            found.add(parent)
            todo.extend(by_id[parent].parents)
    return found


@settings(max_examples=200, deadline=None)
@given(shards=reshard_histories(), data=st.data())
def test_any_reading_order_reads_every_shard_once_after_all_its_ancestors(
    shards: list[ShardInfo], data: st.DataObject
) -> None:
    order = read_in_some_order(shards, lambda readable: data.draw(st.sampled_from(readable)))
    assert sorted(order) == sorted(s.shard_id for s in shards)
    position = {shard_id: index for index, shard_id in enumerate(order)}
    for shard in shards:
        assert all(
            position[a] < position[shard.shard_id] for a in ancestors(shards, shard.shard_id)
        )


@settings(max_examples=200, deadline=None)
@given(shards=reshard_histories(), data=st.data())
def test_readable_waiting_and_finished_partition_the_shards(
    shards: list[ShardInfo], data: st.DataObject
) -> None:
    ids = [s.shard_id for s in shards]
    finished = set(data.draw(st.lists(st.sampled_from(ids), unique=True)))
    readable = set(readable_shards(shards, finished))
    waiting = set(waiting_shards(shards, finished))
    assert readable | waiting | finished == set(ids)
    assert not (readable & waiting) and not (readable & finished) and not (waiting & finished)
    by_id = {s.shard_id: s for s in shards}
    for shard_id in readable:
        assert all(parent in finished for parent in by_id[shard_id].parents)


@settings(max_examples=100, deadline=None)
@given(shards=reshard_histories(), data=st.data())
def test_shards_past_retention_never_block_their_children(
    shards: list[ShardInfo], data: st.DataObject
) -> None:
    # Retention drops the oldest shards first: cut the listing at some shard id.
    cut = data.draw(st.integers(0, len(shards)))
    listed = shards[cut:]
    order = read_in_some_order(listed, lambda readable: readable[0])
    assert sorted(order) == sorted(s.shard_id for s in listed)
    assert_parents_first(listed, order)
