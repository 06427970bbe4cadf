"""ReplayShard: one replay shard without networking, composed of small parts (their state and
how a trajectory is stored: ShardState, buffer/core/shard_state.py).

  decode (schema) → duplicate check → filters → staleness gate → rate limiter → log (persistence)
  → storage (FIFO, slots) → sampler (sum trees: priority^α × recency) → groups (GRPO)

Defaults (no config) give the thin shard: uniform sampling over stored steps, FIFO eviction of
whole trajectories, optional success-only filter, everything in memory.

Not guaranteed:
- Thread safety: callers serialize access (ShardServer holds a lock around every call).
- Idempotence on traj_id holds only while the first copy is stored: once evicted, the same
  traj_id is stored again. A duplicate of a filtered trajectory is filtered (and counted) again.
- With `data_dir`, an insert is durable once `commit()` returned (`insert(sync=True)`, the
  default, commits at once; the server inserts with sync=False and replies once the log writer
  has made the batch durable). Without `data_dir` nothing survives the process.
- `sample()` items keep the thin shard's keys (loss_weight is the importance weight, 1.0 by
  default); keys, probabilities and priorities travel beside them on the returned SampleItems.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from buffer.core.config import BufferConfig, ReplayConfig
from buffer.core.filters import SUCCESS_ONLY, Filters
from buffer.core.items import SampleItems, group_item, step_item
from buffer.core.shard_state import ShardState
from buffer.durability.persistence import Durability
from buffer.durability.restore import restore, restore_files
from buffer.wire.decode import decode
from buffer.wire.schema import WireError, encode

STALE = "stale"


def _finite(x: float) -> float | None:
    return x if np.isfinite(x) else None


def _reply(status: str, traj_id: str | None, filt: str | None, error: str | None, detail: str | None, seq: int) -> dict[str, Any]:
    return {"status": status, "traj_id": traj_id, "filter": filt, "error": error, "detail": detail, "seq": seq}


__all__ = ["STALE", "SUCCESS_ONLY", "ReplayShard", "SampleItems"]


class ReplayShard(ShardState):
    def __init__(
        self,
        capacity: int | None = None,
        success_only: bool | None = None,
        max_frame_bytes: int | None = None,
        config: ReplayConfig | dict[str, Any] | None = None,
        restore_from: str | Path | list[str | Path] | None = None,
        route: tuple[int, int] | None = None,
    ):
        """Explicit capacity / success_only / max_frame_bytes override the same keys of config.
        `restore_from`: what to start from when the shard's own directory holds nothing: its own
        snapshot file (a learner snapshot's copy of this shard), or with `route` = (this shard's
        index, the number of shards) the files of a replay that had another number of shards
        (only what routes here is kept). With a data_dir, that state is made durable there (a
        snapshot, waited for) before the shard serves."""
        if isinstance(config, BufferConfig):
            config = config.replay()
        cfg = config if isinstance(config, ReplayConfig) else ReplayConfig.from_dict(config)
        explicit = {"capacity": capacity, "success_only": success_only, "max_frame_bytes": max_frame_bytes}
        cfg = ReplayConfig.from_dict(cfg.to_dict(), **{k: v for k, v in explicit.items() if v is not None})
        super().__init__(cfg)
        self.filters = Filters(cfg.success_only, cfg.same_screenshot, cfg.min_token_length, cfg.min_steps, cfg.drop_empty)
        self.durability: Durability | None = None
        self._last_capture_ms: float | None = None
        self.restored_from: str | None = None  # "log" (its own directory), "snapshot" (restore_from)
        if cfg.data_dir is not None:
            self.durability = Durability(
                cfg.data_dir,
                segment_bytes=cfg.segment_bytes,
                fsync=cfg.fsync,
                snapshot_every_s=cfg.snapshot_every_s,
                snapshot_every_inserts=cfg.snapshot_every_inserts,
            )
            if restore(self, self.durability):
                self.restored_from = "log"
        if restore_from is not None and self.restored_from is None:
            restore_files(self, restore_from, route)
            self.restored_from = "snapshot"
            if self.durability is not None:
                self._persist_restored()

    # --- insert ---

    def insert(self, frame: bytes, *, sync: bool = True) -> dict[str, Any]:
        """Decode, filter and store one frame. Returns the insert reply map: status "stored",
        "filtered", "error" (with a named error) or "retry" (rate limited; nothing counted).
        `seq` is this shard's running count of insert requests, this one included."""
        c = self.counters
        try:
            traj = decode(frame, self.max_frame_bytes)
        except WireError as err:
            c["inserts"] += 1
            self._rejected[err.code] += 1
            return _reply("error", err.traj_id, None, err.code, str(err), c["inserts"])
        reply: dict[str, Any] = {"status": "error", "traj_id": traj.traj_id, "filter": None, "error": None, "detail": None}
        if traj.traj_id in self.store:
            c["inserts"] += 1
            c["duplicates"] += 1
            reply.update(status="stored", detail="duplicate", seq=c["inserts"])
            return reply
        result = self.filters.apply(traj)
        reason = result.reason
        if (
            reason is None
            and self.recency.max_staleness is not None
            and self.recency.is_stale(max(s.policy_version for s in result.traj.steps), self.policy_version)
        ):
            reason = STALE
        if reason is None and self.limiter is not None:
            k = len(result.traj.steps)
            if not self.limiter.can_insert(k) and not self.limiter.must_force(k):
                c["blocked_inserts"] += 1
                reply.update(status="retry", detail="rate_limited", seq=c["inserts"])
                return reply
        c["inserts"] += 1
        reply["seq"] = c["inserts"]
        if result.dropped_steps:
            self._filtered_steps.update(result.dropped_steps)
        if reason is not None:
            self._filtered[reason] += 1
            reply.update(status="filtered", filter=reason)
            return reply
        stored = result.traj
        priority = self.sampler.default_priority()
        if self.durability is not None:
            self.durability.log_insert(frame if stored is traj else encode(stored), priority)
            if sync:
                self.durability.commit()
        self._store(stored, priority)
        reply["status"] = "stored"
        return reply

    def commit(self) -> None:
        """Make every insert and priority update so far durable (no-op without data_dir)."""
        if self.durability is not None:
            self.durability.commit()

    # --- sampling ---

    def set_policy_version(self, version: int) -> None:
        """Tell the shard the learner's newest policy version V (it never moves back)."""
        if version > self.sampler.newest:
            self.sampler.set_newest(version)
            if self.durability is not None:
                self.durability.log_version(version)

    def can_sample(self, n: int) -> bool:
        return self.limiter is None or self.limiter.can_sample(n)

    def sample(self, n: int, rng: np.random.Generator) -> SampleItems:
        """n steps drawn with probability ∝ priority^α × recency (uniform by default), with
        replacement. Empty with status "empty" when nothing is drawable, "retry" when the rate
        limiter says wait. Items are the contract's sample maps (arrays as little-endian bytes)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        out = SampleItems()
        if not self.can_sample(n):
            self.counters["blocked_samples"] += 1
            out.status = "retry"
            return out
        slots, probs, weights = self.sampler.sample(n, rng)
        if len(slots) == 0:
            out.status = "empty"
            return out
        steps_idx = self.store.step_indices(slots).tolist()
        for slot, si, w in zip(slots.tolist(), steps_idx, weights.tolist()):
            out.append(step_item(self.store.record_of(slot).traj, si, w))
        out.keys, out.probabilities, out.weights = self.store.keys(slots), probs, weights
        out.priorities = self.sampler.priorities(slots)
        self._after_sample(n, self.sampler.versions(slots))
        return out

    def _after_sample(self, n_steps: int, versions: np.ndarray) -> None:
        if self.limiter is not None:
            self.limiter.on_sample(n_steps)
        self.counters["samples"] += n_steps
        if self.durability is not None:  # the limiter's side of the ratio must survive a kill -9
            self.durability.log_samples(self.counters["samples"], self.limiter.samples if self.limiter is not None else None)
        self._sample_rate.add(n_steps)
        self._staleness.add_batch(self.policy_version - versions)

    def sample_groups(self, n: int, rng: np.random.Generator) -> tuple[str, list[dict[str, Any]]]:
        """(status, groups): n complete groups drawn ∝ their leaf (buffer/core/groups.py), each
        {"group_id", "frames" (wire frames of its trajectories), "keys" (int64 LE bytes per
        trajectory, one key per step), "probability", "weight"}."""
        if self.groups is None:
            raise ValueError("group sampling is off (set group_size)")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        g_idx, probs, weights = self.groups.sample(n, rng, self.sampler, self.config.beta)
        if len(g_idx) == 0:
            return "empty", []
        members = [self.groups.members(g) for g in g_idx.tolist()]
        n_steps = sum(len(r.slots) for ms in members for r in ms)
        if not self.can_sample(n_steps):
            self.counters["blocked_samples"] += 1
            return "retry", []
        out = [
            group_item(self.groups.group_id(g), ms, [self.store.keys(r.slots) for r in ms], p, w)
            for g, ms, p, w in zip(g_idx.tolist(), members, probs.tolist(), weights.tolist())
        ]
        self._after_sample(n_steps, np.concatenate([self.sampler.versions(r.slots) for ms in members for r in ms]))
        return "ok", out

    # --- priorities ---

    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray, *, sync: bool = True) -> dict[str, Any]:
        """Set new priorities by sample key. Keys of evicted steps are skipped and counted."""
        keys = np.asarray(keys, dtype=np.int64)
        priorities = np.asarray(priorities, dtype=np.float64)
        if keys.shape != priorities.shape or keys.ndim != 1:
            raise ValueError(f"keys and priorities must be 1-D of one length, got {keys.shape}, {priorities.shape}")
        if not np.isfinite(priorities).all() or (priorities < 0).any():
            raise ValueError("priorities must be finite and >= 0")
        slots, valid = self.store.resolve(keys)
        slots, priorities = slots[valid], priorities[valid]
        stale = int((~valid).sum())
        self.counters["priority_updates"] += len(slots)
        self.counters["stale_keys"] += stale
        if len(slots):
            if self.durability is not None:
                ids = [self.store.record_of(s).traj.traj_id for s in slots.tolist()]
                self.durability.log_priorities(ids, self.store.step_indices(slots), priorities)
                if sync:
                    self.durability.commit()
            self.sampler.update(slots, priorities)
            if self.groups is not None:
                self.groups.touch_slots(slots)
        return {"status": "ok", "updated": len(slots), "stale": stale}

    # --- stats ---

    def info(self) -> dict[str, Any]:
        """What a sharded sampling client needs to split a batch across shards."""
        return {
            "mass": self.sampler.mass(),
            "min_a": _finite(self.sampler.min_a()),
            "size_steps": self.num_steps,
            "policy_version": self.policy_version,
            "gamma": self.recency.gamma if self.recency.exponential else None,
            "group_mass": self.groups.mass(self.sampler) if self.groups is not None else None,
            "group_min_a": _finite(self.groups.min_a(self.sampler)) if self.groups is not None else None,
        }

    def stats(self) -> dict[str, Any]:
        """A fresh dict (safe to hand to another thread). Counters are totals since creation
        (or since the snapshot a restart restored)."""
        c = self.counters
        stats = {
            "size_trajectories": len(self.store),
            "size_steps": self.num_steps,
            "capacity": self.capacity,
            "filtered": dict(self._filtered),
            "filtered_steps": dict(self._filtered_steps),
            "rejected": dict(self._rejected),
            "inserts_per_s": self._insert_rate.rate(),
            "samples_per_s": self._sample_rate.rate(),
            "mean_staleness": self._staleness.mean,
            "last_staleness": self._staleness.last,
            "priority_mass": self.sampler.mass(),
            "policy_version": self.policy_version,
            "sampler_rebuilds": self.sampler.rebuilds,
        }
        for key in ("inserts", "stored", "stored_steps", "duplicates", "samples", "evicted"):
            stats[key] = c[key]
        for key in ("blocked_inserts", "blocked_samples", "priority_updates", "stale_keys"):
            stats[key] = c[key]
        if self.limiter is not None:
            stats["limiter"] = self.limiter.state()
        if self.groups is not None:
            stats["groups"] = len(self.groups)
            stats["groups_complete"] = self.groups.num_complete
        if self.durability is not None:
            stats["durability"] = dict(
                self.durability.stats(),
                snapshot_capture_ms_last=self._last_capture_ms,
                snapshot_capture_ms_max=c["snapshot_capture_us_max"] / 1000,
            )
        stats["restored_from"] = self.restored_from
        stats["restored_trajectories"] = c["restored_trajectories"]
        return stats

    # --- durability ---

    def maybe_snapshot(self, force: bool = False) -> bool:
        """Start a background snapshot when one is due (or `force`). Call under the lock."""
        d = self.durability
        if d is None or not (force or d.snapshot_due()):
            return False
        t0 = time.perf_counter()
        started = d.start_snapshot(*self.snapshot_view())
        self._captured(t0)
        return started

    def snapshot_view(self) -> tuple[dict[str, Any], list, np.ndarray]:
        """(header, stored records, a copy of the priorities by slot): what a snapshot writes,
        safe to write from another thread once taken. Call under the lock."""
        return self.snapshot_header(), self.store.records(), self.sampler.snapshot_priorities()

    def export_view(self) -> tuple[dict[str, Any], list, np.ndarray]:
        """snapshot_view() for a snapshot outside the log, with its capture time in the stats."""
        t0 = time.perf_counter()
        view = self.snapshot_view()
        self._captured(t0)
        return view

    def _captured(self, t0: float) -> None:
        ms = 1000 * (time.perf_counter() - t0)  # how long the view capture held the serving thread
        self.counters["snapshot_capture_us_max"] = max(self.counters["snapshot_capture_us_max"], int(1000 * ms))
        self._last_capture_ms = ms

    def _persist_restored(self) -> None:
        """Write what restore_files brought into this shard's (empty) directory before serving:
        until then a restart would find nothing there of it."""
        self.maybe_snapshot(force=True)
        snapshotter = self.durability.snapshotter
        snapshotter.wait()
        if snapshotter.last_error is not None:
            raise RuntimeError(f"could not persist the restored replay: {snapshotter.last_error}")

    def close(self) -> None:
        if self.durability is not None:
            self.durability.close()
