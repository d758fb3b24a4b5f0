"""Which offset a relay may commit: each partition's records read and still held.

**Offsets.** Each partition's read records are kept in an ``OffsetWindow`` while a parcel
stands for them; the offset committed is that of the oldest record still held (or the one
after the last read). A lane waiting for hours therefore keeps its records' partitions from
being committed past them, while later records of other lanes are delivered meanwhile: a
restart or a rebalance reads again from the oldest undelivered record, repeating what other
lanes delivered after it (at least once) and losing nothing.

A parcel (``lanes.Parcel``) stands for its records by their ``Sources``: the lowest offset
of each partition. A newer parcel replacing a held one takes over the ``earliest`` of both,
so the commit cannot pass the older record before the newer is delivered.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Collection

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

Sources = tuple[tuple[TopicPartition, int], ...]


class OffsetWindow:
    """One partition's records read and still held, by offset (in the order read), with how
    many parcels hold each and when it was written."""

    __slots__ = ("next", "open")

    def __init__(self) -> None:
        self.open: OrderedDict[int, list[float]] = OrderedDict()  # offset -> [holders, at]
        self.next: int | None = None

    def read(self, offset: int, at: float) -> None:
        self.open[offset] = [0, at]
        self.next = offset + 1

    def hold(self, offset: int) -> None:
        self.open[offset][0] += 1

    def release(self, offset: int) -> None:
        entry = self.open.get(offset)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] <= 0:
            del self.open[offset]

    def unless_held(self, offset: int) -> None:
        """Forget a record just read that no parcel holds."""
        entry = self.open.get(offset)
        if entry is not None and entry[0] <= 0:
            del self.open[offset]

    def commit_point(self) -> int | None:
        """The offset to commit: the oldest held record's, else the one after the last read."""
        return next(iter(self.open), self.next)

    def oldest(self) -> float | None:
        for entry in self.open.values():
            return entry[1]
        return None


def earliest(first: Sources, second: Sources) -> Sources:
    lowest: dict[TopicPartition, int] = {}
    for tp, offset in (*first, *second):
        if tp not in lowest or offset < lowest[tp]:
            lowest[tp] = offset
    return tuple(lowest.items())


class Offsets:
    """A relay's windows, one per partition read: what the parcels hold, what to commit."""

    __slots__ = ("windows",)

    def __init__(self) -> None:
        self.windows: dict[TopicPartition, OffsetWindow] = {}

    def window(self, tp: TopicPartition) -> OffsetWindow:
        return self.windows.setdefault(tp, OffsetWindow())

    @staticmethod
    def read(window: OffsetWindow, record: ConsumerRecord) -> None:
        """A record read, written when its timestamp says (else now)."""
        stamp = record.timestamp
        window.read(record.offset, stamp / 1000 if stamp and stamp > 0 else time.time())

    def hold(self, sources: Sources) -> None:
        for tp, offset in sources:
            self.windows[tp].hold(offset)

    def release(self, sources: Sources) -> None:
        for tp, offset in sources:
            window = self.windows.get(tp)
            if window is not None:
                window.release(offset)

    def partitions(self) -> list[TopicPartition]:
        return list(self.windows)

    def drop(self, partitions: Collection[TopicPartition]) -> None:
        for tp in partitions:
            self.windows.pop(tp, None)

    def commit_points(self) -> dict[TopicPartition, int]:
        points = {tp: window.commit_point() for tp, window in self.windows.items()}
        return {tp: point for tp, point in points.items() if point is not None}

    def oldest_undelivered(self) -> float | None:
        """When the oldest record read and not yet delivered was written."""
        times = [at for window in self.windows.values() if (at := window.oldest()) is not None]
        return min(times, default=None)
