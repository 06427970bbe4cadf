"""Meters for a shard's monitoring stats: event rates over a sliding window, running means.

Not guaranteed: rates are approximate (one-second buckets, so a rate read right after a burst
spreads it over the bucket), and use the monotonic clock of the process that records them.
"""

from __future__ import annotations

import time
from collections import deque


class RateMeter:
    """Events per second over the last `window_s` seconds (whole one-second buckets)."""

    def __init__(self, window_s: float = 10.0, clock=time.monotonic):
        self.window_s = window_s
        self._clock = clock
        self._buckets: deque[list[float]] = deque()  # [second, count]
        self._start = clock()
        self.total = 0

    def add(self, n: int = 1) -> None:
        now = int(self._clock())
        if self._buckets and self._buckets[-1][0] == now:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([now, n])
        self.total += n
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._buckets and self._buckets[0][0] <= now - self.window_s:
            self._buckets.popleft()

    def rate(self) -> float:
        now = self._clock()
        self._trim(int(now))
        span = min(self.window_s, max(now - self._start, 1e-9))
        return sum(c for _, c in self._buckets) / span


class RunningMean:
    """Mean of every value added, and of the last batch."""

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.last = None

    def add_batch(self, values) -> None:
        values = [float(v) for v in values]
        if not values:
            return
        self.count += len(values)
        self.sum += sum(values)
        self.last = sum(values) / len(values)

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None
