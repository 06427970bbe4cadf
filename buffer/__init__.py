"""Replay buffer room: wire format, replay shards, their durability, ZMQ server and clients.

Sub-rooms, one concept per module:
- wire/: schema (wire format v1: types, encode) and decode (the validating decode every frame
  passes). Imports nothing else of ours.
- core/: the replay in memory. config (ReplayConfig, a shard's knobs; BufferConfig, the
  launcher's view with `shards` and `max_restarts`), storage (FIFO trajectories and step slots),
  sumtree, sampler (priority^α × recency, IS weights), recency, filters, limiter (samples per
  insert), groups (GRPO), items (sample maps), meters, shard_state (ShardState: the parts, how a
  trajectory is stored, the public methods a restore goes through) and shard (ReplayShard: the
  insert, sample and durability paths around that state).
- durability/: segment_log + log_writer (the fsync'd log), snapshot, persistence (a shard's
  records and snapshot schedule) and restore (a restarted or resumed shard's rebuild, through
  the shard's public restore methods only; it imports no shard).
- net/: protocol + server (ShardServer, a ROUTER thread), zmqio (multipart I/O on the hot paths),
  dealer (the clients' DEALER base), insert_client (InsertClient), sample_client (SampleClient),
  sharded_clients (clients over S shards).
- at the top: routing (which shard a trajectory goes to, by group), shard_actor (ShardActor, the
  Ray host of one shard and its server), ray_restart (whether Ray restarted this actor);
  `python -m buffer` (__main__) runs a standalone shard process.

Importing `buffer` loads only the schema and its decoder (numpy, msgpack, msgspec); import the
modules for the rest. Never imports torch, nor `actors`, `learner` or `weights`.
"""

from buffer.wire.decode import decode
from buffer.wire.schema import SCHEMA_VERSION, Step, Trajectory, WireError, encode

__all__ = ["SCHEMA_VERSION", "Step", "Trajectory", "WireError", "decode", "encode"]
