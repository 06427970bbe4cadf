"""GroupIndex: GRPO groups (trajectories sharing a group_id), drawn whole and only when complete.

A group is complete when `group_size` of its trajectories are stored. Complete groups have a leaf
in their own sum tree: the mean over the group's steps of the step leaves e_i = p_i^α · r_i, or 0
when any of its steps has recency 0 (older than the window or past the staleness gate). Its
importance weight is (min_A / A_g)^β with A_g the mean of p_i^α over its steps, as for steps.

Not guaranteed:
- Groups whose members were filtered at insert (e.g. success_only) never complete; use group
  sampling with the filters that keep every episode.
- FIFO eviction removes trajectories, not groups: a group that loses a member to eviction stops
  being drawable; its other members stay (and can still be drawn as steps).
- Leaves are refreshed lazily before a group draw: O(touched groups · group steps), or O(n)
  vectorized after the step leaves were all recomputed (version advance, rebase).
- A group with more than group_size members (distinct traj_ids) is drawn with all of them.
"""

from __future__ import annotations

import numpy as np

from buffer.core.sampler import PrioritizedSampler
from buffer.core.storage import Record
from buffer.core.sumtree import MinTree, SumTree


class GroupIndex:
    def __init__(self, group_size: int):
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self.group_size = group_size
        self._ids: dict[str, int] = {}
        self._group_ids: list[str | None] = []
        self._members: list[list[Record]] = []
        self._free: list[int] = []
        self._complete = np.zeros(64, dtype=bool)
        self._sum, self._min = SumTree(64), MinTree(64)
        self._slot_group = np.full(1024, -1, dtype=np.int64)  # complete groups only
        self._dirty: set[int] = set()
        self._seen_rebuilds = -1

    @property
    def num_complete(self) -> int:
        return int(self._complete.sum())

    def __len__(self) -> int:
        return len(self._ids)

    def members(self, g: int) -> list[Record]:
        return list(self._members[g])

    def group_id(self, g: int) -> str | None:
        return self._group_ids[g]

    def add(self, record: Record) -> None:
        g = self._ids.get(record.traj.group_id)
        if g is None:
            g = self._new_group(record.traj.group_id)
        record.group = g
        self._members[g].append(record)
        if self._complete[g]:
            self._mark(record.slots, g)
        elif len(self._members[g]) >= self.group_size:
            self._complete[g] = True
            for r in self._members[g]:
                self._mark(r.slots, g)
        self._dirty.add(g)

    def remove(self, record: Record) -> None:
        g = record.group
        if g < 0:
            return
        members = self._members[g]
        members.remove(record)
        self._slot_group[record.slots] = -1
        if self._complete[g] and len(members) < self.group_size:
            self._complete[g] = False
            for r in members:
                self._slot_group[r.slots] = -1
        self._sum[g], self._min[g] = 0.0, np.inf
        self._dirty.add(g)
        if not members:
            del self._ids[self._group_ids[g]]
            self._group_ids[g] = None
            self._free.append(g)
            self._dirty.discard(g)

    def touch_slots(self, slots: np.ndarray) -> None:
        """Priorities of these steps changed: refresh their groups before the next draw."""
        slots = np.asarray(slots, dtype=np.int64)
        slots = slots[slots < len(self._slot_group)]
        gs = self._slot_group[slots]
        self._dirty.update(gs[gs >= 0].tolist())

    def _new_group(self, group_id: str) -> int:
        if self._free:
            g = self._free.pop()
            self._group_ids[g] = group_id
            self._members[g] = []
        else:
            g = len(self._members)
            self._members.append([])
            self._group_ids.append(group_id)
            if g >= len(self._complete):
                n = 2 * len(self._complete)
                self._complete = np.concatenate([self._complete, np.zeros(n - len(self._complete), bool)])
                self._sum, self._min = self._sum.grown(n), self._min.grown(n)
        self._ids[group_id] = g
        return g

    def _mark(self, slots: np.ndarray, g: int) -> None:
        need = int(slots.max()) + 1
        if need > len(self._slot_group):
            grown = np.full(max(need, 2 * len(self._slot_group)), -1, dtype=np.int64)
            grown[: len(self._slot_group)] = self._slot_group
            self._slot_group = grown
        self._slot_group[slots] = g

    # --- leaves ---

    def refresh(self, sampler: PrioritizedSampler) -> None:
        if sampler.rebuilds != self._seen_rebuilds:
            self._seen_rebuilds = sampler.rebuilds
            self._recompute(sampler, None)
        elif self._dirty:
            self._recompute(sampler, np.fromiter(self._dirty, dtype=np.int64))
        self._dirty.clear()

    def _recompute(self, sampler: PrioritizedSampler, groups: np.ndarray | None) -> None:
        n_groups = len(self._complete)
        if groups is None:
            slots = np.flatnonzero(self._slot_group >= 0)
            groups = np.arange(n_groups)
        else:
            slots = np.concatenate([r.slots for g in groups.tolist() for r in self._members[g]] or [np.zeros(0, np.int64)])
            slots = slots[self._slot_group[slots] >= 0]
        gid = self._slot_group[slots]
        e = sampler.leaf_values(slots)
        a = sampler.a_values(slots)
        gated = sampler.recency_values(slots) == 0
        count = np.bincount(gid, minlength=n_groups)[groups]
        e_mean = np.bincount(gid, weights=e, minlength=n_groups)[groups] / np.maximum(count, 1)
        a_mean = np.bincount(gid, weights=a, minlength=n_groups)[groups] / np.maximum(count, 1)
        any_gated = np.bincount(gid, weights=gated, minlength=n_groups)[groups] > 0
        ok = self._complete[groups] & (count > 0) & ~any_gated & (e_mean > 0)
        self._sum[groups] = np.where(ok, e_mean, 0.0)
        self._min[groups] = np.where(ok, a_mean, np.inf)

    def mass(self, sampler: PrioritizedSampler) -> float:
        self.refresh(sampler)
        return self._sum.total * sampler.recency.scale_to(sampler.newest)

    def min_a(self, sampler: PrioritizedSampler) -> float:
        """Smallest A_g (mean p^α of a group's steps) among drawable groups (inf when none)."""
        self.refresh(sampler)
        return self._min.min

    def sample(self, n: int, rng: np.random.Generator, sampler: PrioritizedSampler, beta: float):
        """(group indices, probabilities, importance weights); empty arrays when none is drawable."""
        self.refresh(sampler)
        total = self._sum.total
        if not total > 0:
            empty = np.zeros(0)
            return empty.astype(np.int64), empty, empty
        groups = self._sum.sample(n, rng)
        probs = self._sum[groups] / total
        if beta == 0.0:
            return groups, probs, np.ones(n)
        a = self._min[groups]
        return groups, probs, (self._min.min / a) ** beta
