"""ShardActor: one replay shard as a long-lived process, for Ray to host.

The launcher wraps it: `ray.remote(ShardActor).options(name="flywheel:shard-0", ...)`. Ray is
the control plane only (address, stats, stop); trajectories and samples go over the ZMQ server
this actor starts in a background thread.

Not guaranteed: nothing survives a restart yet (no persistence), and a restarted actor binds a
new port unless `port` is fixed, so callers must ask `address()` again after a restart.
"""

from __future__ import annotations

from typing import Any

from buffer.schema import DEFAULT_MAX_FRAME_BYTES
from buffer.server import ShardServer
from buffer.shard import ReplayShard


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
    ):
        self.shard_id = shard_id
        self._shard = ReplayShard(capacity, success_only=success_only, max_frame_bytes=max_frame_bytes)
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

    def stop(self) -> None:
        """Stop the ZMQ server (the Ray actor itself stays until killed). Idempotent."""
        self._server.stop()
