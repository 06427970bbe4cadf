"""Snapshots: a compacted image of one shard, written off the serving thread, atomically renamed.

File `snapshot-<N>.snap` covers log segments 1..N: it holds a header record (the shard's counters
and sampler state), one record per stored trajectory (its wire frame and the raw priority of each
step) in FIFO order, and an end record with the count; same record framing as the log. It is
written as `snapshot-<N>.tmp`, fsync'd, renamed into place and the directory fsync'd, so a crash
leaves either the previous snapshot or the new one, never half of one.

The serving thread only captures a view (the list of stored records and a copy of the priority
array: O(stored trajectories) pointer copies plus one memcpy); encoding and writing happen in a
background thread. Trajectories are immutable once stored, which is what makes the view safe.

Not guaranteed:
- The background thread shares the GIL with the serving thread: ingest slows down while a
  snapshot is written (it does not stop; each pause is bounded by the interpreter's switch
  interval, 5 ms by default).
- One snapshot at a time: a request while one is being written is skipped (returns False).
- A snapshot file that passes its checks but was corrupted later is not detected beyond the
  per-record CRC; restore then falls back to an older snapshot if one is still on disk.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from buffer.durability.segment_log import frame_record, fsync_dir, read_records
from buffer.wire.schema import Trajectory, encode

log = logging.getLogger(__name__)

_SNAP = re.compile(r"^snapshot-(\d{8})\.snap$")
F64 = np.dtype("<f8")
SYNC_CHUNK = 1 << 20  # bytes of snapshot written between two fdatasyncs


def _pack(m: dict[str, Any]) -> bytes:
    return msgpack.packb(m, use_bin_type=True)


def snapshots(directory: Path) -> list[int]:
    """Segment numbers covered by the snapshot files present, ascending."""
    out = [int(m.group(1)) for p in directory.iterdir() if (m := _SNAP.match(p.name))]
    return sorted(out)


def snapshot_path(directory: Path, covers: int) -> Path:
    return directory / f"snapshot-{covers:08d}.snap"


def write_snapshot(
    final: Path,
    covers: int,
    header: dict[str, Any],
    items: Iterable[tuple[Trajectory, np.ndarray]],
    fsync: bool = True,
) -> Path:
    """Write `final` through a temporary file beside it; `covers` = 0 for a snapshot that is not
    part of a log (a learner snapshot's copy of the replay)."""
    tmp = final.with_suffix(".tmp")
    count, unsynced = 0, 0
    with open(tmp, "wb", buffering=1 << 20) as f:
        f.write(frame_record(_pack({"kind": "header", "covers": covers, **header})))
        for traj, prios in items:
            rec = frame_record(_pack({"kind": "traj", "frame": encode(traj), "prio": np.asarray(prios, F64).tobytes()}))
            f.write(rec)
            count += 1
            unsynced += len(rec)
            if fsync and unsynced >= SYNC_CHUNK:
                # Flush as we go: one huge fsync at the end would hold the disk (and every
                # log fsync queued behind it) for as long as the whole file takes to write.
                f.flush()
                os.fdatasync(f.fileno())
                unsynced = 0
        f.write(frame_record(_pack({"kind": "end", "count": count})))
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, final)
    if fsync:
        fsync_dir(final.parent)
    return final


def export_snapshot(path: Path, view: tuple[dict[str, Any], Sequence[Any], np.ndarray], fsync: bool = True) -> Path:
    """Write a shard's `view` (ReplayShard.export_view) to the file `path`: a snapshot outside
    any log, which `buffer.durability.restore.restore_file` rebuilds a shard from."""
    header, records, prios = view
    return write_snapshot(path, 0, header, ((r.traj, prios[r.slots]) for r in records), fsync)


def load_snapshot(path: Path) -> tuple[dict[str, Any], list[tuple[bytes, np.ndarray]]] | None:
    """(header, [(frame, step priorities)]) or None when the file is incomplete or corrupt."""
    header, items, end = None, [], None
    for payload in read_records(path):
        rec = msgpack.unpackb(payload, raw=False)
        kind = rec.get("kind")
        if kind == "header":
            header = rec
        elif kind == "traj":
            items.append((rec["frame"], np.frombuffer(rec["prio"], F64)))
        elif kind == "end":
            end = rec
    if header is None or end is None or end.get("count") != len(items):
        log.warning("%s: incomplete snapshot (ignored)", path)
        return None
    return header, items


def load_latest(directory: Path) -> tuple[dict[str, Any], list[tuple[bytes, np.ndarray]]] | None:
    for covers in reversed(snapshots(directory)):
        loaded = load_snapshot(snapshot_path(directory, covers))
        if loaded is not None:
            return loaded
    return None


def remove_older(directory: Path, keep: int) -> None:
    """Delete snapshots covering less than `keep`, and stray temporary files."""
    for p in directory.iterdir():
        m = _SNAP.match(p.name)
        if (m and int(m.group(1)) < keep) or p.suffix == ".tmp":
            p.unlink(missing_ok=True)


class Snapshotter:
    """Writes one snapshot at a time in a daemon thread, then calls `on_done(covers)`."""

    def __init__(self, directory: Path, on_done: Callable[[int], None], fsync: bool = True):
        self.directory = directory
        self.on_done = on_done
        self.fsync = fsync
        self._thread: threading.Thread | None = None
        self.completed = 0
        self.last_error: str | None = None
        self.last_duration_s: float | None = None
        self.last_covers: int | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, covers: int | Future, header: dict[str, Any], records: Sequence[Any], prios: np.ndarray) -> bool:
        """Write a snapshot of `records` (each with .traj and .slots) using priorities `prios`
        (a private copy indexed by slot), covering log segments <= `covers` (or the Future's
        result). False when one is still being written."""
        if self.running:
            return False
        self._thread = threading.Thread(
            target=self._run, args=(covers, header, records, prios), name="shard-snapshot", daemon=True
        )
        self._thread.start()
        return True

    def _run(self, covers: int | Future, header: dict[str, Any], records: Sequence[Any], prios: np.ndarray) -> None:
        t0 = time.perf_counter()
        try:
            if isinstance(covers, Future):
                covers = covers.result(timeout=600)
            items = ((r.traj, prios[r.slots]) for r in records)
            write_snapshot(snapshot_path(self.directory, covers), covers, header, items, fsync=self.fsync)
            remove_older(self.directory, covers)
            self.on_done(covers)
            self.completed += 1
            self.last_covers = covers
            self.last_error = None
        except Exception as err:  # a failed snapshot must not take the shard down; the log still has it all
            log.exception("snapshot covering segment %d failed", covers)
            self.last_error = f"{type(err).__name__}: {err}"
        finally:
            self.last_duration_s = time.perf_counter() - t0

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for the snapshot being written; True when none is running afterwards."""
        if self._thread is not None:
            self._thread.join(timeout_s)
        return not self.running
