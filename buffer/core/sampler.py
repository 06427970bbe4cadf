"""PrioritizedSampler: which stored step to draw, with O(log n) sum trees.

Every step lives in a slot. Slot i holds its raw priority p_i, its policy version v_i and, in a
sum tree, the leaf e_i = p_i^α · r_i where r_i is the recency factor (buffer/core/recency.py). A draw
picks slot i with probability P(i) = e_i / Σe. A min tree over a_i = p_i^α (of slots that can be
drawn) gives the importance weight w_i = (min_a / a_i)^β ∈ (0, 1].

The weights undo the priorities, not the recency: recency (and the gate) define the distribution
the learner is meant to see, priorities only focus it. With q_i ∝ r_i the intended distribution,
(q_i / P(i))^β = (Σe / (a_i Σr))^β, which normalized by its largest value is (min_a / a_i)^β.

Not guaranteed:
- Thread safety (the shard's lock serializes callers).
- Draws are i.i.d. with replacement; a batch may repeat a slot.
- A priority of 0 makes a step undrawable (with α > 0), as does a recency factor of 0.
- Rebase and version-dependent recency recompute every leaf (O(capacity), vectorized).
"""

from __future__ import annotations

import numpy as np

from buffer.core.recency import Recency
from buffer.core.sumtree import MinTree, SumTree


