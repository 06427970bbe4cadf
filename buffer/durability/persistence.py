"""Durability of one shard: what goes into its log, when it snapshots, what a restart replays.

Log records (buffer/durability/segment_log.py framing), by their first byte:
  b"I" + <float64 LE initial priority of its steps> + <stored trajectory frame, as received
         unless a filter changed it>  (written without copying the frame)
  b"M" + msgpack {"kind": "pri", "ids": [traj_id, …], "steps": <int32 LE>, "prio": <float64 LE>}
  b"M" + msgpack {"kind": "ver", "v": <newest policy version>}
  b"M" + msgpack {"kind": "smp", "samples": <steps sampled, total>, "limiter": <the rate limiter's
         sample count, total, or nil>}  (one per sample request, after it was drawn)
Restore yields every record as a map: {"kind": "ins", "frame", "prio"} for b"I" records.
A snapshot covering segments 1..N plus the records of segments > N rebuild the shard: the
snapshot's trajectories with their priorities in FIFO order, then the log replayed through the
same insert path (filters already applied; eviction repeats itself because it is FIFO).

Protocol with the shard server: records are queued to the log writer thread
(buffer/durability/log_writer.py) while a batch of requests is handled; the replies are sent once the writer
has written and fsync'd past the batch (group commit). So an acknowledged insert or priority
update survives kill -9 (and, with fsync on, a machine crash).

Not guaranteed:
- Sample counts are logged (the reply to a sample waits for that record, like an insert's ack),
  so the rate limiter comes back with every sample it allowed; sampling meters (rates, staleness)
  do not. Sample keys handed out before a restart are stale after it.
- Filtered, rejected and duplicate inserts leave no record (their counters restart from the
  snapshot's values).
- A single directory belongs to a single shard process: nothing locks it against a second one.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from buffer.durability.log_writer import LogWriter
from buffer.durability.segment_log import SegmentLog, list_segments
from buffer.durability.snapshot import Snapshotter, load_latest, snapshots

_PRIO = struct.Struct("<d")
INT32 = np.dtype("<i4")
F64 = np.dtype("<f8")


def _pack(m: dict[str, Any]) -> bytes:
    return msgpack.packb(m, use_bin_type=True)


class Durability:
    def __init__(
        self,
        directory: str | Path,
        *,
        segment_bytes: int = 64 << 20,
        fsync: bool = True,
        snapshot_every_s: float | None = 60.0,
        snapshot_every_inserts: int | None = None,
    ):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._restore_from = self._plan_restore()
        self.log = SegmentLog(self.directory, segment_bytes=segment_bytes, fsync=fsync)
        self.writer = LogWriter(self.log)
        self.snapshotter = Snapshotter(self.directory, on_done=self.log.delete_through, fsync=fsync)
        self.snapshot_every_s = snapshot_every_s
        self.snapshot_every_inserts = snapshot_every_inserts
        self._last_snapshot = time.monotonic()
        self._inserts_since = 0
        self.snapshots_started = 0

    # --- restore ---

    def _plan_restore(self) -> tuple[dict | None, list, list[int]]:
        loaded = load_latest(self.directory)
        covers = loaded[0]["covers"] if loaded else 0
        segs = [s for s in list_segments(self.directory) if s > covers]
        header, items = loaded if loaded else (None, [])
        return header, items, segs

    def restore(self) -> tuple[dict[str, Any] | None, list[tuple[bytes, np.ndarray]], Iterator[dict[str, Any]]]:
        """(snapshot header or None, snapshot items, log records after it). Call once, first."""
        header, items, segs = self._restore_from
        self._restore_from = (None, [], [])

        def records() -> Iterator[dict[str, Any]]:
            for seg in segs:
                for payload in self.log.read_segment(seg):
                    if payload[:1] == b"I":
                        yield {"kind": "ins", "prio": _PRIO.unpack_from(payload, 1)[0], "frame": payload[1 + _PRIO.size :]}
                    else:
                        yield msgpack.unpackb(payload[1:], raw=False)

        return header, items, records()

    # --- logging ---

    def log_insert(self, frame: bytes, priority: float) -> None:
        self.writer.append(b"I" + _PRIO.pack(float(priority)), frame)
        self._inserts_since += 1

    def log_priorities(self, traj_ids: list[str], steps: np.ndarray, priorities: np.ndarray) -> None:
        rec = {
            "kind": "pri",
            "ids": traj_ids,
            "steps": np.asarray(steps, INT32).tobytes(),
            "prio": np.asarray(priorities, F64).tobytes(),
        }
        self.writer.append(b"M" + _pack(rec))

    def log_samples(self, samples: int, limiter_samples: int | None) -> None:
        self.writer.append(b"M" + _pack({"kind": "smp", "samples": int(samples), "limiter": limiter_samples}))

    def log_version(self, version: int) -> None:
        self.writer.append(b"M" + _pack({"kind": "ver", "v": int(version)}))

    def commit(self) -> None:
        """Wait until every record appended so far is durable (before acknowledging them)."""
        self.writer.wait_durable()

    # --- snapshots ---

    def snapshot_due(self) -> bool:
        if self.snapshotter.running:
            return False
        if self.snapshot_every_inserts is not None and self._inserts_since >= self.snapshot_every_inserts:
            return True
        return (
            self.snapshot_every_s is not None
            and self._inserts_since > 0
            and time.monotonic() - self._last_snapshot >= self.snapshot_every_s
        )

    def start_snapshot(self, header: dict[str, Any], records: list, prios: np.ndarray) -> bool:
        """Close the current segment and write a snapshot of this view in the background.
        Call with the shard's state frozen (under its lock) so the view matches the log cut."""
        if self.snapshotter.running:
            return False
        covers = self.writer.rotate()  # a Future: the segment closed where this view was taken
        self._last_snapshot = time.monotonic()
        self._inserts_since = 0
        self.snapshots_started += 1
        return self.snapshotter.start(covers, header, records, prios)

    def stats(self) -> dict[str, Any]:
        return {
            "dir": str(self.directory),
            "segment": self.log.current,
            "log_records": self.log.appended,
            "log_syncs": self.log.syncs,
            "snapshots": self.snapshotter.completed,
            "snapshot_running": self.snapshotter.running,
            "snapshot_last_s": self.snapshotter.last_duration_s,
            "snapshot_error": self.snapshotter.last_error,
            "snapshot_files": snapshots(self.directory),
        }

    def close(self, wait_s: float = 30.0) -> None:
        self.writer.close()
        self.snapshotter.wait(wait_s)
