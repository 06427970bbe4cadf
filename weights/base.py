"""The one interface of every weight sender: learner rank 0's side of one kind of weight sync.

A sender is made for one wiring (by `weights.factory.make_sender`) and holds what that wiring
needs: the actors, the weight group, the group's generation, its layout and buffers. So the
plane makes one call whatever the engines are: `sync(version)`, and `close()` when the wiring
changes (a new group after a failure) or the run ends.

NOT guaranteed: thread safety (one thread syncs); that a sender is usable after a failed
`sync` (the plane closes it and makes a new one); that `sync` works after `close`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class WeightSender(ABC):
    @abstractmethod
    def sync(self, version: int) -> int:
        """Send the policy as `version` to every engine and wait until they took it; returns
        the bytes this sync sent (a sender may report more in its own attributes)."""

    @abstractmethod
    def close(self) -> None:
        """Release what this sender opened or allocated (buffers, groups of its own).
        Idempotent. A weight group it was handed stays open: whoever opened it aborts it."""
