"""Slot states of one rollout actor — generating / waiting_page / idle, like WebGym's task
monitor — as Ray metrics, and as slot-seconds spent in each state (where the time goes).

Gauge `flywheel_actor_slots{actor, state}`; Ray drops a gauge that is not set for ~30 s, so
`report()` re-sets every state at most every `every_s` seconds even when nothing changed.

NOT guaranteed: a value between two reports; outside a Ray worker the gauge records nowhere
(the counts are still kept for stats()).
"""

from __future__ import annotations

import time

from ray.util.metrics import Gauge

STATES = ("generating", "waiting_page", "idle")


class SlotMetrics:
    def __init__(self, actor_id: str, every_s: float = 5.0):
        self.actor_id, self.every_s = actor_id, every_s
        self.counts = dict.fromkeys(STATES, 0)
        self.slot_seconds = dict.fromkeys(STATES, 0.0)
        self._gauge = Gauge("flywheel_actor_slots", description="rollout slots by state",
                            tag_keys=("actor", "state"))
        self._since = time.monotonic()
        self._reported = 0.0

    def observe(self, counts: dict[str, int], now: float | None = None) -> None:
        """Record the current counts; the previous ones held since the last call."""
        now = time.monotonic() if now is None else now
        dt, self._since = now - self._since, now
        for state in STATES:
            self.slot_seconds[state] += dt * self.counts[state]
        self.counts = {s: int(counts.get(s, 0)) for s in STATES}
        if now - self._reported >= self.every_s:
            self.report(now)

    def report(self, now: float | None = None) -> None:
        self._reported = time.monotonic() if now is None else now
        for state in STATES:
            self._gauge.set(self.counts[state], tags={"actor": self.actor_id, "state": state})
