"""ReplayShard: the storage and bookkeeping of one replay shard, with no networking.

Thin version (issue 2): uniform sampling of steps, FIFO eviction of whole trajectories, a
success-only filter. Priorities, recency weighting, rate limiting and persistence come later.

Not guaranteed:
- Thread safety: callers serialize access (ShardServer holds a lock around every call).
- Durability: everything lives in memory and is gone when the process ends.
- Idempotence on traj_id holds only while the first copy is stored: once evicted, the same
  traj_id is stored again. A duplicate of a filtered trajectory is filtered (and counted) again.
- Sampling cost: O(stored trajectories) for the first sample after an insert or eviction.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any

import numpy as np

from buffer.schema import DEFAULT_MAX_FRAME_BYTES, Trajectory, WireError, decode

SUCCESS_ONLY = "success_only"


class ReplayShard:
    def __init__(
        self,
        capacity: int,
        success_only: bool = False,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ):
        """capacity: most trajectories kept; the oldest stored is evicted first."""
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.success_only = success_only
        self.max_frame_bytes = max_frame_bytes
        self._trajs: OrderedDict[str, Trajectory] = OrderedDict()  # insertion order = FIFO order
        self._num_steps = 0
        self._index: tuple[list[Trajectory], np.ndarray] | None = None  # (trajs, cumulative steps)
        self._inserts = 0
        self._stored = 0
        self._stored_steps = 0  # steps ever stored (the rate limiter's insert count)
        self._duplicates = 0
        self._evicted = 0
        self._samples = 0
        self._filtered: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._trajs)

    @property
    def num_steps(self) -> int:
        return self._num_steps

    def insert(self, frame: bytes) -> dict[str, Any]:
        """Decode, filter and store one frame. Returns the contract's insert reply map.

        `seq` is this shard's running count of insert requests, this one included.
        """
        self._inserts += 1
        reply: dict[str, Any] = {
            "status": "error",
            "traj_id": None,
            "filter": None,
            "error": None,
            "detail": None,
            "seq": self._inserts,
        }
        try:
            traj = decode(frame, self.max_frame_bytes)
        except WireError as err:
            self._rejected[err.code] += 1
            reply.update(traj_id=err.traj_id, error=err.code, detail=str(err))
            return reply
        reply["traj_id"] = traj.traj_id
        if traj.traj_id in self._trajs:
            self._duplicates += 1
            reply.update(status="stored", detail="duplicate")
            return reply
        if self.success_only and not traj.success:
            self._filtered[SUCCESS_ONLY] += 1
            reply.update(status="filtered", filter=SUCCESS_ONLY)
            return reply
        self._store(traj)
        reply["status"] = "stored"
        return reply

    def _store(self, traj: Trajectory) -> None:
        self._trajs[traj.traj_id] = traj
        self._num_steps += len(traj.steps)
        self._stored += 1
        self._stored_steps += len(traj.steps)
        while len(self._trajs) > self.capacity:
            _, old = self._trajs.popitem(last=False)
            self._num_steps -= len(old.steps)
            self._evicted += 1
        self._index = None

    def sample(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        """n steps drawn uniformly over all stored steps, with replacement; [] when empty.

        Items are the contract's sample maps (arrays as little-endian bytes).
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not self._trajs:
            return []
        if self._index is None:
            trajs = list(self._trajs.values())
            self._index = (trajs, np.cumsum([len(t.steps) for t in trajs]))
        trajs, cum = self._index
        flat = rng.integers(0, self._num_steps, size=n)
        which = np.searchsorted(cum, flat, side="right")
        items = []
        for t_i, f in zip(which.tolist(), flat.tolist()):
            traj = trajs[t_i]
            step_index = f - (int(cum[t_i]) - len(traj.steps))
            step = traj.steps[step_index]
            items.append(
                {
                    "traj_id": traj.traj_id,
                    "step_index": step_index,
                    "prompt_ids": step.prompt_ids.tobytes(),
                    "response_ids": step.response_ids.tobytes(),
                    "logprobs": step.logprobs.tobytes(),
                    "action": step.action,
                    "reward": step.reward,
                    "return": traj.reward,
                    "success": traj.success,
                    "policy_version": step.policy_version,
                    "loss_weight": 1.0,
                }
            )
        self._samples += n
        return items

    def get(self, traj_id: str) -> Trajectory | None:
        return self._trajs.get(traj_id)

    def traj_ids(self) -> list[str]:
        """Stored traj_ids, oldest first."""
        return list(self._trajs)

    def stats(self) -> dict[str, Any]:
        """A fresh dict (safe to hand to another thread). Counters are totals since creation."""
        return {
            "size_trajectories": len(self._trajs),
            "size_steps": self._num_steps,
            "capacity": self.capacity,
            "inserts": self._inserts,
            "stored": self._stored,
            "stored_steps": self._stored_steps,
            "duplicates": self._duplicates,
            "filtered": dict(self._filtered),
            "rejected": dict(self._rejected),
            "samples": self._samples,
            "evicted": self._evicted,
        }
