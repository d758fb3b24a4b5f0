"""A worker's recent activity for the operator's console: records applied per second and the
lag of each partition it owns, over the last minutes. No I/O: the app samples into it."""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any

# Five minutes of one-second rate samples and five-second lag samples.
RATE_SAMPLES = 300
LAG_SAMPLES = 60


class ActivityLog:
    def __init__(self) -> None:
        self._totals: deque[tuple[float, int]] = deque(maxlen=RATE_SAMPLES + 1)
        self._lag: deque[tuple[float, dict[str, int]]] = deque(maxlen=LAG_SAMPLES)

    def sample_records(self, now: float, applied_total: int) -> None:
        """The total of records applied so far, at ``now`` (epoch seconds)."""
        self._totals.append((now, applied_total))

    def sample_lag(self, now: float, lag: dict[int, int]) -> None:
        """Messages behind the end of each owned score partition, at ``now``."""
        self._lag.append((now, {str(partition): behind for partition, behind in lag.items()}))

    def rates(self) -> list[dict[str, float]]:
        """Records applied per second between consecutive samples, oldest first."""
        samples = list(self._totals)
        out = []
        for (t0, n0), (t1, n1) in itertools.pairwise(samples):
            if t1 > t0:
                out.append({"at": t1, "perSecond": round(max(n1 - n0, 0) / (t1 - t0), 1)})
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "rates": self.rates(),
            "lag": [{"at": at, "partitions": lag} for at, lag in self._lag],
        }
