"""A shard's state across restarts: the header its snapshots carry, and the rebuild of a
restarted shard from its latest snapshot plus the log records written after it
(buffer/durability/persistence.py holds the record formats), or of a fresh shard from the snapshot files
that a learner snapshot carries (its own, or, after a change of shard count, every old shard's
trajectories that route to it).

Order of the rebuild: the snapshot's counters and sampler state, its trajectories stored silently
(its counters already count them), then the log replayed through the same insert path: inserts
("ins"), priority updates ("pri"), policy versions ("ver") and sample counts ("smp", cumulative
totals, so the last one wins).

Not guaranteed: meters (rates, staleness means) and the limiter's seen-diff extremes start afresh.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from buffer.core.meters import RateMeter
from buffer.durability.snapshot import load_snapshot
from buffer.routing import route_key, shard_for
from buffer.wire.decode import decode

if TYPE_CHECKING:
    from buffer.core.shard import ReplayShard

_RESTORE_MAX_FRAME = 1 << 40  # frames in our own log were checked once already


def snapshot_header(shard: ReplayShard) -> dict[str, Any]:
    return {
        "counters": dict(shard.counters),
        "filtered": dict(shard._filtered),
        "filtered_steps": dict(shard._filtered_steps),
        "rejected": dict(shard._rejected),
        "newest": shard.sampler.newest,
        "ref": shard.recency.ref,
        "max_priority": shard.sampler.max_priority,
        "limiter": shard.limiter.state() if shard.limiter is not None else None,
    }


def restore(shard: ReplayShard) -> bool:
    """Rebuild `shard` from its own directory; False when that held nothing (a first start)."""
    header, items, records = shard.durability.restore()
    found = header is not None
    if found:
        _restore_header(shard, header, items)
    for rec in records:
        found = True
        kind = rec.get("kind")
        if kind == "ins":
            traj = decode(rec["frame"], _RESTORE_MAX_FRAME)
            if traj.traj_id not in shard.store:
                shard.counters["inserts"] += 1
                shard._store(traj, rec["prio"])
        elif kind == "pri":
            steps = np.frombuffer(rec["steps"], "<i4")
            prios = np.frombuffer(rec["prio"], "<f8")
            for traj_id, step, p in zip(rec["ids"], steps.tolist(), prios.tolist()):
                record = shard.store.get(traj_id)
                if record is not None and step < len(record.slots):
                    shard.sampler.update(record.slots[step : step + 1], np.array([p]))
        elif kind == "ver":
            shard.sampler.set_newest(int(rec["v"]))
        elif kind == "smp":
            shard.counters["samples"] = int(rec["samples"])
            if shard.limiter is not None and rec.get("limiter") is not None:
                shard.limiter.samples = int(rec["limiter"])
    shard.counters["restored_trajectories"] = len(shard.store)
    shard._insert_rate = RateMeter()  # replayed inserts are not ingest
    return found


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


def restore_files(shard: ReplayShard, restore_from: str | Path | list[str | Path],
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


def restore_file(shard: ReplayShard, path: Path) -> None:
    """Rebuild an empty `shard` from the file this same shard wrote: all of its state."""
    header, items = _load_file(path)
    _restore_header(shard, header, items)
    shard.counters["restored_trajectories"] = len(shard.store)
    shard._insert_rate = RateMeter()


def restore_routed(shard: ReplayShard, paths: list[Path], index: int, n_shards: int) -> None:
    """Rebuild an empty `shard`, number `index` of `n_shards`, from the files of a replay that
    had another number of shards: the trajectories that route here (buffer/routing.py) with their
    priorities, oldest first across the files (FIFO by created_at); the newest version, recency
    reference and largest priority are the files' maxima. Counters and the rate limiter count
    what was restored: the old shards' samples are not divided among the new ones."""
    headers, kept = [], []
    for path in paths:
        header, items = _load_file(path)
        headers.append(header)
        for frame, prios in items:
            traj = decode(frame, _RESTORE_MAX_FRAME)
            if shard_for(route_key(traj.traj_id, traj.group_id), n_shards) == index:
                kept.append((traj, prios))
    shard.recency.ref = max(int(h.get("ref", 0)) for h in headers)
    shard.sampler.set_newest(max(int(h.get("newest", 0)) for h in headers))
    shard.sampler.max_priority = max(float(h.get("max_priority", 1.0)) for h in headers)
    for traj, prios in sorted(kept, key=lambda k: k[0].created_at):
        shard._store(traj, prios)
    shard.counters["restored_trajectories"] = len(shard.store)
    shard._insert_rate = RateMeter()


def _restore_header(shard: ReplayShard, header: dict[str, Any], items: list) -> None:
    shard.counters.update(header.get("counters", {}))
    shard._filtered.update(header.get("filtered", {}))
    shard._filtered_steps.update(header.get("filtered_steps", {}))
    shard._rejected.update(header.get("rejected", {}))
    shard.recency.ref = int(header.get("ref", 0))
    shard.sampler.set_newest(int(header.get("newest", 0)))
    shard.sampler.max_priority = float(header.get("max_priority", 1.0))
    saved = Counter(shard.counters)
    for frame, prios in items:
        shard._store(decode(frame, _RESTORE_MAX_FRAME), prios)
    shard.counters = saved
    if shard.limiter is not None:
        shard.limiter.restore(header.get("limiter") or {})
