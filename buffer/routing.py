"""Which shard a trajectory belongs to: crc32(key) mod S, where the key is its group_id when it
has one, else its traj_id. Every writer (the sharded insert client, the rollout actors) and a
resume onto another number of shards route by this one rule, so a GRPO group lands on one shard
and a resent insert reaches the shard that may already hold it.

Not guaranteed: stability across a change of S (most keys move to another shard).
"""

from __future__ import annotations

import zlib


def shard_for(key: str, n_shards: int) -> int:
    return zlib.crc32(key.encode()) % n_shards


def route_key(traj_id: str, group_id: str | None) -> str:
    """What a trajectory is routed by: its group_id when it has one, else its traj_id."""
    return group_id or traj_id