class PrioritizedSampler:
    def __init__(
        self,
        alpha: float = 0.0,
        beta: float = 0.0,
        recency: Recency | None = None,
        initial_priority: float | None = None,
        capacity: int = 1024,
    ):
        self.alpha, self.beta = float(alpha), float(beta)
        self.recency = recency or Recency()
        self.initial_priority = initial_priority
        self.max_priority = 1.0  # largest priority ever set; new steps get it when initial is None
        self.newest = 0  # V: the newest policy version known
        self.rebuilds = 0  # full recomputes of every leaf (rebases, version advances)
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        if not hasattr(self, "_st_slots"):
            self._st_slots: list[int] = []
            self._st_version: list[int] = []
            self._st_prio: list[float] = []
            self._st_live: list[bool] = []
        self._prio = np.zeros(capacity, dtype=np.float64)
        self._version = np.zeros(capacity, dtype=np.int64)
        self._live = np.zeros(capacity, dtype=bool)
        self._sum = SumTree(capacity)
        self._min = MinTree(capacity)

    @property
    def capacity(self) -> int:
        return len(self._prio)

    def ensure_capacity(self, n_slots: int) -> None:
        """Make room for slots 0..n_slots-1 (doubling, keeps everything)."""
        if n_slots <= self.capacity:
            return
        new = self.capacity
        while new < n_slots:
            new *= 2
        prio, version, live = self._prio, self._version, self._live
        self._alloc(new)
        n = len(prio)
        self._prio[:n], self._version[:n], self._live[:n] = prio, version, live
        self._recompute_all()

    # --- writes ---
    # add() and remove() only stage their slots (a few list appends); the next read applies
    # everything staged in one vectorized pass. Inserting one trajectory at a time is then not
    # a dozen small numpy calls each.

    def add(self, slots: np.ndarray | list[int], versions: np.ndarray | list[int], priority: float | np.ndarray | None = None) -> None:
        """Make `slots` drawable with `priority` (one value, one per slot, or the default)."""
        slots = slots.tolist() if isinstance(slots, np.ndarray) else list(slots)
        versions = versions.tolist() if isinstance(versions, np.ndarray) else list(versions)
        k = len(slots)
        if priority is None or isinstance(priority, (int, float)):
            p = float(self.default_priority() if priority is None else priority)
            self._st_prio.extend([p] * k)
            self.max_priority = max(self.max_priority, p)
        else:
            p_arr = np.asarray(priority, dtype=np.float64)
            self._st_prio.extend(p_arr.tolist())
            self.max_priority = max(self.max_priority, float(p_arr.max()))
        self._st_slots.extend(slots)
        self._st_version.extend(versions)
        self._st_live.extend([True] * k)
        newest = max(versions)
        if newest > self.newest:
            self.set_newest(newest)  # may recompute every leaf, these included

    def default_priority(self) -> float:
        return self.max_priority if self.initial_priority is None else self.initial_priority

    def remove(self, slots: np.ndarray) -> None:
        slots = np.asarray(slots, dtype=np.int64).tolist()
        k = len(slots)
        self._st_slots.extend(slots)
        self._st_version.extend([0] * k)
        self._st_prio.extend([0.0] * k)
        self._st_live.extend([False] * k)

    def _apply_staged(self) -> None:
        if not self._st_slots:
            return
        slots = np.array(self._st_slots, dtype=np.int64)
        versions = np.array(self._st_version, dtype=np.int64)
        prios = np.array(self._st_prio, dtype=np.float64)
        live = np.array(self._st_live, dtype=bool)
        self._st_slots, self._st_version, self._st_prio, self._st_live = [], [], [], []
        # A slot may be staged more than once (added, evicted, reused): its last event wins.
        _, first_from_end = np.unique(slots[::-1], return_index=True)
        last = len(slots) - 1 - first_from_end
        slots, versions, prios, live = slots[last], versions[last], prios[last], live[last]
        self.ensure_capacity(int(slots.max()) + 1)
        self._prio[slots[live]] = prios[live]
        self._version[slots[live]] = versions[live]
        self._live[slots] = live
        self._write(slots)

    def update(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        """Set new raw priorities (finite, >= 0; the caller validates)."""
        self._apply_staged()
        slots = np.asarray(slots, dtype=np.int64)
        priorities = np.asarray(priorities, dtype=np.float64)
        if slots.size == 0:
            return
        self._prio[slots] = priorities
        self.max_priority = max(self.max_priority, float(priorities.max()))
        self._write(slots)

    def set_newest(self, version: int) -> bool:
        """Advance V (never moves back). Returns True when every leaf was recomputed."""
        if version <= self.newest:
            return False
        self.newest = int(version)
        if self.recency.needs_rebase(self.newest):
            self.recency.ref = self.newest
        elif not self.recency.depends_on_version:
            return False  # γ^(ref − v) leaves stay valid as V advances
        self._recompute_all()
        return True

    def _leaf(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = self._prio[slots] ** self.alpha
        e = a * self.recency.factors(self._version[slots], self.newest) * self._live[slots]
        return a, e

    def _write(self, slots: np.ndarray) -> None:
        a, e = self._leaf(slots)
        self._sum[slots] = e
        self._min[slots] = np.where(e > 0, a, np.inf)

    def _recompute_all(self) -> None:
        self._apply_staged()
        a, e = self._leaf(np.arange(self.capacity))
        self._sum.set_all(e)
        self._min.set_all(np.where(e > 0, a, np.inf))
        self.rebuilds += 1

    # --- reads ---

    @property
    def total(self) -> float:
        """Σe in stored units (scaled by γ^(ref − V) when the exponential form is on)."""
        self._apply_staged()
        return self._sum.total

    def mass(self) -> float:
        """Σ p^α · γ^(V − v) · (other factors): comparable across shards at the same V."""
        return self.total * self.recency.scale_to(self.newest)

    def min_a(self) -> float:
        """Smallest p^α among drawable slots (inf when none)."""
        self._apply_staged()
        return self._min.min

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(slots, probabilities, importance weights) of n i.i.d. draws; empty arrays when
        nothing is drawable."""
        total = self.total
        if not total > 0:
            empty = np.zeros(0)
            return empty.astype(np.int64), empty, empty
        slots = self._sum.sample(n, rng)
        e = self._sum[slots]
        probs = e / total
        if self.beta == 0.0:
            weights = np.ones(n)
        else:
            a = self._prio[slots] ** self.alpha
            weights = (self.min_a() / a) ** self.beta
        return slots, probs, weights

    def leaf_values(self, slots: np.ndarray) -> np.ndarray:
        self._apply_staged()
        return self._sum[np.asarray(slots, dtype=np.int64)]

    def recency_values(self, slots: np.ndarray) -> np.ndarray:
        self._apply_staged()
        slots = np.asarray(slots, dtype=np.int64)
        return self.recency.factors(self._version[slots], self.newest) * self._live[slots]

    def a_values(self, slots: np.ndarray) -> np.ndarray:
        self._apply_staged()
        return self._prio[np.asarray(slots, dtype=np.int64)] ** self.alpha

    def priorities(self, slots: np.ndarray) -> np.ndarray:
        self._apply_staged()
        return self._prio[np.asarray(slots, dtype=np.int64)].copy()

    def versions(self, slots: np.ndarray) -> np.ndarray:
        self._apply_staged()
        return self._version[np.asarray(slots, dtype=np.int64)]

    def snapshot_priorities(self) -> np.ndarray:
        """A copy of every slot's raw priority (for a snapshot taken off-thread)."""
        self._apply_staged()
        return self._prio.copy()
