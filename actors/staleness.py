"""AReaL-style staleness control: a rollout actor does not start an episode that would be more
than `max_staleness` policy versions old by the time the learner can consume it.

An episode started now is tagged with the engine's version v. The learner is at version L (the
highest it announced: `set_learner_version`, or the version carried by a weight update) and
advances at r versions/s: measured between announcements and smoothed, but never taken above
1 / (seconds since the last announcement), so a learner that went quiet stops counting as
fast and a gate closed by its pace opens again. When the episode finishes,
some `d` seconds from now (the mean duration of recent episodes), the learner will be at about
L + lag with lag = floor(r · d). The gate admits the episode iff

    L + lag - v <= max_staleness

so it closes when the engine falls behind the learner (weights not yet received) or when
episodes take long against the learner's pace, and opens again when new weights arrive.

NOT guaranteed: the age at the moment the learner samples it — time a trajectory waits in
replay is not counted (the buffer's own staleness gate covers that); the rate is an estimate
from the past; an episode already running is never stopped.
"""

from __future__ import annotations

import math
import time

SMOOTHING = 0.2  # weight of the newest sample in the running means


class StalenessGate:
    def __init__(self, max_staleness: int | None):
        self.max_staleness = max_staleness
        self.learner_version = 0
        self._rate = 0.0  # learner versions per second
        self._episode_s = 0.0
        self._last: tuple[int, float] | None = None  # (version, time) of the last announcement

    def announce(self, version: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._last is not None and version > self._last[0] and now > self._last[1]:
            rate = (version - self._last[0]) / (now - self._last[1])
            self._rate = rate if self._rate == 0.0 else (1 - SMOOTHING) * self._rate + SMOOTHING * rate
        if self._last is None or version > self._last[0]:
            self._last = (version, now)
        self.learner_version = max(self.learner_version, version)

    def episode_finished(self, seconds: float) -> None:
        self._episode_s = seconds if self._episode_s == 0.0 else (1 - SMOOTHING) * self._episode_s + SMOOTHING * seconds

    def lag(self, now: float | None = None) -> int:
        """Learner versions expected to pass while one episode runs."""
        if self._last is None or self._rate == 0.0:
            return 0
        now = time.monotonic() if now is None else now
        quiet = now - self._last[1]
        rate = self._rate if quiet <= 0 else min(self._rate, 1.0 / quiet)
        return math.floor(rate * self._episode_s)

    def expected_age(self, engine_version: int, now: float | None = None) -> int:
        return self.learner_version + self.lag(now) - engine_version

    def admits(self, engine_version: int, now: float | None = None) -> bool:
        return self.max_staleness is None or self.expected_age(engine_version, now) <= self.max_staleness
