"""ShardActor: one replay shard as a long-lived process, for Ray to host.

The launcher wraps it: `ray.remote(ShardActor).options(name="shard-0", ...)` in namespace
`flywheel`. Ray is
the control plane only (address, stats, snapshot, stop); trajectories, samples and priority
updates go over the ZMQ server this actor starts in a background thread.

`replay` is a ReplayConfig map (configs/buffer/*.yaml); the explicit capacity / success_only /
max_frame_bytes arguments override its keys. With `replay["data_dir"]` set, the shard keeps its
log and snapshots in `<data_dir>/shard-<shard_id>` and a restarted actor restores from there;
`restore_from` (a file `export_snapshot` wrote, e.g. into a learner snapshot; or with `route`, the
files of a replay that had another number of shards) seeds a shard whose directory holds nothing,
or that has none.

Not guaranteed: a restarted actor binds a new port unless `port` is fixed, so callers must ask
`address()` again after a restart (an InsertClient resends on reconnect only to the same address).
`export_snapshot` writes on the shard's node: on a multi-node cluster the path must be on storage
shared with the node that restores it (as DeepSpeed's checkpoints need).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from buffer.core.shard import ReplayShard
from buffer.durability.snapshot import export_snapshot
from buffer.net.server import ShardServer
from buffer.ray_restart import restarted_by_ray
from buffer.wire.schema import DEFAULT_MAX_FRAME_BYTES


class ShardActor:
    def __init__(
        self,
        shard_id: int,
        capacity: int,
        success_only: bool,
        host: str = "127.0.0.1",
        port: int = 0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        seed: int | None = None,
        replay: dict[str, Any] | None = None,
        restore_from: str | list[str] | None = None,
        route: tuple[int, int] | None = None,
    ):
        self.shard_id = shard_id
        if restore_from is not None and restarted_by_ray():
            # The resume's file is older than anything this shard served since: its data_dir log
            # (if any) has all of that; without one a restarted shard comes back empty.
            restore_from = None
        config = dict(replay or {})
        if config.get("data_dir"):
            config["data_dir"] = os.path.join(str(config["data_dir"]), f"shard-{shard_id}")
        self._shard = ReplayShard(capacity, success_only=success_only, max_frame_bytes=max_frame_bytes, config=config,
                                  restore_from=restore_from, route=route)
        self._server = ShardServer(self._shard, host=host, port=port, seed=seed).start()

    def address(self) -> str:
        """The ZMQ endpoint, e.g. "tcp://127.0.0.1:5555"."""
        return self._server.address

    def stats(self) -> dict[str, Any]:
        # The server thread mutates the shard; read it under the same lock.
        with self._server.lock:
            stats = self._shard.stats()
        stats["shard_id"] = self.shard_id
        stats["serving"] = self._server.running
        return stats

    def traj_ids(self) -> list[str]:
        with self._server.lock:
            return self._shard.traj_ids()

    def snapshot(self, wait_s: float | None = None) -> bool:
        """Start a snapshot now (False without data_dir or while one is being written); with
        wait_s, also wait that long for it to finish."""
        with self._server.lock:
            started = self._shard.maybe_snapshot(force=True)
        if started and wait_s is not None and self._shard.durability is not None:
            self._shard.durability.snapshotter.wait(wait_s)
        return started

    def export_snapshot(self, path: str) -> dict[str, Any]:
        """Write everything this shard holds to the snapshot file `path` (for a learner snapshot;
        a shard started with `restore_from=path` comes back to it). Ingest goes on meanwhile:
        only the view capture holds the serving thread. Returns what was written."""
        t0 = time.perf_counter()
        with self._server.lock:
            view = self._shard.export_view()
        final = export_snapshot(Path(path), view)
        return {"path": str(final), "trajectories": len(view[1]), "bytes": final.stat().st_size,
                "seconds": time.perf_counter() - t0}

    def stop(self) -> None:
        """Stop the ZMQ server and close the log (the Ray actor itself stays until killed).
        Idempotent."""
        self._server.stop()
        with self._server.lock:
            self._shard.close()
