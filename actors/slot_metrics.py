"""Slot states of one rollout actor — generating / waiting_page / idle, like WebGym's task
monitor — and the slot-seconds spent in each state (where the time goes).

The actor's stats() carries both (`slots_<state>`, `slot_s_<state>`); the launcher exports them
as Ray metrics with every other figure (launch/metrics.py), so this class records nothing itself.

NOT guaranteed: the time between two observe() calls is charged to the counts seen at the first.
"""

from __future__ import annotations

import time

STATES = ("generating", "waiting_page", "idle")


class SlotMetrics:
    def __init__(self, actor_id: str):
        self.actor_id = actor_id
        self.counts = dict.fromkeys(STATES, 0)
        self.slot_seconds = dict.fromkeys(STATES, 0.0)
        self._since = time.monotonic()

    def observe(self, counts: dict[str, int], now: float | None = None) -> None:
        """Record the current counts; the previous ones held since the last call."""
        now = time.monotonic() if now is None else now
        dt, self._since = now - self._since, now
        for state in STATES:
            self.slot_seconds[state] += dt * self.counts[state]
        self.counts = {s: int(counts.get(s, 0)) for s in STATES}
