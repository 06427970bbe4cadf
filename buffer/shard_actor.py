"""ShardActor: one replay shard as a long-lived process, for Ray to host.

The launcher wraps it: `ray.remote(ShardActor).options(name="shard-0", ...)` in namespace
`flywheel`. Ray is the control plane only (address, stats, snapshot, stop); trajectories, samples
and priority updates go over the ZMQ server this actor starts in a background thread.

`config` is the shard's typed ReplayConfig (buffer/core/config.py; the launcher passes
`BufferConfig.replay()` of `configs/buffer/*.yaml`). With `config.data_dir` set, the shard keeps its
log and snapshots in `<data_dir>/shard-<shard_id>` and a restarted actor restores from there;
`restore_from` (a file `export_snapshot` wrote, e.g. into a learner snapshot; or with `route`, the
files of a replay that had another number of shards) seeds a shard whose directory holds nothing,
or that has none.

`host` None binds the node's own address (Ray's node IP), never 0.0.0.0; `port` 0 picks a free
one there. A restarted actor then binds a new port, possibly on another node: clients find it
again through `address()` (buffer/net/directory.py) and resend what was unanswered.

Not guaranteed: the same address after a restart unless `host` and `port` are fixed.
`export_snapshot` writes on the shard's node: on a multi-node cluster the path must be on storage
shared with the node that restores it (as DeepSpeed's checkpoints need).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from buffer.core.config import ReplayConfig
from buffer.core.shard import ReplayShard
from buffer.durability.snapshot import export_snapshot
from buffer.net.server import ShardServer
from buffer.ray_restart import node_address, restarted_by_ray


class ShardActor:
    def __init__(
        self,
        shard_id: int,
        host: str | None,
        port: int,
        config: ReplayConfig,
        *,
        restore_from: str | list[str] | None = None,
        route: tuple[int, int] | None = None,
    ):
        """`host` None: this node's address; `port` 0: a free one (a restarted actor binds another)."""
        self.shard_id = shard_id
        if restore_from is not None and restarted_by_ray():
            # The resume's file is older than anything this shard served since: its data_dir log
            # (if any) has all of that; without one a restarted shard comes back empty.
            restore_from = None
        if config.data_dir:
            config = dataclasses.replace(config, data_dir=os.path.join(str(config.data_dir), f"shard-{shard_id}"))
        self._shard = ReplayShard(config=config, restore_from=restore_from, route=route)
        host = host or node_address()
        self._server = ShardServer(self._shard, host=host, port=port).start()

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
