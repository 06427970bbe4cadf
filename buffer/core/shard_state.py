"""ShardState: the parts a replay shard is made of, built from its ReplayConfig, with the counts
kept beside them; how a trajectory is stored (FIFO eviction through every part); lookups; and the
public methods a rebuild sets the state through (buffer/durability/restore.py drives them).

Nothing here decodes, filters, gates, waits on the limiter or logs: ReplayShard (buffer/core/shard.py)
is this state with the insert, sample and durability paths around it.

Not guaranteed: thread safety (callers serialize access, as for ReplayShard).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

from buffer.core.config import ReplayConfig
from buffer.core.groups import GroupIndex
from buffer.core.limiter import RateLimiter
from buffer.core.meters import RateMeter, RunningMean
from buffer.core.recency import Recency
from buffer.core.sampler import PrioritizedSampler
from buffer.core.storage import TrajectoryStore
from buffer.wire.schema import Trajectory


class ShardState:
    def __init__(self, cfg: ReplayConfig):
        self.config = cfg
        self.capacity, self.success_only, self.max_frame_bytes = cfg.capacity, cfg.success_only, cfg.max_frame_bytes
        self.store = TrajectoryStore(cfg.capacity)
        self.recency = Recency(cfg.recency_gamma, cfg.recency_power, cfg.recency_window, cfg.max_staleness, cfg.rebase_every)
        self.sampler = PrioritizedSampler(cfg.alpha, cfg.beta, self.recency, cfg.initial_priority)
        self.limiter = (
            RateLimiter(cfg.samples_per_insert, cfg.min_size_to_sample, cfg.error_buffer)
            if cfg.samples_per_insert is not None
            else None
        )
        self.groups = GroupIndex(cfg.group_size) if cfg.group_size is not None else None
        self.counters: Counter[str] = Counter()
        self._filtered: Counter[str] = Counter()
        self._filtered_steps: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        self._insert_rate, self._sample_rate = RateMeter(), RateMeter()
        self._staleness = RunningMean()

    def __len__(self) -> int:
        return len(self.store)

    @property
    def num_steps(self) -> int:
        return self.store.num_steps

    @property
    def policy_version(self) -> int:
        return self.sampler.newest

    def _store(self, traj: Trajectory, priority: float | np.ndarray) -> None:
        """Store `traj` (priority: one for every step, or one per step), evicting the oldest
        trajectories when full, through every part; counted as stored."""
        record, evicted = self.store.add(traj)
        for old in evicted:
            self.sampler.remove(old.slots)
            if self.groups is not None:
                self.groups.remove(old)
            if self.limiter is not None:
                self.limiter.on_delete(len(old.slots))
        self.sampler.add(record.slots, [s.policy_version for s in traj.steps], priority)
        if self.groups is not None:
            self.groups.add(record)
        if self.limiter is not None:
            self.limiter.on_insert(len(record.slots))
        c = self.counters
        c["stored"] += 1
        c["stored_steps"] += len(record.slots)
        c["evicted"] += len(evicted)
        self._insert_rate.add()

    # --- lookups ---

    def priorities_of(self, traj_id: str) -> np.ndarray | None:
        record = self.store.get(traj_id)
        return None if record is None else self.sampler.priorities(record.slots)

    def get(self, traj_id: str) -> Trajectory | None:
        record = self.store.get(traj_id)
        return None if record is None else record.traj

    def traj_ids(self) -> list[str]:
        """Stored traj_ids, oldest first."""
        return self.store.traj_ids()

    def priority_mass(self) -> float:
        return self.sampler.mass()

    # --- restore: buffer/durability/restore.py rebuilds a shard through these; none is logged ---

    def snapshot_header(self) -> dict[str, Any]:
        """The state a snapshot carries beside its trajectories (load_header reads it back)."""
        return {
            "counters": dict(self.counters),
            "filtered": dict(self._filtered),
            "filtered_steps": dict(self._filtered_steps),
            "rejected": dict(self._rejected),
            "newest": self.sampler.newest,
            "ref": self.recency.ref,
            "max_priority": self.sampler.max_priority,
            "limiter": self.limiter.state() if self.limiter is not None else None,
        }

    def load_header(self, header: dict[str, Any], trajectories: Iterable[tuple[Trajectory, np.ndarray]] = ()) -> None:
        """Come back to a snapshot of this shard: its header's counters, filter counts and sampler
        state, its `trajectories` (with their step priorities, oldest first) stored silently, for
        the header's counters already count them, then the limiter's counts."""
        self.counters.update(header.get("counters", {}))
        self._filtered.update(header.get("filtered", {}))
        self._filtered_steps.update(header.get("filtered_steps", {}))
        self._rejected.update(header.get("rejected", {}))
        self.restore_sampler(newest=int(header.get("newest", 0)), ref=int(header.get("ref", 0)),
                             max_priority=float(header.get("max_priority", 1.0)))
        saved = Counter(self.counters)
        for traj, priorities in trajectories:
            self._store(traj, priorities)
        self.counters = saved
        if self.limiter is not None:
            self.limiter.restore(header.get("limiter") or {})

    def store_restored(self, traj: Trajectory, priorities: float | np.ndarray, *, count_insert: bool = False) -> None:
        """Store `traj` as it is, with its priorities: no filter, gate, limiter wait or log. It
        counts as stored (and with `count_insert` as an insert request, a logged insert's replay)."""
        if count_insert:
            self.counters["inserts"] += 1
        self._store(traj, priorities)

    def restore_sampler(self, *, newest: int | None = None, ref: int | None = None, max_priority: float | None = None) -> None:
        """Set what a restore found: the recency reference, the newest policy version (it never
        moves back) and the largest priority seen; None leaves one as it is."""
        if ref is not None:
            self.recency.ref = ref
        if newest is not None:
            self.sampler.set_newest(newest)
        if max_priority is not None:
            self.sampler.max_priority = max_priority

    def restore_step_priorities(self, traj_ids: list[str], steps: list[int], priorities: list[float]) -> None:
        """Set the priority of step `steps[i]` of `traj_ids[i]`; steps no longer stored are skipped."""
        for traj_id, step, p in zip(traj_ids, steps, priorities):
            record = self.store.get(traj_id)
            if record is not None and step < len(record.slots):
                self.sampler.update(record.slots[step : step + 1], np.array([p]))

    def restore_sample_counts(self, samples: int, limiter_samples: int | None) -> None:
        """The steps ever sampled, in the counters and (when given) in the limiter."""
        self.counters["samples"] = samples
        if self.limiter is not None and limiter_samples is not None:
            self.limiter.samples = limiter_samples

    def finish_restore(self) -> None:
        """After a rebuild: count what it restored; the ingest meter starts afresh (replayed
        inserts are not ingest)."""
        self.counters["restored_trajectories"] = len(self.store)
        self._insert_rate = RateMeter()
