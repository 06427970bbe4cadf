"""A shard's state across restarts: the rebuild of a restarted shard from its latest snapshot
plus the log records written after it
(buffer/durability/persistence.py holds the record formats), or of a fresh shard from the snapshot files
that a learner snapshot carries (its own, or, after a change of shard count, every old shard's
trajectories that route to it).

Order of the rebuild: the snapshot's counters and sampler state, its trajectories stored silently
(its counters already count them), then the log replayed through the same insert path: inserts
("ins"), priority updates ("pri"), policy versions ("ver") and sample counts ("smp", cumulative
totals, so the last one wins).

The rebuild goes through the shard's public restore methods only (`Restorable`, which
buffer/core/shard_state.py implements; none of them logs): this module imports no shard.

Not guaranteed: meters (rates, staleness means) and the limiter's seen-diff extremes start afresh.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from buffer.durability.persistence import Durability
from buffer.durability.snapshot import load_snapshot
from buffer.routing import route_key, shard_for
from buffer.wire.decode import decode
from buffer.wire.schema import Trajectory

_RESTORE_MAX_FRAME = 1 << 40  # frames in our own log were checked once already


class Restorable(Protocol):
    """What a rebuild needs of a shard (ReplayShard's restore methods, in ShardState)."""

    def __len__(self) -> int: ...

    def get(self, traj_id: str) -> Trajectory | None: ...

    def load_header(self, header: dict[str, Any], trajectories: Iterable[tuple[Trajectory, np.ndarray]] = ()) -> None: ...

    def store_restored(self, traj: Trajectory, priorities: float | np.ndarray, *, count_insert: bool = False) -> None: ...

    def restore_sampler(self, *, newest: int | None = None, ref: int | None = None,
                        max_priority: float | None = None) -> None: ...

    def restore_step_priorities(self, traj_ids: list[str], steps: list[int], priorities: list[float]) -> None: ...

    def restore_sample_counts(self, samples: int, limiter_samples: int | None) -> None: ...

    def finish_restore(self) -> None: ...


def restore(shard: Restorable, durability: Durability) -> bool:
    """Rebuild `shard` from its own directory (`durability`'s); False when that held nothing (a
    first start)."""
    header, items, records = durability.restore()
    found = header is not None
    if found:
        shard.load_header(header, _decoded(items))
    for rec in records:
        found = True
        kind = rec.get("kind")
        if kind == "ins":
            traj = decode(rec["frame"], _RESTORE_MAX_FRAME)
            if shard.get(traj.traj_id) is None:
                shard.store_restored(traj, rec["prio"], count_insert=True)
        elif kind == "pri":
            steps = np.frombuffer(rec["steps"], "<i4")
            prios = np.frombuffer(rec["prio"], "<f8")
            shard.restore_step_priorities(rec["ids"], steps.tolist(), prios.tolist())
        elif kind == "ver":
            shard.restore_sampler(newest=int(rec["v"]))
        elif kind == "smp":
            limiter = rec.get("limiter")
            shard.restore_sample_counts(int(rec["samples"]), int(limiter) if limiter is not None else None)
    shard.finish_restore()
    return found


def _decoded(items: list) -> Iterable[tuple[Trajectory, np.ndarray]]:
    for frame, prios in items:
        yield decode(frame, _RESTORE_MAX_FRAME), prios


def _load_file(path: Path) -> tuple[dict[str, Any], list]:
    """A snapshot file written outside a log (the replay a learner snapshot carries). A missing,
    truncated or corrupt one is an error: the learner snapshot holding it was complete, so a
    silently empty replay would hide the loss."""
    if not path.is_file():
        raise FileNotFoundError(f"replay snapshot {path} does not exist")
    loaded = load_snapshot(path)
    if loaded is None:
        raise ValueError(f"replay snapshot {path} is truncated or corrupt")
    return loaded


def restore_files(shard: Restorable, restore_from: str | Path | list[str | Path],
                  route: tuple[int, int] | None) -> None:
    """Rebuild an empty `shard` from its own snapshot file, or with `route` = (index, shards)
    from the files of a replay that had another number of shards."""
    files = [Path(restore_from)] if isinstance(restore_from, (str, Path)) else [Path(f) for f in restore_from]
    if route is not None:
        restore_routed(shard, files, *route)
    elif len(files) == 1:
        restore_file(shard, files[0])
    else:
        raise ValueError(f"{len(files)} replay snapshot files to restore from need a route (index, shards)")


def restore_file(shard: Restorable, path: Path) -> None:
    """Rebuild an empty `shard` from the file this same shard wrote: all of its state."""
    header, items = _load_file(path)
    shard.load_header(header, _decoded(items))
    shard.finish_restore()


def restore_routed(shard: Restorable, paths: list[Path], index: int, n_shards: int) -> None:
    """Rebuild an empty `shard`, number `index` of `n_shards`, from the files of a replay that
    had another number of shards: the trajectories that route here (buffer/routing.py) with their
    priorities, oldest first across the files (FIFO by created_at); the newest version, recency
    reference and largest priority are the files' maxima. Counters and the rate limiter count
    what was restored: the old shards' samples are not divided among the new ones."""
    headers, kept = [], []
    for path in paths:
        header, items = _load_file(path)
        headers.append(header)
        for traj, prios in _decoded(items):
            if shard_for(route_key(traj.traj_id, traj.group_id), n_shards) == index:
                kept.append((traj, prios))
    shard.restore_sampler(newest=max(int(h.get("newest", 0)) for h in headers),
                          ref=max(int(h.get("ref", 0)) for h in headers),
                          max_priority=max(float(h.get("max_priority", 1.0)) for h in headers))
    for traj, prios in sorted(kept, key=lambda k: k[0].created_at):
        shard.store_restored(traj, prios)
    shard.finish_restore()
