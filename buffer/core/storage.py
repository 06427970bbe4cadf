"""TrajectoryStore: the trajectories of one shard, in FIFO order, and the slot of every step.

A slot is a small integer naming one stored step; the sampler keeps per-slot arrays indexed by it.
Slots freed by eviction are reused, so each slot also carries a `uid` that changes on every reuse:
a sample key is (uid << 32 | slot) and a key whose uid no longer matches names a step that is gone.

Not guaranteed:
- Thread safety (the shard's lock serializes callers).
- Slot numbers are not stable across a restart; neither are keys (a restored shard hands out new
  ones, and keys from before the restart are reported stale).
- Eviction is FIFO by insertion order only: no priority- or group-aware eviction.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from buffer.wire.schema import Trajectory

_SLOT_BITS = 32
_SLOT_MASK = (1 << _SLOT_BITS) - 1


@dataclass(eq=False)
class Record:
    traj: Trajectory
    slots: np.ndarray  # int64, one slot per step, in step order
    group: int = -1  # the group index (buffer/core/groups.py), -1 when groups are off


class TrajectoryStore:
    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._records: OrderedDict[str, Record] = OrderedDict()  # insertion order = FIFO order
        self._free: list[int] = []
        self._high = 0  # slots 0.._high-1 have been handed out at least once
        self._slot_record: list[Record | None] = []
        self._uid = np.zeros(1024, dtype=np.int64)
        self._step = np.zeros(1024, dtype=np.int64)  # slot -> index of its step in the trajectory
        self._next_uid = 1
        self.num_steps = 0

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, traj_id: str) -> bool:
        return traj_id in self._records

    def __iter__(self) -> Iterator[Record]:
        return iter(self._records.values())

    def get(self, traj_id: str) -> Record | None:
        return self._records.get(traj_id)

    def traj_ids(self) -> list[str]:
        return list(self._records)

    def records(self) -> list[Record]:
        """The stored records oldest first (a new list; the records themselves are shared)."""
        return list(self._records.values())

    def add(self, traj: Trajectory) -> tuple[Record, list[Record]]:
        """Store `traj` (its traj_id must be new). Returns its record and the evicted ones."""
        slots = self._allocate(len(traj.steps))
        record = Record(traj, slots)
        self._records[traj.traj_id] = record
        slot_record = self._slot_record
        for s in slots.tolist():
            slot_record[s] = record
        self.num_steps += len(slots)
        evicted = []
        while len(self._records) > self.capacity:
            _, old = self._records.popitem(last=False)
            self._release(old)
            evicted.append(old)
        return record, evicted

    def _allocate(self, k: int) -> np.ndarray:
        # Per-slot writes in Python: for a few steps they beat numpy's fancy indexing.
        n_free = min(k, len(self._free))
        slot_list = self._free[len(self._free) - n_free :]
        del self._free[len(self._free) - n_free :]
        fresh = k - n_free
        if fresh:
            start = self._high
            self._high += fresh
            self._slot_record.extend([None] * fresh)
            if self._high > len(self._uid):
                size = max(self._high, 2 * len(self._uid))
                self._uid = np.concatenate([self._uid, np.zeros(size - len(self._uid), dtype=np.int64)])
                self._step = np.concatenate([self._step, np.zeros(size - len(self._step), dtype=np.int64)])
            slot_list.extend(range(start, start + fresh))
        uid, step, next_uid = self._uid, self._step, self._next_uid
        for i, s in enumerate(slot_list):
            uid[s] = next_uid + i
            step[s] = i
        self._next_uid += k
        return np.array(slot_list, dtype=np.int64)

    def _release(self, record: Record) -> None:
        for s in record.slots.tolist():
            self._slot_record[s] = None
        self._uid[record.slots] = 0
        self._free.extend(reversed(record.slots.tolist()))
        self.num_steps -= len(record.slots)

    # --- slots and keys ---

    def record_of(self, slot: int) -> Record | None:
        return self._slot_record[slot] if 0 <= slot < self._high else None

    def step_indices(self, slots: np.ndarray) -> np.ndarray:
        return self._step[np.asarray(slots, dtype=np.int64)]

    def keys(self, slots: np.ndarray) -> np.ndarray:
        """Sample keys of `slots` (uint64 values in int64: uid << 32 | slot)."""
        slots = np.asarray(slots, dtype=np.int64)
        return (self._uid[slots] << _SLOT_BITS) | slots

    def resolve(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(slots, valid mask) for `keys`: invalid where the step was evicted or never existed."""
        keys = np.asarray(keys, dtype=np.int64)
        slots = keys & _SLOT_MASK
        uids = keys >> _SLOT_BITS
        inside = (slots >= 0) & (slots < self._high)
        valid = np.zeros(len(keys), dtype=bool)
        valid[inside] = (self._uid[slots[inside]] == uids[inside]) & (uids[inside] > 0)
        return slots, valid
